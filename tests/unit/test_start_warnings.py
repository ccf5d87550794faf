"""What `duka serve` warns about at start: a shop that runs but cannot do its job."""

from __future__ import annotations

from pathlib import Path

from bot.config import load_config
from bot.startup import start_warnings
from tests.unit.test_config import PRODUCTION

CATALOG = '[[catalog.products]]\nsku = "unga"\nname = "Unga 2kg"\nprice = 250\n'


def test_production_with_a_sandbox_test_short_code_is_warned_about(tmp_path: Path) -> None:
    path = tmp_path / "config.toml"
    path.write_text(CATALOG)
    env = {**PRODUCTION, "MPESA_SHORTCODE": "600977", "TELEGRAM_BOT_TOKEN": "123:abc"}
    [warning] = start_warnings(load_config(env=env, path=path))
    assert warning.startswith("MPESA_ENVIRONMENT is production but MPESA_SHORTCODE 600977")


def test_a_shop_with_a_channel_a_catalog_and_its_own_short_code_has_no_warning(
    tmp_path: Path,
) -> None:
    path = tmp_path / "config.toml"
    path.write_text(CATALOG)
    env = {**PRODUCTION, "MPESA_SHORTCODE": "247247", "TELEGRAM_BOT_TOKEN": "123:abc"}
    assert start_warnings(load_config(env=env, path=path)) == []
