"""Configuring the Paybill (C2B) fallback: its URLs, the rules they follow, when it is on."""

from __future__ import annotations

from pathlib import Path

import pytest

from bot.config import ConfigError, load_config
from storage.sealing import generate_key

STK_URL = "https://shop.example.com/hooks/stk/Zk3p9qLm2VbX8rT5wYc7NdA4hG6jE"
C2B_SECRET = "Qw8eR7tY6uI5oP4aS3dF2gH1jK9"
C2B_URL = f"https://shop.example.com/hooks/c2b/{C2B_SECRET}"
VALIDATION_SECRET = "Vb6nM5xC4zL3kJ2hG1fD9sA8pO7"
DATA_KEY = generate_key()  # a test's own: the real one comes from the environment
PRODUCTION = {
    "MPESA_ENVIRONMENT": "production",
    "DUKA_DATA_KEY": DATA_KEY,
    "MPESA_CONSUMER_KEY": "key",
    "MPESA_CONSUMER_SECRET": "secret",
    "MPESA_PASSKEY": "passkey",
    "MPESA_SHORTCODE": "600100",
    "MPESA_CALLBACK_URL": STK_URL,
}


@pytest.fixture
def no_file(tmp_path: Path) -> Path:
    """An empty config file, so that no config.toml of the working directory counts."""
    path = tmp_path / "config.toml"
    path.write_text("")
    return path


def test_the_fallback_is_off_unless_a_confirmation_url_is_set(no_file: Path) -> None:
    """No C2B URLs: no routes to serve and no Paybill offered."""
    daraja = load_config(env=PRODUCTION, path=no_file).daraja
    assert (daraja.c2b_confirmation_url, daraja.c2b_validation_url) == ("", "")
    assert daraja.paybill_fallback is None


def test_a_confirmation_url_turns_the_paybill_fallback_on(no_file: Path) -> None:
    """Validation defaults to the confirmation URL plus /validate, under the same secret."""
    env = {**PRODUCTION, "MPESA_C2B_CONFIRMATION_URL": C2B_URL + "/"}
    daraja = load_config(env=env, path=no_file).daraja
    assert daraja.c2b_confirmation_url == C2B_URL
    assert daraja.c2b_validation_url == C2B_URL + "/validate"
    assert daraja.paybill_fallback == "600100"


def test_the_urls_can_come_from_the_toml_file(tmp_path: Path) -> None:
    """[mpesa] c2b_confirmation_url and c2b_validation_url work like the variables."""
    path = tmp_path / "config.toml"
    validation = f"https://shop.example.com/hooks/c2b-check/{VALIDATION_SECRET}"
    path.write_text(
        f'[mpesa]\nc2b_confirmation_url = "{C2B_URL}"\nc2b_validation_url = "{validation}"\n'
    )
    daraja = load_config(env=PRODUCTION, path=path).daraja
    assert (daraja.c2b_confirmation_url, daraja.c2b_validation_url) == (C2B_URL, validation)


def test_a_till_never_offers_the_paybill_fallback(no_file: Path) -> None:
    """A till has no account number to name the order by."""
    env = {**PRODUCTION, "MPESA_C2B_CONFIRMATION_URL": C2B_URL, "MPESA_TILL_NUMBER": "5123456"}
    daraja = load_config(env=env, path=no_file).daraja
    assert daraja.paybill_fallback is None


def test_simulator_mode_accepts_a_plain_http_loopback_url(no_file: Path) -> None:
    """Outside production a loopback http URL is fine (the embedded simulator calls it)."""
    url = f"http://127.0.0.1:8080/hooks/c2b/{C2B_SECRET}"
    env = {"MPESA_ENVIRONMENT": "simulator", "MPESA_C2B_CONFIRMATION_URL": url}
    daraja = load_config(env=env, path=no_file).daraja
    assert daraja.c2b_confirmation_url == url
    assert daraja.paybill_fallback == "174379"


def test_the_url_secrets_stay_out_of_the_config_repr(no_file: Path) -> None:
    """Neither C2B secret appears in repr(config)."""
    validation = f"https://shop.example.com/hooks/c2b-check/{VALIDATION_SECRET}"
    env = {
        **PRODUCTION,
        "MPESA_C2B_CONFIRMATION_URL": C2B_URL,
        "MPESA_C2B_VALIDATION_URL": validation,
    }
    shown = repr(load_config(env=env, path=no_file))
    assert C2B_SECRET not in shown
    assert VALIDATION_SECRET not in shown


@pytest.mark.parametrize(
    ("env", "key", "words"),
    [
        (
            {"MPESA_C2B_CONFIRMATION_URL": f"https://shop.example.com/mpesa/c2b/{C2B_SECRET}"},
            "MPESA_C2B_CONFIRMATION_URL",
            "Safaricom rejects",
        ),
        (
            {"MPESA_C2B_CONFIRMATION_URL": f"https://shop.example.com/hooks/C2B-Exec/{C2B_SECRET}"},
            "MPESA_C2B_CONFIRMATION_URL",
            "Safaricom rejects",
        ),
        (
            {"MPESA_C2B_CONFIRMATION_URL": "https://shop.example.com/hooks/c2b/short-secret"},
            "MPESA_C2B_CONFIRMATION_URL",
            "long random secret",
        ),
        (
            {"MPESA_C2B_CONFIRMATION_URL": f"https://shop.example.com/{C2B_SECRET}"},
            "MPESA_C2B_CONFIRMATION_URL",
            "long random secret",
        ),
        (
            {"MPESA_C2B_CONFIRMATION_URL": f"http://shop.example.com/hooks/c2b/{C2B_SECRET}"},
            "MPESA_C2B_CONFIRMATION_URL",
            "is not https",
        ),
        (
            {"MPESA_C2B_CONFIRMATION_URL": f"https://shop.example.com/hooks/stk/{C2B_SECRET}"},
            "MPESA_C2B_CONFIRMATION_URL",
            "starts like MPESA_CALLBACK_URL",
        ),
        (
            {"MPESA_C2B_CONFIRMATION_URL": f"https://shop.example.com/hooks/c2b/{C2B_SECRET}?a=1"},
            "MPESA_C2B_CONFIRMATION_URL",
            "query string",
        ),
        (
            {"MPESA_C2B_CONFIRMATION_URL": f"https://shop.example.com/hooks/c2b /{C2B_SECRET}"},
            "MPESA_C2B_CONFIRMATION_URL",
            "contains a space",
        ),
        (
            {"MPESA_C2B_CONFIRMATION_URL": f"shop.example.com/hooks/c2b/{C2B_SECRET}"},
            "MPESA_C2B_CONFIRMATION_URL",
            "not an http(s) URL",
        ),
        (
            {"MPESA_C2B_VALIDATION_URL": f"https://shop.example.com/hooks/c2bv/{C2B_SECRET}"},
            "MPESA_C2B_VALIDATION_URL",
            "without MPESA_C2B_CONFIRMATION_URL",
        ),
        (
            {
                "MPESA_C2B_CONFIRMATION_URL": C2B_URL,
                "MPESA_C2B_VALIDATION_URL": f"https://shop.example.com/cmd/{VALIDATION_SECRET}",
            },
            "MPESA_C2B_VALIDATION_URL",
            "Safaricom rejects",
        ),
        (
            {
                "MPESA_C2B_CONFIRMATION_URL": C2B_URL,
                "MPESA_C2B_VALIDATION_URL": "https://shop.example.com/hooks/c2bv/short",
            },
            "MPESA_C2B_VALIDATION_URL",
            "long random secret",
        ),
        (
            {
                "MPESA_C2B_CONFIRMATION_URL": C2B_URL,
                "MPESA_C2B_VALIDATION_URL": f"https://shop.example.com/hooks/stk/{VALIDATION_SECRET}",
            },
            "MPESA_C2B_VALIDATION_URL",
            "starts like MPESA_CALLBACK_URL",
        ),
        (
            {"MPESA_C2B_CONFIRMATION_URL": C2B_URL, "MPESA_C2B_VALIDATION_URL": C2B_URL},
            "MPESA_C2B_VALIDATION_URL",
            "same as MPESA_C2B_CONFIRMATION_URL",
        ),
    ],
    ids=[
        "banned-word",
        "banned-word-any-case",
        "short-secret",
        "secret-without-a-path-before-it",
        "http-in-production",
        "same-prefix-as-stk",
        "query-string",
        "space",
        "not-a-url",
        "validation-alone",
        "validation-banned-word",
        "validation-short-secret",
        "validation-same-prefix-as-stk",
        "validation-same-as-confirmation",
    ],
)
def test_a_bad_c2b_url_stops_start_up_naming_the_key(
    no_file: Path, env: dict[str, str], key: str, words: str
) -> None:
    """The message names the key and the fix, and never repeats a secret."""
    with pytest.raises(ConfigError) as caught:
        load_config(env={**PRODUCTION, **env}, path=no_file)
    assert caught.value.key == key
    message = str(caught.value)
    assert words in message
    assert "Fix:" in message
    assert C2B_SECRET not in message
    assert VALIDATION_SECRET not in message


def test_the_stk_prefix_rule_holds_for_the_generated_simulator_callback_url(
    no_file: Path,
) -> None:
    """In simulator mode the STK URL is made up at start; C2B still may not share its path."""
    env = {
        "MPESA_ENVIRONMENT": "simulator",
        "MPESA_C2B_CONFIRMATION_URL": f"http://127.0.0.1:8080/hooks/stk/{C2B_SECRET}",
    }
    with pytest.raises(ConfigError) as caught:
        load_config(env=env, path=no_file)
    assert caught.value.key == "MPESA_C2B_CONFIRMATION_URL"
