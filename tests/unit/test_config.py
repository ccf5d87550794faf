"""Configuration: defaults that run with no accounts, and one clear error per bad value."""

from __future__ import annotations

import io
import logging
from pathlib import Path

import pytest

from bot.config import ConfigError, load_config
from bot.http_logging import RedactTokens
from payments.settings import DarajaEnvironment

SECRET_URL = "https://shop.example.com/hooks/stk/Zk3p9qLm2VbX8rT5wYc7NdA4"
PRODUCTION = {
    "MPESA_ENVIRONMENT": "production",
    "MPESA_CONSUMER_KEY": "key",
    "MPESA_CONSUMER_SECRET": "secret",
    "MPESA_PASSKEY": "passkey",
    "MPESA_SHORTCODE": "600100",
    "MPESA_CALLBACK_URL": SECRET_URL,
}


def test_defaults_need_no_accounts(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.chdir(tmp_path)  # no config.toml here: embedded defaults only
    config = load_config(env={})
    assert config.daraja.environment is DarajaEnvironment.SIMULATOR
    assert config.database_url.startswith("sqlite+aiosqlite:///")
    assert "/hooks/stk/" in config.daraja.callback_url
    assert config.daraja.transaction_type == "CustomerPayBillOnline"


def test_production_settings_from_the_environment() -> None:
    config = load_config(env=PRODUCTION)
    assert config.daraja.base_url == "https://api.safaricom.co.ke"
    assert config.daraja.callback_path == "/hooks/stk/Zk3p9qLm2VbX8rT5wYc7NdA4"
    assert "secret" not in repr(config)  # secrets stay out of reprs and logs
    assert "Zk3p9" not in repr(config)


def test_till_number_switches_to_buy_goods() -> None:
    config = load_config(env={**PRODUCTION, "MPESA_TILL_NUMBER": "5123456"})
    assert config.daraja.transaction_type == "CustomerBuyGoodsOnline"
    assert (config.daraja.short_code, config.daraja.party_b) == ("600100", "5123456")


def test_base_url_override() -> None:
    config = load_config(env={**PRODUCTION, "MPESA_BASE_URL": "http://127.0.0.1:8090/"})
    assert config.daraja.base_url == "http://127.0.0.1:8090"


@pytest.mark.parametrize(
    ("env", "key", "fix"),
    [
        (
            {"MPESA_CALLBACK_URL": "http://shop.example.com/hooks/stk/Zk3p9qLm2VbX8rT5wYc7NdA4"},
            "MPESA_CALLBACK_URL",
            "https",
        ),
        (
            {"MPESA_CALLBACK_URL": "https://shop.example.com/mpesa/Zk3p9qLm2VbX8rT5wYc7NdA4"},
            "MPESA_CALLBACK_URL",
            "without that word",
        ),
        (
            {"MPESA_CALLBACK_URL": "https://shop.example.com/stk/query/Zk3p9qLm2VbX8rT5wYc7NdA4"},
            "MPESA_CALLBACK_URL",
            "without that word",
        ),
        (
            {"MPESA_CALLBACK_URL": "https://shop.example.com/hooks/stk/short"},
            "MPESA_CALLBACK_URL",
            "random characters",
        ),
        (
            {"MPESA_CALLBACK_URL": "https://shop.example.com/hooks/stk/Zk3p9q Lm2VbX8rT5wYc7NdA4"},
            "MPESA_CALLBACK_URL",
            "remove the spaces",
        ),
        ({"MPESA_CALLBACK_URL": "not a url"}, "MPESA_CALLBACK_URL", ""),
        ({"MPESA_CALLBACK_URL": ""}, "MPESA_CALLBACK_URL", "public https URL"),
        ({"MPESA_PASSKEY": ""}, "MPESA_PASSKEY", "export MPESA_PASSKEY"),
        ({"MPESA_CONSUMER_SECRET": " "}, "MPESA_CONSUMER_SECRET", "export"),
        ({"MPESA_ENVIRONMENT": "live"}, "MPESA_ENVIRONMENT", "sandbox, production or simulator"),
        ({"MPESA_SHORTCODE": "12ab"}, "MPESA_SHORTCODE", "Paybill"),
        ({"MPESA_TILL_NUMBER": "till-1"}, "MPESA_TILL_NUMBER", "digits"),
        ({"MPESA_BASE_URL": "ftp://x"}, "MPESA_BASE_URL", "full URL"),
        ({"DUKA_HTTP_PORT": "eighty"}, "DUKA_HTTP_PORT", "1 to 65535"),
        ({"DUKA_HTTP_PORT": "70000"}, "DUKA_HTTP_PORT", "1 to 65535"),
        ({"DUKA_DATABASE_URL": "mysql://x"}, "DUKA_DATABASE_URL", "postgresql+asyncpg"),
    ],
)
def test_a_bad_value_stops_start_up_naming_the_key_and_the_fix(
    env: dict[str, str], key: str, fix: str
) -> None:
    with pytest.raises(ConfigError) as caught:
        load_config(env={**PRODUCTION, **env})
    assert caught.value.key == key
    assert key in str(caught.value)
    assert fix in str(caught.value)


@pytest.mark.parametrize(
    ("toml", "key"),
    [
        ('[mpesa]\nconsumer_secret = "oops"\n', "mpesa.consumer_secret"),
        ('[mpesa]\ntransaction_desc = "Payment for your order"\n', "mpesa.transaction_desc"),
        ("[reconciliation]\nexpire_after_seconds = -5\n", "reconciliation.expire_after_seconds"),
        ("[reconciliation]\nquery_after_seconds = 300\n", "reconciliation.expire_after_seconds"),
        ("[shop]\nnmae = 'typo'\n", "shop.nmae"),
        ("[payments]\nx = 1\n", "payments"),
        ("[shop\n", "config.toml"),
    ],
)
def test_bad_config_file_values(tmp_path: Path, toml: str, key: str) -> None:
    path = tmp_path / "config.toml"
    path.write_text(toml)
    with pytest.raises(ConfigError) as caught:
        load_config(env={}, path=path)
    assert key in str(caught.value)


def test_secrets_in_the_file_point_to_the_environment(tmp_path: Path) -> None:
    path = tmp_path / "config.toml"
    path.write_text('[mpesa]\npasskey = "abc"\n')
    with pytest.raises(ConfigError, match="MPESA_PASSKEY"):
        load_config(env={}, path=path)


def test_named_config_file_must_exist(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="DUKA_CONFIG"):
        load_config(env={"DUKA_CONFIG": str(tmp_path / "absent.toml")})


def test_environment_overrides_the_file(tmp_path: Path) -> None:
    path = tmp_path / "config.toml"
    path.write_text("[http]\nport = 9000\n[mpesa]\nshort_code = '174379'\n")
    config = load_config(env={"DUKA_HTTP_PORT": "9100", "MPESA_SHORTCODE": "600999"}, path=path)
    assert (config.http_port, config.daraja.short_code) == (9100, "600999")


def test_bot_tokens_never_reach_the_log_output() -> None:
    """PTB's HTTP client logs request URLs, which carry the bot token."""
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.addFilter(RedactTokens())
    log = logging.getLogger("test.redaction")
    log.addHandler(handler)
    try:
        log.warning("POST %s failed", "http://127.0.0.1:1/bot123456:AAE-x_9/sendMessage")
    finally:
        log.removeHandler(handler)
    assert "123456:AAE-x_9" not in stream.getvalue()
    assert "/bot***/sendMessage" in stream.getvalue()
