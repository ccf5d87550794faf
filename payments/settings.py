"""Typed settings of the payments package; ``bot.config`` fills them in."""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum
from urllib.parse import urlsplit, urlunsplit


class DarajaEnvironment(StrEnum):
    SANDBOX = "sandbox"
    PRODUCTION = "production"
    SIMULATOR = "simulator"


DARAJA_BASE_URLS = {
    DarajaEnvironment.SANDBOX: "https://sandbox.safaricom.co.ke",
    DarajaEnvironment.PRODUCTION: "https://api.safaricom.co.ke",
}

# Safaricom's gateway refuses callback URLs containing these, in any letter case (daraja.md §2.3).
BANNED_CALLBACK_WORDS = ("m-pesa", "mpesa", "safaricom", "exec", "exe", "cmd", "sql", "query")
# Public tunnels: Safaricom "usually blocks" them, especially in production (daraja.md §2.3).
TUNNEL_HOSTS = (
    "ngrok.io",
    "ngrok-free.app",
    "ngrok.app",
    "trycloudflare.com",
    "loca.lt",
    "localtunnel.me",
    "serveo.net",
)
_DEFAULT_PORTS = {"http": 80, "https": 443}


def normalize_callback_url(url: str) -> str:
    """The one spelling of a callback URL, both sent to Daraja and routed by our server:
    lower-case scheme and host, no default port, no trailing slash. The path keeps its
    case (the secret is in it). Raises ``ValueError`` when the port is not a number."""
    parts = urlsplit(url.strip())
    scheme = parts.scheme.lower()
    host = parts.hostname or ""  # urlsplit lower-cases it and drops IPv6 brackets
    if ":" in host:
        host = f"[{host}]"
    port = parts.port
    netloc = host if port is None or port == _DEFAULT_PORTS.get(scheme) else f"{host}:{port}"
    userinfo, at, _ = parts.netloc.rpartition("@")
    if at:
        netloc = f"{userinfo}@{netloc}"
    return urlunsplit((scheme, netloc, parts.path.rstrip("/"), parts.query, parts.fragment))


def split_callback_path(url: str) -> tuple[str, str]:
    """(route prefix, secret) of a callback URL: the secret is its last path segment."""
    prefix, _, secret = urlsplit(url).path.rpartition("/")
    return prefix, secret


def is_tunnel_host(host: str) -> bool:
    host = host.lower().rstrip(".")
    return any(host == tunnel or host.endswith(f".{tunnel}") for tunnel in TUNNEL_HOSTS)


@dataclass(frozen=True, slots=True)
class DarajaSettings:
    environment: DarajaEnvironment
    base_url: str  # empty: start the embedded simulator (simulator environment only)
    consumer_key: str = field(repr=False)
    consumer_secret: str = field(repr=False)
    passkey: str = field(repr=False)
    short_code: str  # Paybill number, or for Buy Goods the store (head office) number
    till_number: str | None
    callback_url: str = field(repr=False)  # its path holds the secret
    transaction_desc: str = "Duka order"
    request_timeout_seconds: float = 20.0
    # C2B (Paybill by hand): full public URLs ending in their own secrets; "" when off.
    c2b_confirmation_url: str = field(default="", repr=False)
    c2b_validation_url: str = field(default="", repr=False)

    @property
    def paybill_fallback(self) -> str | None:
        """The Paybill number customers may pay by hand, when that fallback is on. A till
        has no account number to name the order by, so Buy Goods never offers it."""
        if self.c2b_confirmation_url and not self.is_buy_goods:
            return self.short_code
        return None

    @property
    def is_buy_goods(self) -> bool:
        return self.till_number is not None

    @property
    def transaction_type(self) -> str:
        return "CustomerBuyGoodsOnline" if self.is_buy_goods else "CustomerPayBillOnline"

    @property
    def party_b(self) -> str:
        # Buy Goods: PartyB is the till while BusinessShortCode (and the password) use the store.
        return self.till_number if self.till_number is not None else self.short_code

    @property
    def callback_path(self) -> str:
        return urlsplit(self.callback_url).path


@dataclass(frozen=True, slots=True)
class ReconcileSettings:
    query_after_seconds: float = 60.0  # a pending attempt is first queried this long after the push
    query_interval_seconds: float = 15.0  # then again at most this often
    expire_after_seconds: float = 180.0  # after this, one last query, then EXPIRED
    max_queries_per_second: float = 2.0  # Daraja publishes no TPS; stay far from Spike Arrest
    sweep_interval_seconds: float = 5.0
