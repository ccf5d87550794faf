"""``[retention]``: safe defaults, and one line naming the key for a bad value."""

from __future__ import annotations

from pathlib import Path

import pytest

from bot.config import ConfigError, load_config
from payments.retention import RetentionSettings


def test_defaults_keep_the_audit_trail_two_years(tmp_path: Path) -> None:
    config = load_config(env={}, path=_toml(tmp_path, "[shop]\nname = 'Duka'\n"))
    assert config.retention == RetentionSettings(30, 90, 7, 730)


def test_days_are_read_from_the_file(tmp_path: Path) -> None:
    text = "[retention]\nquery_answers_days = 14\ncallback_bodies_days = 1825\n"
    config = load_config(env={}, path=_toml(tmp_path, text))
    assert config.retention == RetentionSettings(14, 90, 7, 1825)


@pytest.mark.parametrize(
    ("line", "key"),
    [
        ("query_answers_days = 0", "retention.query_answers_days"),
        ("sent_messages_days = 2.5", "retention.sent_messages_days"),
        ("inbound_ids_days = '7'", "retention.inbound_ids_days"),
        ("callback_bodies_days = true", "retention.callback_bodies_days"),
        ("forever = 1", "retention.forever"),
    ],
)
def test_a_bad_value_names_its_key(tmp_path: Path, line: str, key: str) -> None:
    with pytest.raises(ConfigError) as caught:
        load_config(env={}, path=_toml(tmp_path, f"[retention]\n{line}\n"))
    assert caught.value.key == key
    assert "\n" not in str(caught.value)


def _toml(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "config.toml"
    path.write_text(text)
    return path
