"""Configuration: defaults that run with no accounts, and one clear line per bad value."""

from __future__ import annotations

import io
import logging
import os
from pathlib import Path

import pytest

from bot.cli import main
from bot.config import ConfigError, ConfigErrors, load_config
from bot.http_logging import RedactTokens
from payments.settings import DarajaEnvironment
from storage.sealing import generate_key

# 29 different characters: about 141 bits by bot.config's estimate (128 needed).
SECRET = "Zk3p9qLm2VbX8rT5wYc7NdA4hG6jE"
SECRET_URL = f"https://shop.example.com/hooks/stk/{SECRET}"
DATA_KEY = generate_key()  # a test's own: the real one comes from the environment
PRODUCTION = {
    "MPESA_ENVIRONMENT": "production",
    "DUKA_DATA_KEY": DATA_KEY,
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
    assert config.daraja.callback_path == f"/hooks/stk/{SECRET}"
    assert "secret" not in repr(config)  # secrets stay out of reprs and logs
    assert "Zk3p9" not in repr(config)


def test_till_number_switches_to_buy_goods() -> None:
    config = load_config(env={**PRODUCTION, "MPESA_TILL_NUMBER": "5123456"})
    assert config.daraja.transaction_type == "CustomerBuyGoodsOnline"
    assert (config.daraja.short_code, config.daraja.party_b) == ("600100", "5123456")


def test_base_url_override() -> None:
    config = load_config(env={**PRODUCTION, "MPESA_BASE_URL": "https://proxy.example.com/d/"})
    assert config.daraja.base_url == "https://proxy.example.com/d"


@pytest.mark.parametrize(
    ("env", "key", "fix"),
    [
        (
            {"MPESA_CALLBACK_URL": f"http://shop.example.com/hooks/stk/{SECRET}"},
            "MPESA_CALLBACK_URL",
            "https",
        ),
        (
            {"MPESA_CALLBACK_URL": f"https://shop.example.com/mpesa/{SECRET}"},
            "MPESA_CALLBACK_URL",
            "without that word",
        ),
        (
            {"MPESA_CALLBACK_URL": f"https://shop.example.com/stk/query/{SECRET}"},
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


def test_phone_numbers_in_log_lines_are_masked_even_inside_checkout_ids() -> None:
    """Daraja's CheckoutRequestIDs end in the phone's last nine digits."""
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.addFilter(RedactTokens())
    log = logging.getLogger("test.redaction")
    log.addHandler(handler)
    try:
        log.warning("callback for %s held", "ws_CO_02122026092730890712345678")
        log.warning("pushed to %s / %s", "254712345678", "+254712345678")
        log.warning("order total %s at %s", 1250, "20261126102115")
    finally:
        log.removeHandler(handler)
    shown = stream.getvalue()
    assert "712345678" not in shown
    assert "ws_CO_02122026092730890******678" in shown
    assert "254712***678 / +254712***678" in shown
    assert "order total 1250 at 20261126102115" in shown  # other numbers untouched


MISSING_IN_PRODUCTION = [
    "MPESA_CONSUMER_KEY",
    "MPESA_CONSUMER_SECRET",
    "MPESA_PASSKEY",
    "MPESA_SHORTCODE",
    "MPESA_CALLBACK_URL",
    "DUKA_DATA_KEY",  # phone numbers are sealed with it: no default outside the simulator
]


def test_every_missing_production_setting_is_reported_at_once(tmp_path: Path) -> None:
    """Not one problem per restart: one ConfigError, one ``KEY: problem. Fix: fix`` line each."""
    path = tmp_path / "config.toml"
    path.write_text("")
    env = {
        "MPESA_ENVIRONMENT": "production",
        "MPESA_CALLBACK_URL": f"http://shop.example.com/hooks/stk/{SECRET}",
    }
    with pytest.raises(ConfigErrors) as caught:
        load_config(env=env, path=path)
    error = caught.value
    assert error.key == "MPESA_CONSUMER_KEY"  # the first one, as for a single error
    assert [each.key for each in error.errors] == MISSING_IN_PRODUCTION
    header, *lines = str(error).splitlines()
    assert "6 configuration errors" in header
    assert [line.partition(": ")[0] for line in lines] == MISSING_IN_PRODUCTION
    assert all(". Fix: " in line for line in lines)
    assert "MPESA_CALLBACK_URL: is not https. Fix: " in lines[-2]
    assert lines[-1].startswith("DUKA_DATA_KEY: is not set")
    assert "duka keygen" in lines[-1]


def test_all_the_daraja_problems_come_together_and_none_shows_a_secret(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """Short code, base URL, both callback URLs and the description in one report; the
    credentials and the URL secrets appear neither in it nor in the log."""
    path = tmp_path / "config.toml"
    path.write_text('[mpesa]\ntransaction_desc = "Duka <3"\n')
    stk_secret, c2b_secret = "s3cr3t" * 5, "Wq" * 14
    credentials = {
        "MPESA_CONSUMER_KEY": "ck-Kq81ZpL0vX",
        "MPESA_CONSUMER_SECRET": "cs-Yt62MnB7wQ",
        "MPESA_PASSKEY": "pk-Hd93RfT4sE",
    }
    env = {
        **credentials,
        "MPESA_ENVIRONMENT": "production",
        "MPESA_SHORTCODE": "174379",
        "MPESA_BASE_URL": "http://proxy.example.com",
        "MPESA_CALLBACK_URL": f"https://x.ngrok-free.app/hooks/stk/{stk_secret}",
        "MPESA_C2B_CONFIRMATION_URL": f"http://shop.example.com/hooks/c2b/{c2b_secret}",
    }
    with caplog.at_level(logging.WARNING), pytest.raises(ConfigErrors) as caught:
        load_config(env=env, path=path)
    keys = [each.key for each in caught.value.errors]
    assert keys == [
        "MPESA_SHORTCODE",
        "MPESA_BASE_URL",
        "MPESA_CALLBACK_URL",
        "MPESA_C2B_CONFIRMATION_URL",
        "MPESA_C2B_CONFIRMATION_URL",
        "mpesa.transaction_desc",
        "DUKA_DATA_KEY",
    ]
    shown = str(caught.value) + caplog.text
    for secret in (*credentials.values(), stk_secret, c2b_secret):
        assert secret not in shown


def test_a_single_problem_keeps_its_one_line_message() -> None:
    with pytest.raises(ConfigError) as caught:
        load_config(env={**PRODUCTION, "MPESA_PASSKEY": ""})
    assert type(caught.value) is ConfigError
    assert str(caught.value) == (
        "Configuration error in MPESA_PASSKEY: not set. "
        "Fix: export MPESA_PASSKEY with the Lipa Na M-Pesa Online passkey"
    )


def test_config_errors_join_several_under_the_first_key() -> None:
    """``ConfigError.together``: what other code raises is unchanged, and joins flatten."""
    first, second = ConfigError("A", "bad", "fix a"), ConfigError("B", "worse", "fix b")
    assert ConfigError.together([first]) is first
    joined = ConfigError.together([first, ConfigError.together([second, first])])
    assert isinstance(joined, ConfigErrors)
    assert (joined.key, joined.problem, joined.fix) == ("A", "bad", "fix a")
    assert str(joined).splitlines()[1:] == [
        "A: bad. Fix: fix a",
        "B: worse. Fix: fix b",
        "A: bad. Fix: fix a",
    ]


def test_duka_serve_prints_every_problem_and_exits_2(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """What an operator sees: the whole list on stderr, before anything starts."""
    for name in list(os.environ):
        if name.startswith(("MPESA_", "DUKA_", "TELEGRAM_", "WHATSAPP_")):
            monkeypatch.delenv(name)
    path = tmp_path / "config.toml"
    path.write_text("")
    monkeypatch.setenv("DUKA_CONFIG", str(path))
    monkeypatch.setenv("MPESA_ENVIRONMENT", "production")
    monkeypatch.setenv("MPESA_CALLBACK_URL", f"http://shop.example.com/hooks/stk/{SECRET}")
    assert main(["serve"]) == 2
    printed = capsys.readouterr().err
    for key in MISSING_IN_PRODUCTION:
        assert f"\n{key}: " in printed
    assert SECRET not in printed


def test_limits_are_read_from_the_limits_section(tmp_path: Path) -> None:
    config_file = tmp_path / "config.toml"
    config_file.write_text(
        "[limits]\nprompts_per_phone_per_10_minutes = 2\nprompts_per_phone_per_day = 6\n"
        "prompts_per_customer_per_10_minutes = 4\nchat_events_per_10_seconds = 15\n"
    )
    config = load_config(env={}, path=config_file)
    limits = config.prompt_limits
    assert (limits.per_phone_short, limits.per_phone_day, limits.per_customer_short) == (2, 6, 4)
    assert config.chat_events_per_10_seconds == 15


@pytest.mark.parametrize("value", ["0", "-1", "2.5", '"three"', "true"])
def test_a_limit_that_is_not_a_positive_whole_number_names_its_key(
    tmp_path: Path, value: str
) -> None:
    config_file = tmp_path / "config.toml"
    config_file.write_text(f"[limits]\nprompts_per_phone_per_day = {value}\n")
    with pytest.raises(ConfigError) as refused:
        load_config(env={}, path=config_file)
    assert refused.value.key == "limits.prompts_per_phone_per_day"


def test_the_simulator_makes_its_data_key_once_and_keeps_it_next_to_the_database(
    tmp_path: Path,
) -> None:
    env = {
        "MPESA_ENVIRONMENT": "simulator",
        "DUKA_DATABASE_URL": f"sqlite+aiosqlite:///{tmp_path / 'data' / 'duka.sqlite3'}",
    }
    path = tmp_path / "config.toml"
    path.write_text("")
    first = load_config(env=env, path=path).sealer.seal_value("254712345678")
    key_file = tmp_path / "data" / "duka-data.key"
    assert key_file.stat().st_mode & 0o777 == 0o600  # readable by us alone
    # A restart reads its own data: the same key, so the same sealed value.
    assert load_config(env=env, path=path).sealer.seal_value("254712345678") == first
    key_file.write_text("not a key\n")
    with pytest.raises(ConfigError) as caught:
        load_config(env=env, path=path)
    assert str(caught.value).startswith(f"Configuration error in {key_file}: does not hold")
