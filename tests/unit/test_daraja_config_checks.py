"""The Daraja settings that cannot be wrong quietly: one callback URL spelling for Daraja
and for our router, production short codes and base URLs, callback secret strength,
tunnel hosts and TransactionDesc characters."""

from __future__ import annotations

import logging
from pathlib import Path

import httpx
import pytest
from aiohttp import web
from aiohttp.test_utils import make_mocked_request

from bot.config import ConfigError, load_config
from payments.daraja_client import DarajaClient, StkPushRequest
from payments.settings import normalize_callback_url
from payments.webhook import CallbackPath, callback_routes
from storage.sealing import generate_key

SECRET = "Zk3p9qLm2VbX8rT5wYc7NdA4hG6jE"  # 29 different characters: about 141 bits
DATA_KEY = generate_key()  # a test's own: the real one comes from the environment
PRODUCTION = {
    "MPESA_ENVIRONMENT": "production",
    "DUKA_DATA_KEY": DATA_KEY,
    "MPESA_CONSUMER_KEY": "key",
    "MPESA_CONSUMER_SECRET": "secret",
    "MPESA_PASSKEY": "passkey",
    "MPESA_SHORTCODE": "600100",
    "MPESA_CALLBACK_URL": f"https://shop.example.com/hooks/stk/{SECRET}",
}
SANDBOX = {**PRODUCTION, "MPESA_ENVIRONMENT": "sandbox"}
SANDBOX.pop("MPESA_SHORTCODE")
SIMULATOR = {"MPESA_ENVIRONMENT": "simulator"}
REPO_CONFIG = Path(__file__).parents[2] / "config.toml"


@pytest.fixture
def no_file(tmp_path: Path) -> Path:
    """An empty config file, so that no config.toml of the working directory counts."""
    path = tmp_path / "config.toml"
    path.write_text("")
    return path


def config_file(tmp_path: Path, toml: str) -> Path:
    path = tmp_path / "config.toml"
    path.write_text(toml)
    return path


def refusal(env: dict[str, str], path: Path) -> ConfigError:
    with pytest.raises(ConfigError) as caught:
        load_config(env=env, path=path)
    return caught.value


# --- 1. One spelling of the callback URL ---------------------------------------------------


async def test_a_trailing_slash_is_dropped_so_daraja_calls_the_route_we_serve(
    no_file: Path,
) -> None:
    """The CallBackURL in the push body, resolved by our router, reaches the handler."""
    env = {**PRODUCTION, "MPESA_CALLBACK_URL": f"https://shop.example.com/hooks/stk/{SECRET}/"}
    daraja = load_config(env=env, path=no_file).daraja
    assert daraja.callback_url == f"https://shop.example.com/hooks/stk/{SECRET}"

    async with httpx.AsyncClient() as http:
        body = DarajaClient(daraja, http).push_body(
            StkPushRequest("254712345678", 100, "DK-1"), "20240101120000"
        )
    assert body["CallBackURL"] == daraja.callback_url
    served = CallbackPath(daraja.callback_url)
    assert served.route == "/hooks/stk/{token}"
    app = web.Application()
    app.add_routes(callback_routes(served))
    sent_path = httpx.URL(body["CallBackURL"]).path
    match = await app.router.resolve(make_mocked_request("POST", sent_path))
    assert match.http_exception is None  # routed, not 404/405
    assert served.matches(match["token"])


@pytest.mark.parametrize(
    ("given", "normalised"),
    [
        (
            f"HTTPS://Shop.Example.COM:443/hooks/stk/{SECRET}//",
            f"https://shop.example.com/hooks/stk/{SECRET}",
        ),
        (
            f"https://shop.example.com:8443/hooks/stk/{SECRET}/",
            f"https://shop.example.com:8443/hooks/stk/{SECRET}",
        ),
        (
            f"  https://shop.example.com/Hooks/STK/{SECRET}\n",
            f"https://shop.example.com/Hooks/STK/{SECRET}",
        ),
    ],
    ids=["scheme-host-default-port-slashes", "other-port-kept", "path-case-kept"],
)
def test_the_callback_url_is_normalised_once_in_config(
    no_file: Path, given: str, normalised: str
) -> None:
    """Lower-case scheme and host, no default port, no trailing slash; the path's case stays."""
    daraja = load_config(env={**PRODUCTION, "MPESA_CALLBACK_URL": given}, path=no_file).daraja
    assert daraja.callback_url == normalised
    assert normalize_callback_url(normalised) == normalised


def test_plain_http_default_port_is_dropped_outside_production(no_file: Path) -> None:
    """http://host:80 is http://host: the URL sent and the one routed are one string."""
    env = {**SANDBOX, "MPESA_CALLBACK_URL": f"http://Shop.example.com:80/hooks/stk/{SECRET}/"}
    daraja = load_config(env=env, path=no_file).daraja
    assert daraja.callback_url == f"http://shop.example.com/hooks/stk/{SECRET}"


def test_the_c2b_urls_are_normalised_the_same_way(no_file: Path) -> None:
    """The C2B confirmation URL goes through the same shared check and spelling."""
    c2b = f"HTTPS://SHOP.example.com:443/hooks/c2b/{SECRET}/"
    env = {**PRODUCTION, "MPESA_C2B_CONFIRMATION_URL": c2b}
    daraja = load_config(env=env, path=no_file).daraja
    assert daraja.c2b_confirmation_url == f"https://shop.example.com/hooks/c2b/{SECRET}"
    assert daraja.c2b_validation_url == f"https://shop.example.com/hooks/c2b/{SECRET}/validate"


def test_the_route_refuses_a_url_it_would_not_serve() -> None:
    """A trailing slash given straight to CallbackPath fails loudly instead of 404s later."""
    with pytest.raises(ValueError, match="trailing slash") as caught:
        CallbackPath(f"https://shop.example.com/hooks/stk/{SECRET}/")
    assert SECRET not in str(caught.value)


def test_a_percent_escape_in_the_callback_path_is_refused(no_file: Path) -> None:
    """aiohttp decodes %41 to A, so a secret holding one would never match."""
    env = {**PRODUCTION, "MPESA_CALLBACK_URL": f"https://shop.example.com/hooks/stk/{SECRET}%41"}
    error = refusal(env, no_file)
    assert error.key == "MPESA_CALLBACK_URL"
    assert "encoded differently" in str(error)
    assert SECRET not in str(error)


def test_a_port_that_is_not_a_number_is_refused(no_file: Path) -> None:
    env = {**PRODUCTION, "MPESA_CALLBACK_URL": f"https://shop.example.com:x/hooks/stk/{SECRET}"}
    error = refusal(env, no_file)
    assert (error.key, error.problem) == ("MPESA_CALLBACK_URL", "its port is not a number")


# --- 2. Production short code, till and base URL -------------------------------------------


def test_production_needs_the_short_code_set_explicitly(no_file: Path) -> None:
    """No MPESA_SHORTCODE and no [mpesa] short_code: the sandbox default is not used."""
    env = dict(PRODUCTION)
    env.pop("MPESA_SHORTCODE")
    error = refusal(env, no_file)
    assert (error.key, error.problem) == ("MPESA_SHORTCODE", "not set")
    assert "Paybill" in error.fix


@pytest.mark.parametrize("source", ["env", "file"])
def test_production_refuses_the_sandbox_short_code(tmp_path: Path, source: str) -> None:
    """174379 is Safaricom's test short code, from the variable or from the file."""
    env = dict(PRODUCTION)
    if source == "env":
        env["MPESA_SHORTCODE"] = "174379"
        path = config_file(tmp_path, "")
    else:
        env.pop("MPESA_SHORTCODE")
        path = config_file(tmp_path, '[mpesa]\nshort_code = "174379"\n')
    error = refusal(env, path)
    # The error names the setting where the value was read (issue 9).
    assert error.key == ("MPESA_SHORTCODE" if source == "env" else "mpesa.short_code")
    assert "sandbox test short code" in str(error)


def test_the_shipped_config_file_needs_a_real_short_code_for_production() -> None:
    """config.toml ships 174379: switching it to production alone stops at start-up."""
    env = dict(PRODUCTION)
    env.pop("MPESA_SHORTCODE")
    assert refusal(env, REPO_CONFIG).key == "mpesa.short_code"
    assert load_config(env=PRODUCTION, path=REPO_CONFIG).daraja.short_code == "600100"


def test_sandbox_and_simulator_keep_the_test_short_code_default(no_file: Path) -> None:
    """Only 174379 works for sandbox STK (daraja.md §7.2), so it stays their default."""
    assert load_config(env=SANDBOX, path=no_file).daraja.short_code == "174379"
    assert load_config(env=SIMULATOR, path=no_file).daraja.short_code == "174379"


def test_production_buy_goods_takes_the_till_and_needs_the_store_number(no_file: Path) -> None:
    """A till set means Buy Goods; the short code (store number) must still be given."""
    env = {**PRODUCTION, "MPESA_TILL_NUMBER": "5123456"}
    daraja = load_config(env=env, path=no_file).daraja
    assert (daraja.transaction_type, daraja.party_b) == ("CustomerBuyGoodsOnline", "5123456")
    env.pop("MPESA_SHORTCODE")
    assert refusal(env, no_file).key == "MPESA_SHORTCODE"


@pytest.mark.parametrize(
    ("toml", "env_name", "key_in_file"),
    [
        ('short_code = "abc"', "MPESA_SHORTCODE", "mpesa.short_code"),
        ('till_number = "12x"', "MPESA_TILL_NUMBER", "mpesa.till_number"),
        ('callback_url = "https://shop.example.com/hooks/stk/short"', "MPESA_CALLBACK_URL",
         "mpesa.callback_url"),
        ('base_url = "ftp://daraja.example.com"', "MPESA_BASE_URL", "mpesa.base_url"),
    ],
)  # fmt: skip
def test_a_wrong_mpesa_value_is_named_where_it_was_set(
    tmp_path: Path, toml: str, env_name: str, key_in_file: str
) -> None:
    value = toml.partition(" = ")[2]
    without = {k: v for k, v in PRODUCTION.items() if k != env_name}  # the file's value counts
    from_file = refusal(without, config_file(tmp_path, f"[mpesa]\n{toml}\n"))
    assert from_file.key == key_in_file
    assert from_file.key in str(from_file)
    from_env = refusal({**PRODUCTION, env_name: value.strip('"')}, config_file(tmp_path, ""))
    assert from_env.key == env_name
    assert "'" not in str(from_file).split(". Fix:")[0], "a Python repr in the message"


def test_an_empty_till_number_means_paybill(tmp_path: Path) -> None:
    path = config_file(tmp_path, '[mpesa]\ntill_number = ""\n')
    assert load_config(env=PRODUCTION, path=path).daraja.transaction_type == (
        "CustomerPayBillOnline"
    )


def test_a_production_base_url_override_must_be_https(no_file: Path) -> None:
    """Requests to it carry the credentials; sandbox may still point at a local simulator."""
    error = refusal({**PRODUCTION, "MPESA_BASE_URL": "http://127.0.0.1:8090"}, no_file)
    assert (error.key, "https" in error.fix) == ("MPESA_BASE_URL", True)
    env = {**SANDBOX, "MPESA_BASE_URL": "http://127.0.0.1:8090/"}
    assert load_config(env=env, path=no_file).daraja.base_url == "http://127.0.0.1:8090"


# --- 2. Callback secret strength and tunnel hosts ------------------------------------------

WEAK_SECRETS = [
    "a" * 28,
    "ab" * 16,
    "0123456789012345678901234",
    "abcdefghij" * 4,  # 133 bits by the estimate, but a repeated block
    "Zk3p9qLm2VbX8rT5wYc7NdA4",  # 24 different characters: about 110 bits
    "cbdfaageaceaebaaddabaedageabffeaeedabaegbcdbeaeceg",  # 140 bits, but 7 characters
]


@pytest.mark.parametrize("secret", WEAK_SECRETS)
@pytest.mark.parametrize(
    ("base", "url"),
    [
        (PRODUCTION, "https://shop.example.com/hooks/stk/{}"),
        (SANDBOX, "http://shop.example.com/hooks/stk/{}"),
        (SIMULATOR, "http://127.0.0.1:8080/hooks/stk/{}"),
    ],
    ids=["production", "sandbox", "simulator-given-url"],
)
def test_a_guessable_callback_secret_is_refused_in_every_environment(
    no_file: Path, base: dict[str, str], url: str, secret: str
) -> None:
    """Repeated or low-variety secrets, or under 128 bits estimated, stop start-up."""
    error = refusal({**base, "MPESA_CALLBACK_URL": url.format(secret)}, no_file)
    assert error.key == "MPESA_CALLBACK_URL"
    assert "its secret" in error.problem
    assert "token_hex" in error.fix
    assert secret not in str(error)


@pytest.mark.parametrize(
    "secret",
    [
        # What secrets.token_hex(24) gives (fixed: test ids must be the same in every
        # process that collects them).
        "b2f38fe93decd34a12987caa93f49931226c59146bd907de",
        "Qw8eR7tY6uI5oP4aS3dF2gH1jK9",  # 27 different characters: 128.4 bits
        "kP3_x9-Lm2Vb.X8rT5~wYc7NdA4",
    ],
)
def test_a_strong_callback_secret_is_accepted(no_file: Path, secret: str) -> None:
    env = {**PRODUCTION, "MPESA_CALLBACK_URL": f"https://shop.example.com/hooks/stk/{secret}"}
    assert load_config(env=env, path=no_file).daraja.callback_url.endswith(secret)


def test_the_c2b_urls_get_the_same_secret_strength_check(no_file: Path) -> None:
    env = {
        **PRODUCTION,
        "MPESA_C2B_CONFIRMATION_URL": "https://shop.example.com/hooks/c2b/" + "xy" * 16,
    }
    error = refusal(env, no_file)
    assert error.key == "MPESA_C2B_CONFIRMATION_URL"
    assert "repeats a short pattern" in error.problem


@pytest.mark.parametrize(
    "host",
    [
        "abc123.ngrok-free.app",
        "x.ngrok.io",
        "shop.ngrok.app",
        "a-b.trycloudflare.com",
        "ok.loca.lt",
        "me.localtunnel.me",
        "x.serveo.net",
    ],
)
@pytest.mark.parametrize("base", [PRODUCTION, SANDBOX], ids=["production", "sandbox"])
def test_a_tunnel_callback_host_is_a_warning_not_an_error(
    no_file: Path, caplog: pytest.LogCaptureFixture, base: dict[str, str], host: str
) -> None:
    """Safaricom usually blocks tunnels: say so in the log, start anyway."""
    env = {**base, "MPESA_CALLBACK_URL": f"https://{host}/hooks/stk/{SECRET}"}
    with caplog.at_level(logging.WARNING, logger="bot.config"):
        load_config(env=env, path=no_file)
    [record] = [r for r in caplog.records if r.name == "bot.config"]
    assert record.levelno == logging.WARNING
    assert "MPESA_CALLBACK_URL" in record.getMessage()
    assert host in record.getMessage()
    assert SECRET not in record.getMessage()


@pytest.mark.parametrize("host", ["shop.example.com", "myngrok.io", "ngrok.io.example.com"])
def test_an_ordinary_host_logs_no_tunnel_warning(
    no_file: Path, caplog: pytest.LogCaptureFixture, host: str
) -> None:
    env = {**PRODUCTION, "MPESA_CALLBACK_URL": f"https://{host}/hooks/stk/{SECRET}"}
    with caplog.at_level(logging.WARNING, logger="bot.config"):
        load_config(env=env, path=no_file)
    assert [r for r in caplog.records if r.name == "bot.config"] == []


# --- 4. TransactionDesc characters ---------------------------------------------------------


@pytest.mark.parametrize(
    "toml_value",
    [
        '"Duka 🛒"',
        '"Duka\\norder"',
        '"Duka\\u0007"',
        '"<b>Duka</b>"',
        '"Duka@shop"',
        '"Order #12"',
    ],
    ids=["emoji", "newline", "control", "angle-brackets", "at-sign", "hash"],
)
def test_transaction_desc_characters_are_checked(tmp_path: Path, toml_value: str) -> None:
    """One line naming mpesa.transaction_desc and the characters Daraja takes."""
    path = config_file(tmp_path, f"[mpesa]\ntransaction_desc = {toml_value}\n")
    error = refusal({}, path)
    assert error.key == "mpesa.transaction_desc"
    assert "\n" not in str(error)
    assert "letters, digits, spaces and . , - _ ' &" in error.fix


@pytest.mark.parametrize("desc", ["Duka order", "Mama's A&B", "Order no. 5", "duka_ord-1,2"])
def test_transaction_desc_with_plain_characters_is_accepted(tmp_path: Path, desc: str) -> None:
    path = config_file(tmp_path, f'[mpesa]\ntransaction_desc = "{desc}"\n')
    assert load_config(env={}, path=path).daraja.transaction_desc == desc
