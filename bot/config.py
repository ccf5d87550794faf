"""Duka's configuration: read once at start-up from ``config.toml`` and the environment.

Non-secret settings live in the TOML file; secrets and per-deployment values come from
environment variables, which override the file. Any bad value stops start-up with a
``ConfigError`` that names the key and says how to fix it; the Daraja settings are checked
all together, so that one start-up lists every missing or wrong one (``ConfigErrors``).
"""

from __future__ import annotations

import ipaddress
import json
import logging
import math
import os
import re
import secrets
import tomllib
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import time
from functools import partial
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import urlsplit

from sqlalchemy.engine import make_url

from bot.catalog import (
    CatalogError,
    CatalogFile,
    ProductSpec,
    parse_products,
    read_catalog_file,
)
from bot.handover import MAX_DELIVERY_FEE, MAX_ZONE_NAME, Handover, HandoverOptions, Zone
from payments.callback_sources import (
    LOOPBACK,
    SAFARICOM_CALLBACK_IPS,
    CallbackSources,
    ConfirmPaid,
    IpMode,
)
from payments.limits import PromptLimits
from payments.phone import InvalidPhoneNumber, normalize_msisdn
from payments.retention import RetentionSettings
from payments.settings import (
    BANNED_CALLBACK_WORDS,
    DARAJA_BASE_URLS,
    DarajaEnvironment,
    DarajaSettings,
    ReconcileSettings,
    is_tunnel_host,
    normalize_callback_url,
    split_callback_path,
)
from storage.sealing import DataKeyError, Sealer, generate_key, parse_key

log = logging.getLogger(__name__)
_T = TypeVar("_T")

DEFAULT_CONFIG_PATH = Path("config.toml")
# The simulator's credentials are public test values (the sandbox passkey is in Safaricom's docs).
SIMULATOR_CONSUMER_KEY = "duka-sim-key"
SIMULATOR_CONSUMER_SECRET = "duka-sim-secret"  # noqa: S105 - a public test value, not a secret
SANDBOX_PASSKEY = "bfb279f9aa9bdbcf158e97dd71a467cd2e0c893059b10f78e6b72ada1ed2c919"
SANDBOX_SHORT_CODE = "174379"  # Safaricom's public test short code; unknown in production
CALLBACK_ROUTE_PREFIX = "/hooks/stk"
# Relative to the directory duka runs in (three slashes then "./": not /var).
DEFAULT_DATABASE_URL = "sqlite+aiosqlite:///./var/duka.sqlite3"
MIN_CALLBACK_SECRET_LENGTH = 24  # below this a path segment is no secret (bot.cli redacts above)
# A callback secret's strength, estimated as len(secret) * log2(distinct characters used):
# 48 hex characters from secrets.token_hex(24) give 192 bits, "abab..." or a counted-up
# run of digits far less.
MIN_CALLBACK_SECRET_BITS = 128
MIN_CALLBACK_SECRET_DISTINCT = 8
RANDOM_SEGMENT_COMMAND = "python3 -c 'import secrets; print(secrets.token_hex(24))'"
# The path as sent is the path as routed: a %-escape or other reserved character could be
# decoded or re-encoded on the way, and then no callback would ever match.
_URL_SAFE_PATH = re.compile(r"[A-Za-z0-9._~/-]*")
# What Daraja takes in TransactionDesc (daraja.md §2.1: special characters cause failures).
_TRANSACTION_DESC = re.compile(r"[A-Za-z0-9 .,_'&-]+")
TRANSACTION_DESC_CHARACTERS = "letters, digits, spaces and . , - _ ' &"


class ConfigError(Exception):
    """A configuration value is missing or wrong; the message names the key and the fix."""

    def __init__(self, key: str, problem: str, fix: str) -> None:
        super().__init__(f"Configuration error in {key}: {problem}. Fix: {fix}")
        self.key = key
        self.problem = problem
        self.fix = fix

    @property
    def line(self) -> str:
        """``KEY: problem. Fix: fix``, one line of a combined report."""
        return f"{self.key}: {self.problem}. Fix: {self.fix}"

    @property
    def errors(self) -> tuple[ConfigError, ...]:
        return (self,)

    @staticmethod
    def together(errors: Sequence[ConfigError]) -> ConfigError:
        """One error to raise for several: the error itself when there is one."""
        flat = [error for each in errors for error in each.errors]
        return flat[0] if len(flat) == 1 else ConfigErrors(flat)


class ConfigErrors(ConfigError):
    """Several problems found at once, one ``KEY: problem. Fix: fix`` line each, so that a
    deployment is not fixed one restart at a time. ``key`` (and ``problem``, ``fix``) are
    the first one's; ``errors`` holds them all."""

    def __init__(self, errors: Sequence[ConfigError]) -> None:
        if not errors:
            raise ValueError("ConfigErrors needs at least one error")
        first = errors[0]
        super().__init__(first.key, first.problem, first.fix)
        self._all = tuple(errors)
        self.args = (
            f"{len(errors)} configuration errors, fix them all before starting:\n"
            + "\n".join(error.line for error in errors),
        )

    @property
    def errors(self) -> tuple[ConfigError, ...]:
        return self._all


class _Problems:
    """Collects a section's errors so that one start-up reports them all."""

    def __init__(self) -> None:
        self._errors: list[ConfigError] = []

    def check(self, read: Callable[[], _T], fallback: _T) -> _T:
        """``read()``, or ``fallback`` after noting its ConfigError."""
        try:
            return read()
        except ConfigError as exc:
            self._errors.append(exc)
            return fallback

    def raise_if_any(self) -> None:
        if self._errors:
            raise ConfigError.together(self._errors)


@dataclass(frozen=True, slots=True)
class SimulatorSettings:
    callback_delay_seconds: float = 2.0


@dataclass(frozen=True, slots=True)
class TelegramSettings:
    token: str = field(repr=False)
    api_base_url: str  # "" for Telegram's own; else e.g. http://127.0.0.1:8081 (we add /bot)
    webhook_url: str  # "" for polling
    webhook_secret: str = field(repr=False)

    @property
    def webhook_path(self) -> str:
        return urlsplit(self.webhook_url).path or "/"


GRAPH_API_BASE_URL = "https://graph.facebook.com/v26.0"  # pinned: Meta changes behaviour by version
# Approved template names used outside WhatsApp's 24-hour window, by outbox message kind.
# Every message kind has one, so that none is lost outside the window.
DEFAULT_TEMPLATES = (
    ("payment_paid", "duka_payment_paid"),
    ("payment_failed", "duka_payment_failed"),
    ("payment_under_review", "duka_payment_under_review"),
    ("payment_unconfirmed", "duka_payment_unconfirmed"),
    ("order_resolved", "duka_order_resolved"),
    ("order_paid", "duka_order_paid"),
    ("payment_needs_review", "duka_payment_needs_review"),
    ("payment_check", "duka_payment_check"),
    ("unmatched_payment", "duka_unmatched_payment"),
    ("payment_checking", "duka_payment_checking"),
    ("payment_not_confirmed", "duka_payment_not_confirmed"),
    ("low_stock", "duka_low_stock"),
    ("order_progress", "duka_order_progress"),
    ("order_cancelled_by_shop", "duka_order_cancelled_by_shop"),
    ("order_refunded", "duka_order_refunded"),
    ("daily_summary", "duka_daily_summary"),
)


@dataclass(frozen=True, slots=True)
class WhatsAppSettings:
    access_token: str = field(repr=False)
    phone_number_id: str
    app_secret: str = field(repr=False)
    verify_token: str = field(repr=False)
    api_base_url: str  # the Graph API with its version, e.g. https://graph.facebook.com/v26.0
    webhook_path: str = "/whatsapp/webhook"
    # Approved template names used outside the 24-hour window, by message kind.
    templates: tuple[tuple[str, str], ...] = ()
    template_language: str = "en"
    # The templates' Swahili translation, for customers who chose Kiswahili (Meta keeps one
    # template name in several languages); when it is missing, the default is sent.
    template_language_sw: str = "sw"

    def template_for(self, kind: str) -> str | None:
        return dict(self.templates).get(kind)

    def template_language_for(self, language: str | None) -> str:
        return self.template_language_sw if language == "sw" else self.template_language


@dataclass(frozen=True, slots=True)
class AppConfig:
    shop_name: str
    http_host: str
    http_port: int
    database_url: str
    daraja: DarajaSettings
    reconcile: ReconcileSettings
    simulator: SimulatorSettings
    catalog: tuple[ProductSpec, ...] = ()
    catalog_file: CatalogFile | None = None  # where the catalog is read again (SIGHUP)
    handover: HandoverOptions = field(default_factory=HandoverOptions)  # pickup, delivery
    daily_summary_at: time | None = None  # Nairobi time; None: no daily summary
    shop_name_sw: str = ""  # the shop's name in Kiswahili; empty: shop_name in both
    merchant_telegram_ids: tuple[int, ...] = ()
    telegram: TelegramSettings | None = None  # None: no TELEGRAM_BOT_TOKEN, channel off
    whatsapp: WhatsAppSettings | None = None  # None: no WhatsApp settings, channel off
    merchant_whatsapp_numbers: tuple[str, ...] = ()  # 2547XXXXXXXX
    prompt_limits: PromptLimits = field(default_factory=PromptLimits)
    retention: RetentionSettings = field(default_factory=RetentionSettings)  # days kept
    callback_sources: CallbackSources = field(
        default_factory=lambda: CallbackSources(IpMode.LOG, frozenset())
    )
    chat_events_per_10_seconds: int = 20  # more from one chat: answered once, then ignored
    metrics_port: int | None = None  # DUKA_METRICS_PORT: /metrics apart; None: the main port
    metrics_token: str = field(default="", repr=False)  # DUKA_METRICS_TOKEN: bearer for /metrics
    # Where http_port and database_url came from (config.toml key or environment variable),
    # for the start-up errors found only when they are used (port taken, database down).
    http_port_key: str = "DUKA_HTTP_PORT"
    database_url_key: str = "DUKA_DATABASE_URL"
    # Seals phone numbers at rest (DUKA_DATA_KEY); see storage.sealing.
    sealer: Sealer = field(default_factory=lambda: Sealer(secrets.token_bytes(32)), repr=False)


_KNOWN_KEYS: dict[str, set[str]] = {
    "shop": {
        "name",
        "name_sw",
        "fulfilment",
        "pickup_point",
        "pickup_hours",
        "delivery_zones",
        "daily_summary_at",
    },
    "http": {"host", "port"},
    "database": {"url"},
    "mpesa": {
        "environment",
        "base_url",
        "short_code",
        "till_number",
        "callback_url",
        "c2b_confirmation_url",
        "c2b_validation_url",
        "transaction_desc",
        "request_timeout_seconds",
    },
    "reconciliation": {
        "query_after_seconds",
        "query_interval_seconds",
        "expire_after_seconds",
        "max_queries_per_second",
        "sweep_interval_seconds",
    },
    "simulator": {"callback_delay_seconds"},
    "retention": {
        "query_answers_days",
        "sent_messages_days",
        "inbound_ids_days",
        "callback_bodies_days",
    },
    "limits": {
        "prompts_per_phone_per_10_minutes",
        "prompts_per_phone_per_day",
        "prompts_per_customer_per_10_minutes",
        "chat_events_per_10_seconds",
    },
    "catalog": {"products"},
    "merchant": {"telegram_ids", "whatsapp_numbers"},
    "whatsapp": {
        "webhook_path",
        "template_language",
        "template_language_sw",
        *(f"template_{kind}" for kind, _ in DEFAULT_TEMPLATES),
    },
}
_SECRET_KEYS = {"consumer_key", "consumer_secret", "passkey"}


def load_config(
    env: Mapping[str, str] | None = None, path: Path | None = None, *, with_catalog: bool = True
) -> AppConfig:
    """Read the TOML file (``DUKA_CONFIG`` or ./config.toml; absent: defaults) and the env.

    ``with_catalog=False`` leaves the products unread: ``duka catalog import`` reports a bad
    catalog itself, every entry by line, where start-up stops at the first.
    """
    env = os.environ if env is None else env
    config_path = path or Path(env.get("DUKA_CONFIG", "") or DEFAULT_CONFIG_PATH)
    data = _read_toml(config_path, explicit=path is not None or "DUKA_CONFIG" in env)
    _reject_unknown_keys(data)
    catalog_file = _catalog_file(env, config_path)
    if not with_catalog:
        data = {section: values for section, values in data.items() if section != "catalog"}
        env = {name: value for name, value in env.items() if name != "DUKA_CATALOG"}
    return replace(_build(data, env), catalog_file=catalog_file)


def _read_toml(path: Path, *, explicit: bool) -> dict[str, Any]:
    if not path.exists():
        if explicit:
            raise ConfigError(
                "DUKA_CONFIG", f"the file {path} does not exist", "point it at a TOML file"
            )
        return {}
    try:
        with path.open("rb") as fh:
            return tomllib.load(fh)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(
            str(path), f"not valid TOML ({exc})", "correct the file's syntax"
        ) from exc


def _reject_unknown_keys(data: Mapping[str, Any]) -> None:
    for section, values in data.items():
        if section not in _KNOWN_KEYS:
            raise ConfigError(section, "unknown section", f"use one of {sorted(_KNOWN_KEYS)}")
        if not isinstance(values, dict):
            raise ConfigError(section, "must be a table", f"write it as [{section}]")
        for key in values:
            if section == "mpesa" and key in _SECRET_KEYS:
                raise ConfigError(
                    f"mpesa.{key}",
                    "secrets must not be stored in the config file",
                    f"remove it and set the environment variable MPESA_{key.upper()} instead",
                )
            if key not in _KNOWN_KEYS[section]:
                raise ConfigError(
                    f"{section}.{key}", "unknown key", f"use one of {sorted(_KNOWN_KEYS[section])}"
                )


def _build(data: Mapping[str, Any], env: Mapping[str, str]) -> AppConfig:
    shop = data.get("shop", {})
    http = data.get("http", {})
    mpesa = data.get("mpesa", {})

    shop_name = _text("shop.name", shop.get("name", "Duka Demo Shop"))
    shop_name_sw = _text("shop.name_sw", shop["name_sw"]) if "name_sw" in shop else ""
    # A message names the key the value came from: the file's, or the environment's.
    host_key = "DUKA_HTTP_HOST" if env.get("DUKA_HTTP_HOST") or "host" not in http else "http.host"
    host = _text(host_key, env.get("DUKA_HTTP_HOST") or http.get("host", "127.0.0.1"))
    port_key = "DUKA_HTTP_PORT" if env.get("DUKA_HTTP_PORT") or "port" not in http else "http.port"
    port = _port(env.get("DUKA_HTTP_PORT") or http.get("port", 8080), port_key)
    database_url = env.get("DUKA_DATABASE_URL") or data.get("database", {}).get("url") or ""
    database_key = "database.url" if database_url and not env.get("DUKA_DATABASE_URL") else ""
    database_key = database_key or "DUKA_DATABASE_URL"
    database_url = database_url or DEFAULT_DATABASE_URL
    _check_database_url(database_url, database_key)
    # Reported together: a deployment is not fixed one restart at a time.
    problems = _Problems()
    daraja = problems.check(lambda: _daraja(mpesa, env, host, port), None)
    sealer = problems.check(lambda: _sealer(env, mpesa, database_url), None)
    problems.raise_if_any()
    assert daraja is not None
    assert sealer is not None

    return AppConfig(
        shop_name=shop_name,
        shop_name_sw=shop_name_sw,
        http_host=host,
        http_port=port,
        database_url=database_url,
        http_port_key=port_key,
        database_url_key=database_key,
        catalog=tuple(_catalog(data.get("catalog", {}), env)),
        handover=_handover(shop),
        daily_summary_at=_daily_summary_at(shop),
        merchant_telegram_ids=_merchant_ids(data.get("merchant", {}), env),
        telegram=_telegram(env),
        whatsapp=_whatsapp(data.get("whatsapp", {}), env),
        merchant_whatsapp_numbers=_merchant_numbers(data.get("merchant", {}), env),
        daraja=daraja,
        sealer=sealer,
        metrics_port=_port(env["DUKA_METRICS_PORT"], "DUKA_METRICS_PORT")
        if env.get("DUKA_METRICS_PORT", "").strip()
        else None,
        metrics_token=env.get("DUKA_METRICS_TOKEN", "").strip(),
        callback_sources=_callback_sources(env),
        reconcile=_reconcile(data.get("reconciliation", {})),
        retention=_retention(data.get("retention", {})),
        prompt_limits=_prompt_limits(data.get("limits", {})),
        chat_events_per_10_seconds=_whole_number(
            "limits.chat_events_per_10_seconds",
            data.get("limits", {}).get("chat_events_per_10_seconds", 20),
        ),
        simulator=SimulatorSettings(
            callback_delay_seconds=_positive_number(
                "simulator.callback_delay_seconds",
                data.get("simulator", {}).get("callback_delay_seconds", 2.0),
                allow_zero=True,
            )
        ),
    )


def _daraja(
    mpesa: Mapping[str, Any], env: Mapping[str, str], host: str, port: int
) -> DarajaSettings:
    """The Daraja settings. Every problem in them is reported in one ConfigError, except
    a wrong MPESA_ENVIRONMENT, which the other checks depend on."""
    environment = _environment(mpesa, env)
    production = environment is DarajaEnvironment.PRODUCTION
    problems = _Problems()
    if environment is DarajaEnvironment.SIMULATOR:
        key = env.get("MPESA_CONSUMER_KEY") or SIMULATOR_CONSUMER_KEY
        secret = env.get("MPESA_CONSUMER_SECRET") or SIMULATOR_CONSUMER_SECRET
        passkey = env.get("MPESA_PASSKEY") or SANDBOX_PASSKEY
    else:
        key, secret, passkey = (
            problems.check(partial(_required_env, env, name, what), "")
            for name, what in _CREDENTIALS.items()
        )
    short_code = problems.check(lambda: _short_code(mpesa, env, production=production), "")
    till = problems.check(lambda: _till_number(mpesa, env), None)
    base_url = problems.check(lambda: _base_url(mpesa, env, environment), "")
    given_callback_url, callback_key = _mpesa_setting(
        mpesa, env, "MPESA_CALLBACK_URL", "callback_url"
    )
    callback_url = problems.check(
        lambda: _callback_url(given_callback_url, callback_key, environment, host, port),
        given_callback_url,
    )
    c2b_confirmation, c2b_validation = problems.check(
        lambda: _c2b_urls(mpesa, env, environment, callback_url), ("", "")
    )
    desc = problems.check(lambda: _transaction_desc(mpesa), "")
    timeout = problems.check(
        lambda: _positive_number(
            "mpesa.request_timeout_seconds", mpesa.get("request_timeout_seconds", 20)
        ),
        20.0,
    )
    problems.raise_if_any()
    return DarajaSettings(
        environment=environment,
        base_url=base_url,
        consumer_key=key,
        consumer_secret=secret,
        passkey=passkey,
        short_code=short_code,
        till_number=till,
        callback_url=callback_url,
        transaction_desc=desc,
        request_timeout_seconds=timeout,
        c2b_confirmation_url=c2b_confirmation,
        c2b_validation_url=c2b_validation,
    )


DATA_KEY_FILE_NAME = "duka-data.key"


def _sealer(env: Mapping[str, str], mpesa: Mapping[str, Any], database_url: str) -> Sealer:
    """The data key: ``DUKA_DATA_KEY`` (and ``DUKA_DATA_KEY_OLD`` while rotating). Required
    outside the simulator; with the simulator, one is made once and kept in a file next
    to the SQLite database (``var/`` for PostgreSQL), so a restart still reads its data."""
    try:
        sealer = Sealer.from_env(env)
    except DataKeyError as exc:
        name = "DUKA_DATA_KEY_OLD" if "_OLD" in str(exc) else "DUKA_DATA_KEY"
        raise ConfigError(name, str(exc).removeprefix(name + " "), KEYGEN_FIX) from None
    if sealer is not None:
        return sealer
    if _environment(mpesa, env) is not DarajaEnvironment.SIMULATOR:
        raise ConfigError(
            "DUKA_DATA_KEY",
            "is not set, and phone numbers are stored encrypted with it",
            KEYGEN_FIX,
        )
    key_file = _simulator_key_file(database_url)
    try:
        return Sealer(parse_key(_simulator_key(key_file)))
    except DataKeyError:
        raise ConfigError(
            str(key_file),
            "does not hold a data key",
            "set DUKA_DATA_KEY to the key it should hold, or delete the file to start the "
            "simulator's data afresh",
        ) from None


KEYGEN_FIX = (
    "run `duka keygen`, set DUKA_DATA_KEY to what it prints, and keep a copy somewhere safe "
    "(without it the stored phone numbers cannot be read)"
)


def _simulator_key_file(database_url: str) -> Path:
    url = make_url(database_url)
    directory = Path("var")
    if url.get_backend_name() == "sqlite" and url.database and url.database != ":memory:":
        directory = Path(url.database).parent
    return directory / DATA_KEY_FILE_NAME


def _simulator_key(key_file: Path) -> str:
    if key_file.exists():
        return key_file.read_text().strip()
    key_file.parent.mkdir(parents=True, exist_ok=True)
    key = generate_key()
    # Created readable by us alone, and never overwritten: it is the only copy.
    with os.fdopen(os.open(key_file, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600), "w") as fh:
        fh.write(key + "\n")
    log.warning("simulator: made a data key in %s (set DUKA_DATA_KEY to use your own)", key_file)
    return key


_CREDENTIALS = {  # required outside the simulator, in this order
    "MPESA_CONSUMER_KEY": "your app's Consumer Key (Daraja portal)",
    "MPESA_CONSUMER_SECRET": "your app's Consumer Secret",
    "MPESA_PASSKEY": "the Lipa Na M-Pesa Online passkey",
}


def _environment(mpesa: Mapping[str, Any], env: Mapping[str, str]) -> DarajaEnvironment:
    environment_text = env.get("MPESA_ENVIRONMENT") or mpesa.get("environment", "simulator")
    try:
        return DarajaEnvironment(str(environment_text).strip().lower())
    except ValueError:
        raise ConfigError(
            "MPESA_ENVIRONMENT" if env.get("MPESA_ENVIRONMENT") else "mpesa.environment",
            f"{_shown(environment_text)} is not an environment",
            "use sandbox, production or simulator",
        ) from None


def _mpesa_setting(
    mpesa: Mapping[str, Any], env: Mapping[str, str], env_name: str, toml_key: str
) -> tuple[str, str]:
    """(value, where it came from): the environment variable wins over config.toml's
    ``[mpesa]`` key; an error names the one the value was read from."""
    if env.get(env_name):
        return str(env[env_name]).strip(), env_name
    if mpesa.get(toml_key) not in (None, ""):
        return str(mpesa[toml_key]).strip(), f"mpesa.{toml_key}"
    return "", env_name


def _base_url(
    mpesa: Mapping[str, Any], env: Mapping[str, str], environment: DarajaEnvironment
) -> str:
    """The Daraja API base without a trailing slash; "" starts the embedded simulator."""
    base_url, key = _mpesa_setting(mpesa, env, "MPESA_BASE_URL", "base_url")
    if not base_url:
        return DARAJA_BASE_URLS.get(environment, "")
    _check_http_url(key, base_url)
    if environment is DarajaEnvironment.PRODUCTION and urlsplit(base_url).scheme != "https":
        raise ConfigError(
            key,
            "is not https, and production requests carry your credentials",
            f"use an https:// URL, or unset it for {DARAJA_BASE_URLS[environment]}",
        )
    return base_url.rstrip("/")


def _short_code(mpesa: Mapping[str, Any], env: Mapping[str, str], *, production: bool) -> str:
    which = "your Paybill number, or for Buy Goods your store (head office) number"
    short_code, key = _mpesa_setting(mpesa, env, "MPESA_SHORTCODE", "short_code")
    if production and not short_code:
        # The sandbox default would be accepted by nobody, with an error only at the first push.
        raise ConfigError("MPESA_SHORTCODE", "not set", f"export MPESA_SHORTCODE with {which}")
    short_code = short_code or SANDBOX_SHORT_CODE
    if not re.fullmatch(r"\d{5,7}", short_code):
        raise ConfigError(key, f'"{short_code}" is not a 5 to 7 digit short code', f"use {which}")
    if production and short_code == SANDBOX_SHORT_CODE:
        raise ConfigError(
            key,
            f"{SANDBOX_SHORT_CODE} is Safaricom's sandbox test short code, unknown in production",
            f"set MPESA_SHORTCODE (or [mpesa] short_code) to {which}",
        )
    return short_code


def _till_number(mpesa: Mapping[str, Any], env: Mapping[str, str]) -> str | None:
    """The till for Buy Goods; None (unset or empty) means Paybill."""
    till, key = _mpesa_setting(mpesa, env, "MPESA_TILL_NUMBER", "till_number")
    if till and not re.fullmatch(r"\d{5,8}", till):
        raise ConfigError(key, f'"{till}" is not a till number', "use digits only")
    return till or None


def _callback_url(url: str, key: str, environment: DarajaEnvironment, host: str, port: int) -> str:
    """The checked, normalised STK callback URL; in simulator mode a fresh one by default."""
    if url:
        return _check_callback_url(url, environment, key=key)
    if environment is not DarajaEnvironment.SIMULATOR:
        raise ConfigError(
            "MPESA_CALLBACK_URL",
            "not set",
            "set it to your public https URL ending in a long random secret, e.g. "
            f"https://shop.example.com{CALLBACK_ROUTE_PREFIX}/<secret>",
        )
    # Simulator mode: a fresh secret each run; the simulator calls back on loopback.
    callback_host = "127.0.0.1" if host in {"0.0.0.0", "::"} else host  # noqa: S104
    if ":" in callback_host:
        callback_host = f"[{callback_host}]"
    # Hex: no chance of spelling a word Safaricom rejects, such as "exe" or "cmd".
    generated = f"http://{callback_host}:{port}{CALLBACK_ROUTE_PREFIX}/{secrets.token_hex(24)}"
    return _check_callback_url(generated, environment, generated=True)


def _transaction_desc(mpesa: Mapping[str, Any]) -> str:
    desc = str(mpesa.get("transaction_desc", "Duka order"))
    if not 1 <= len(desc) <= 13:
        raise ConfigError(
            "mpesa.transaction_desc", f"{desc!r} is not 1 to 13 characters", "shorten it"
        )
    if not _TRANSACTION_DESC.fullmatch(desc):
        refused = "".join(sorted({ch for ch in desc if not _TRANSACTION_DESC.fullmatch(ch)}))
        raise ConfigError(
            "mpesa.transaction_desc",
            f"has characters Daraja may refuse ({refused!a})",
            f"use only {TRANSACTION_DESC_CHARACTERS}",
        )
    return desc


def _c2b_urls(
    mpesa: Mapping[str, Any], env: Mapping[str, str], environment: DarajaEnvironment, stk_url: str
) -> tuple[str, str]:
    """(confirmation URL, validation URL), both "" when the Paybill fallback is off. Without
    its own validation URL, validation is served under the confirmation URL + ``/validate``."""
    confirmation = env.get("MPESA_C2B_CONFIRMATION_URL") or mpesa.get("c2b_confirmation_url") or ""
    validation = env.get("MPESA_C2B_VALIDATION_URL") or mpesa.get("c2b_validation_url") or ""
    if not confirmation:
        if validation:
            raise ConfigError(
                "MPESA_C2B_VALIDATION_URL",
                "set without MPESA_C2B_CONFIRMATION_URL",
                "set the confirmation URL too (validation alone does not record payments)",
            )
        return "", ""
    confirmation = _check_callback_url(confirmation, environment, key="MPESA_C2B_CONFIRMATION_URL")
    default_validation = f"{confirmation}/validate"
    validation = validation.strip().rstrip("/") or default_validation
    if validation != default_validation:  # its own URL: it needs its own secret
        validation = _check_callback_url(validation, environment, key="MPESA_C2B_VALIDATION_URL")
    stk_prefix = urlsplit(stk_url).path.rstrip("/").rpartition("/")[0]
    for key, url in (
        ("MPESA_C2B_CONFIRMATION_URL", confirmation),
        ("MPESA_C2B_VALIDATION_URL", validation),
    ):
        if urlsplit(url).path.rstrip("/").rpartition("/")[0] == stk_prefix:
            raise ConfigError(
                key,
                "its path starts like MPESA_CALLBACK_URL's",
                f"use another path before the secret, e.g. /hooks/c2b/<secret> (STK callbacks "
                f"use {stk_prefix}/<secret>)",
            )
    if urlsplit(confirmation).path == urlsplit(validation).path:
        raise ConfigError(
            "MPESA_C2B_VALIDATION_URL",
            "is the same as MPESA_C2B_CONFIRMATION_URL",
            "give validation its own URL, or leave it unset",
        )
    confirmation_prefix = urlsplit(confirmation).path.rpartition("/")[0]
    if urlsplit(validation).path.rstrip("/").rpartition("/")[0] == confirmation_prefix:
        raise ConfigError(
            "MPESA_C2B_VALIDATION_URL",
            "its path starts like MPESA_C2B_CONFIRMATION_URL's",
            "use another path before its secret (e.g. /hooks/c2b-validation/<secret>), or "
            "leave it unset to serve validation at the confirmation URL + /validate",
        )
    return confirmation, validation


def _catalog(section: Mapping[str, Any], env: Mapping[str, str]) -> list[ProductSpec]:
    try:
        if env.get("DUKA_CATALOG"):
            return read_catalog_file(Path(env["DUKA_CATALOG"]))
        return parse_products(section.get("products", []), source="catalog.products")
    except CatalogError as exc:
        raise ConfigError(exc.key, exc.problem, exc.fix) from None


def _catalog_file(env: Mapping[str, str], config_path: Path) -> CatalogFile | None:
    """The file ``_catalog`` reads the products from (None: no file, no products)."""
    if env.get("DUKA_CATALOG"):
        return CatalogFile(Path(env["DUKA_CATALOG"]))
    return CatalogFile(config_path, "catalog.products") if config_path.exists() else None


def _list_setting(
    section: Mapping[str, Any], env: Mapping[str, str], env_name: str, toml_key: str, example: str
) -> tuple[list[Any], str]:
    """A list from a comma-separated environment variable, else from the TOML section."""
    raw: object = env.get(env_name)
    key = env_name
    if raw is None:
        raw, key = section.get(toml_key, []), f"merchant.{toml_key}"
    parts = [p.strip() for p in raw.split(",") if p.strip()] if isinstance(raw, str) else raw
    if not isinstance(parts, list):
        raise ConfigError(key, "is not a list", f"write e.g. {example}")
    return parts, key


def _merchant_ids(section: Mapping[str, Any], env: Mapping[str, str]) -> tuple[int, ...]:
    parts, key = _list_setting(
        section, env, "DUKA_MERCHANT_TELEGRAM_IDS", "telegram_ids", "12345678,87654321"
    )
    try:
        return tuple(int(p) for p in parts)
    except (TypeError, ValueError):
        raise ConfigError(
            key, f"{_shown(parts)} are not all numeric chat ids", "write e.g. 12345678,87654321"
        ) from None


def _telegram(env: Mapping[str, str]) -> TelegramSettings | None:
    token = env.get("TELEGRAM_BOT_TOKEN", "").strip()
    if not token:
        return None
    if not re.fullmatch(r"\d+:[A-Za-z0-9_-]+", token):
        raise ConfigError(
            "TELEGRAM_BOT_TOKEN", "does not look like a bot token", "copy it from @BotFather"
        )
    base_url = env.get("TELEGRAM_API_BASE_URL", "").strip().rstrip("/")
    if base_url:
        _check_http_url("TELEGRAM_API_BASE_URL", base_url)
    webhook_url = env.get("TELEGRAM_WEBHOOK_URL", "").strip()
    if webhook_url:
        _check_http_url("TELEGRAM_WEBHOOK_URL", webhook_url)
    secret = env.get("TELEGRAM_WEBHOOK_SECRET", "").strip() or secrets.token_hex(32)
    if not re.fullmatch(r"[A-Za-z0-9_-]{1,256}", secret):
        raise ConfigError(
            "TELEGRAM_WEBHOOK_SECRET",
            "has characters Telegram does not allow",
            "use A-Z a-z 0-9 _ -",
        )
    return TelegramSettings(token, base_url, webhook_url, secret)


_WHATSAPP_SECRETS = (
    "WHATSAPP_ACCESS_TOKEN",
    "WHATSAPP_PHONE_NUMBER_ID",
    "WHATSAPP_APP_SECRET",
    "WHATSAPP_VERIFY_TOKEN",
)


def _whatsapp(section: Mapping[str, Any], env: Mapping[str, str]) -> WhatsAppSettings | None:
    values = {name: env.get(name, "").strip() for name in _WHATSAPP_SECRETS}
    if not any(values.values()):
        return None  # the channel is simply off
    for name, value in values.items():
        if not value:
            raise ConfigError(
                name,
                "not set while other WHATSAPP_ settings are",
                f"set all of {', '.join(_WHATSAPP_SECRETS)}",
            )
    if not values["WHATSAPP_PHONE_NUMBER_ID"].isdigit():
        raise ConfigError(
            "WHATSAPP_PHONE_NUMBER_ID", "is not numeric", "copy the Phone number ID from Meta"
        )
    base_url = (env.get("WHATSAPP_API_BASE_URL") or GRAPH_API_BASE_URL).strip().rstrip("/")
    _check_http_url("WHATSAPP_API_BASE_URL", base_url)
    path = str(section.get("webhook_path", "/whatsapp/webhook"))
    if not path.startswith("/"):
        raise ConfigError("whatsapp.webhook_path", f"{path!r} is not a path", "start it with /")
    templates = tuple(
        (kind, _text(f"whatsapp.template_{kind}", section.get(f"template_{kind}", default)))
        for kind, default in DEFAULT_TEMPLATES
    )
    return WhatsAppSettings(
        access_token=values["WHATSAPP_ACCESS_TOKEN"],
        phone_number_id=values["WHATSAPP_PHONE_NUMBER_ID"],
        app_secret=values["WHATSAPP_APP_SECRET"],
        verify_token=values["WHATSAPP_VERIFY_TOKEN"],
        api_base_url=base_url,
        webhook_path=path,
        templates=templates,
        template_language=_text(
            "whatsapp.template_language", section.get("template_language", "en")
        ),
        template_language_sw=_text(
            "whatsapp.template_language_sw", section.get("template_language_sw", "sw")
        ),
    )


def _merchant_numbers(section: Mapping[str, Any], env: Mapping[str, str]) -> tuple[str, ...]:
    parts, key = _list_setting(
        section, env, "DUKA_MERCHANT_WHATSAPP_NUMBERS", "whatsapp_numbers", "0712345678,0722000000"
    )
    numbers = []
    for part in parts:
        try:
            numbers.append(normalize_msisdn(str(part)).msisdn)
        except InvalidPhoneNumber:
            raise ConfigError(
                key, f"{part!r} is not a Kenyan mobile number", "write e.g. 0712345678"
            ) from None
    return tuple(numbers)


def _callback_sources(env: Mapping[str, str]) -> CallbackSources:
    """``DUKA_CALLBACK_IP_MODE``, ``DUKA_CALLBACK_IPS``, ``DUKA_TRUSTED_PROXIES``,
    ``DUKA_CONFIRM_PAID``."""
    mode_text = env.get("DUKA_CALLBACK_IP_MODE", "").strip().lower() or str(IpMode.LOG)
    try:
        mode = IpMode(mode_text)
    except ValueError:
        raise ConfigError(
            "DUKA_CALLBACK_IP_MODE", f"{mode_text!r} is not a mode", "use off, log or enforce"
        ) from None
    simulator = (env.get("MPESA_ENVIRONMENT") or "simulator").strip().lower() == "simulator"
    default_ips = ",".join(LOOPBACK if simulator else SAFARICOM_CALLBACK_IPS)
    allowed = []
    for text in _comma_list(env.get("DUKA_CALLBACK_IPS") or default_ips):
        try:
            allowed.append(ipaddress.ip_address(text))
        except ValueError:
            raise ConfigError(
                "DUKA_CALLBACK_IPS",
                f"{text!r} is not an IP address",
                "list addresses, e.g. 196.201.214.200,196.201.214.206",
            ) from None
    proxies = []
    for text in _comma_list(env.get("DUKA_TRUSTED_PROXIES", "")):
        try:
            proxies.append(ipaddress.ip_network(text, strict=False))
        except ValueError:
            raise ConfigError(
                "DUKA_TRUSTED_PROXIES",
                f"{text!r} is not an address or network",
                "list your reverse proxies, e.g. 127.0.0.1,10.0.0.0/8",
            ) from None
    confirm_text = env.get("DUKA_CONFIRM_PAID", "").strip().lower() or str(ConfirmPaid.UNLISTED)
    try:
        confirm = ConfirmPaid(confirm_text)
    except ValueError:
        raise ConfigError(
            "DUKA_CONFIRM_PAID",
            f"{confirm_text!r} is not a choice",
            "use unlisted, always or never",
        ) from None
    return CallbackSources(mode, frozenset(allowed), tuple(proxies), confirm)


def _comma_list(text: str) -> list[str]:
    return [part.strip() for part in text.split(",") if part.strip()]


def _prompt_limits(section: Mapping[str, Any]) -> PromptLimits:
    defaults = PromptLimits()
    return PromptLimits(
        per_phone_short=_whole_number(
            "limits.prompts_per_phone_per_10_minutes",
            section.get("prompts_per_phone_per_10_minutes", defaults.per_phone_short),
        ),
        per_phone_day=_whole_number(
            "limits.prompts_per_phone_per_day",
            section.get("prompts_per_phone_per_day", defaults.per_phone_day),
        ),
        per_customer_short=_whole_number(
            "limits.prompts_per_customer_per_10_minutes",
            section.get("prompts_per_customer_per_10_minutes", defaults.per_customer_short),
        ),
    )


def _whole_number(key: str, value: object) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ConfigError(key, f"{_shown(value)} is not a whole number of at least 1", "use e.g. 3")
    return value


def _retention(section: Mapping[str, Any]) -> RetentionSettings:
    """``[retention]``: whole days, at least 1; see ``payments.retention``."""
    defaults = RetentionSettings()
    values = {}
    for name in sorted(_KNOWN_KEYS["retention"]):
        value = section.get(name, getattr(defaults, name))
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ConfigError(
                f"retention.{name}",
                f"{value!r} is not a whole number of days of at least 1",
                f"use e.g. {getattr(defaults, name)} (the default)",
            )
        values[name] = value
    return RetentionSettings(**values)


def _reconcile(section: Mapping[str, Any]) -> ReconcileSettings:
    defaults = ReconcileSettings()
    values = {
        name: _positive_number(f"reconciliation.{name}", section.get(name, getattr(defaults, name)))
        for name in _KNOWN_KEYS["reconciliation"]
    }
    settings = ReconcileSettings(**values)
    if settings.expire_after_seconds < settings.query_after_seconds:
        raise ConfigError(
            "reconciliation.expire_after_seconds",
            "is shorter than query_after_seconds",
            "make it at least as long (default 180 and 60)",
        )
    return settings


def _check_callback_url(
    url: str,
    environment: DarajaEnvironment,
    key: str = "MPESA_CALLBACK_URL",
    *,
    generated: bool = False,
) -> str:
    """Check a URL Daraja will call (STK callback, C2B confirmation or validation) and
    return its normalised spelling: the one to send to Daraja and to route. Every problem
    found is reported; none repeats the URL, whose path holds a secret. ``generated``: our
    own simulator URL, whose secret comes from ``secrets`` and needs no strength check."""
    url = url.strip()
    if any(ch.isspace() for ch in url):
        raise ConfigError(key, "contains a space", "remove the spaces (Daraja rejects them)")
    _check_http_url(key, url)
    try:
        url = normalize_callback_url(url)
    except ValueError:
        raise ConfigError(
            key, "its port is not a number", "write it as https://host[:port]/path"
        ) from None
    parts = urlsplit(url)
    problems: list[ConfigError] = []
    if environment is DarajaEnvironment.PRODUCTION and parts.scheme != "https":
        problems.append(
            ConfigError(key, "is not https", "production callbacks must use an https:// URL")
        )
    banned = [word for word in BANNED_CALLBACK_WORDS if word in url.lower()]
    if banned:
        problems.append(
            ConfigError(
                key,
                f"contains {banned[0]!r}, which Safaricom rejects in callback URLs",
                f"use a path like {CALLBACK_ROUTE_PREFIX}/<secret> without that word",
            )
        )
    prefix, secret = split_callback_path(url)
    if not prefix or len(secret) < MIN_CALLBACK_SECRET_LENGTH:
        problems.append(
            ConfigError(
                key,
                "its path does not end in a long random secret",
                f"end the path with at least {MIN_CALLBACK_SECRET_LENGTH} random characters, "
                f"e.g. {RANDOM_SEGMENT_COMMAND}",
            )
        )
    elif not generated and (weakness := _secret_weakness(secret)):
        problems.append(
            ConfigError(
                key,
                f"its secret (the last path segment) {weakness}",
                f"replace it with a random one of at least {MIN_CALLBACK_SECRET_BITS} bits, "
                f"e.g. {RANDOM_SEGMENT_COMMAND}",
            )
        )
    if not _URL_SAFE_PATH.fullmatch(parts.path):
        problems.append(
            ConfigError(
                key,
                "its path has characters that may be encoded differently on the way, so "
                "callbacks would not match",
                "use only letters, digits, - _ . ~ and /",
            )
        )
    if parts.query or parts.fragment:
        problems.append(
            ConfigError(key, "has a query string or fragment", "put the secret in the path only")
        )
    if problems:
        raise ConfigError.together(problems)
    if is_tunnel_host(parts.hostname or ""):
        log.warning(
            "%s points at a public tunnel (%s): Safaricom usually blocks tunnel URLs, "
            "especially in production; use your own domain",
            key,
            parts.hostname,
        )
    return url


def _secret_weakness(secret: str) -> str | None:
    """Why ``secret`` is guessable, or None. Its strength is estimated as length times
    log2 of the number of distinct characters: blind to how they were chosen, but it
    catches the secrets people type by hand."""
    distinct = len(set(secret))
    if _repeats_a_pattern(secret):
        return "repeats a short pattern"
    if distinct < MIN_CALLBACK_SECRET_DISTINCT:
        return (
            f"uses only {distinct} different characters "
            f"(at least {MIN_CALLBACK_SECRET_DISTINCT} needed)"
        )
    bits = len(secret) * math.log2(distinct)
    if bits < MIN_CALLBACK_SECRET_BITS:
        return (
            f"is too easy to guess (about {bits:.0f} bits, estimated as length x log2 of "
            f"its different characters; at least {MIN_CALLBACK_SECRET_BITS} needed)"
        )
    return None


def _repeats_a_pattern(text: str) -> bool:
    """True when ``text`` is a shorter block said at least twice ("abab", "0123401234012")."""
    border = [0] * len(text)  # Knuth-Morris-Pratt: the longest proper prefix that is a suffix
    for i in range(1, len(text)):
        k = border[i - 1]
        while k and text[i] != text[k]:
            k = border[k - 1]
        border[i] = k + 1 if text[i] == text[k] else k
    return bool(text) and 2 * (len(text) - border[-1]) <= len(text)


def _check_http_url(key: str, url: str) -> None:
    parts = urlsplit(url)
    if parts.scheme not in {"http", "https"} or not parts.hostname:
        # The value is not repeated: a callback URL carries a secret.
        raise ConfigError(key, "is not an http(s) URL", "use a full URL like https://host/path")


def _check_database_url(url: str, key: str = "DUKA_DATABASE_URL") -> None:
    if not (url.startswith("sqlite+aiosqlite://") or url.startswith("postgresql+asyncpg://")):
        raise ConfigError(
            key,
            f"{url.split('://')[0]!r} is not a supported async driver",
            "use sqlite+aiosqlite:///path/to/file.sqlite3 or postgresql+asyncpg://user@host/db",
        )


def _required_env(env: Mapping[str, str], name: str, what: str) -> str:
    value = env.get(name, "").strip()
    if not value:
        raise ConfigError(name, "not set", f"export {name} with {what}")
    return value


def _handover(shop: Mapping[str, Any]) -> HandoverOptions:
    """``[shop] fulfilment``, ``pickup_point``, ``pickup_hours`` and ``delivery_zones``."""
    ways = shop.get("fulfilment", [])
    offers: list[Handover] = []
    for way in ways if isinstance(ways, list) else [ways]:
        if way not in set(Handover) or way in offers:
            raise ConfigError(
                "shop.fulfilment",
                f"{_shown(way)} is not one of pickup, delivery (each once)",
                'use ["pickup"], ["delivery"] or ["pickup", "delivery"]',
            )
        offers.append(Handover(way))
    point = _text("shop.pickup_point", shop["pickup_point"]) if "pickup_point" in shop else ""
    hours = _text("shop.pickup_hours", shop["pickup_hours"]) if "pickup_hours" in shop else ""
    if Handover.PICKUP in offers and not point:
        raise ConfigError(
            "shop.pickup_point",
            "pickup is offered but nobody is told where",
            'set it, e.g. "Shop 12, Kenyatta Market"',
        )
    zones = _zones(shop.get("delivery_zones", []))
    if Handover.DELIVERY in offers and not zones:
        raise ConfigError(
            "shop.delivery_zones",
            "delivery is offered but no zone is set",
            'add [[shop.delivery_zones]] with name = "CBD" and fee = 100',
        )
    return HandoverOptions(tuple(offers), point, hours, zones)


def _zones(entries: object) -> tuple[Zone, ...]:
    key = "shop.delivery_zones"
    fix = 'each zone is [[shop.delivery_zones]] with name = "CBD" and fee = 100 (whole KES)'
    if not isinstance(entries, list):
        raise ConfigError(key, "is not a list of zones", fix)
    zones: list[Zone] = []
    for number, entry in enumerate(entries, start=1):
        where = f"{key}[{number}]"
        if not isinstance(entry, dict) or set(entry) != {"name", "fee"}:
            raise ConfigError(where, "needs exactly name and fee", fix)
        name = _text(f"{where}.name", entry["name"])
        if len(name) > MAX_ZONE_NAME or any(z.name == name for z in zones):
            raise ConfigError(
                f"{where}.name",
                f"{name!r} is longer than {MAX_ZONE_NAME} characters or named twice",
                "use a short name each zone has alone (it is shown on a button)",
            )
        fee = entry["fee"]
        if isinstance(fee, bool) or not isinstance(fee, int) or not 0 <= fee <= MAX_DELIVERY_FEE:
            raise ConfigError(
                f"{where}.fee",
                f"{_shown(fee)} is not whole shillings",
                f"use 0 to {MAX_DELIVERY_FEE}",
            )
        zones.append(Zone(name, fee))
    return tuple(zones)


_CLOCK_TIME = re.compile(r"([01]?\d|2[0-3]):([0-5]\d)")


def _daily_summary_at(shop: Mapping[str, Any]) -> time | None:
    """``[shop] daily_summary_at``: "HH:MM" in Nairobi time; absent, no daily summary."""
    if "daily_summary_at" not in shop:
        return None
    value = shop["daily_summary_at"]
    found = _CLOCK_TIME.fullmatch(value.strip()) if isinstance(value, str) else None
    if found is None:
        raise ConfigError(
            "shop.daily_summary_at",
            f"{value!r} is not a time of day",
            'write it as "HH:MM" in Nairobi time, e.g. "20:00", or remove it for no summary',
        )
    return time(int(found[1]), int(found[2]))


def _text(key: str, value: object) -> str:
    if not isinstance(value, str) or not value.strip():
        raise ConfigError(key, f"{_shown(value)} is not a non-empty text", "set it to a text value")
    return value.strip()


def _port(value: object, key: str = "DUKA_HTTP_PORT") -> int:
    if isinstance(value, bool) or not isinstance(value, int | str):
        raise ConfigError(key, f"{_shown(value)} is not a number", "use 1 to 65535")
    try:
        port = int(str(value))
    except ValueError:
        raise ConfigError(key, f"{_shown(value)} is not a number", "use 1 to 65535") from None
    if not 0 <= port <= 65535:
        raise ConfigError(key, f"{port} is out of range", "use 1 to 65535 (0: any free)")
    return port


def _shown(value: object) -> str:
    """A value as it is written in config.toml (or the environment), never Python's repr:
    ``"abc"``, ``["abc", 1]``, ``true``."""
    return json.dumps(value, ensure_ascii=False, default=str)


def _positive_number(key: str, value: object, *, allow_zero: bool = False) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float | str):
        raise ConfigError(
            key, f"{_shown(value)} is not a number", "use a positive number of seconds"
        )
    try:
        number = float(value)
    except ValueError:
        raise ConfigError(
            key, f"{_shown(value)} is not a number", "use a positive number"
        ) from None
    if number < 0 or (number == 0 and not allow_zero):
        raise ConfigError(key, f"{number} is not positive", "use a positive number")
    return number
