"""Where a callback came from, and whether that is one of Safaricom's addresses.

One layer among several (per-attempt URLs are the main one): Safaricom's egress addresses
can change, so the default mode only logs unlisted sources; ``enforce`` refuses them once
the merchant has seen real callbacks pass. Behind a reverse proxy the peer is the proxy:
``X-Forwarded-For`` is believed only when the peer is one of our trusted proxies, so a
forged header from anyone else is ignored.
"""

from __future__ import annotations

import functools
import ipaddress
import logging
from dataclasses import dataclass
from enum import StrEnum
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from aiohttp import web

log = logging.getLogger(__name__)

IpAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IpNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network

# Safaricom's published callback source addresses (daraja.md §6.1).
SAFARICOM_CALLBACK_IPS = (
    "196.201.214.200",
    "196.201.214.206",
    "196.201.213.114",
    "196.201.214.207",
    "196.201.214.208",
    "196.201.213.44",
    "196.201.212.127",
    "196.201.212.138",
    "196.201.212.129",
    "196.201.212.136",
    "196.201.212.74",
    "196.201.212.69",
)
LOOPBACK = ("127.0.0.1", "::1")  # the built-in simulator calls back from here


class IpMode(StrEnum):
    OFF = "off"  # not even logged
    LOG = "log"  # unlisted sources are logged, and accepted
    ENFORCE = "enforce"  # unlisted sources get 403 (the body is kept)


class ConfirmPaid(StrEnum):
    """Which success callbacks wait for an STK query to confirm them (``DUKA_CONFIRM_PAID``)."""

    UNLISTED = "unlisted"  # those from an address not on the list
    ALWAYS = "always"  # every one: a callback alone never pays an order
    NEVER = "never"  # none: the callback is believed (the per-attempt URL still guards it)


@dataclass(frozen=True, slots=True)
class CallbackSources:
    mode: IpMode
    allowed: frozenset[IpAddress]
    trusted_proxies: tuple[IpNetwork, ...] = ()
    confirm_paid: ConfirmPaid = ConfirmPaid.UNLISTED

    def source_of(self, peer: str | None, forwarded_for: str | None) -> str | None:
        """The sender's address: the peer itself, unless the peer is a trusted proxy; then
        the right-most ``X-Forwarded-For`` hop that is not a trusted proxy too."""
        if peer is None:
            return None
        if not forwarded_for or not self._trusted(peer):
            return peer
        for hop in reversed([h.strip() for h in forwarded_for.split(",")]):
            if not self._trusted(hop):
                return hop if _address(hop) is not None else None
        return peer  # every hop is ours

    def sender(self, request: web.Request) -> str | None:
        """``source_of`` for an aiohttp request."""
        return self.source_of(request.remote, request.headers.get("X-Forwarded-For"))

    def admits(self, source: str | None, what: str) -> bool:
        """False only in ``enforce`` for an unlisted source; ``log`` lets it in, and says
        so (``what``: "callback", "C2B confirmation"...)."""
        if self.mode is IpMode.OFF or self.listed(source):
            return True
        if self.mode is IpMode.ENFORCE:
            return False
        log.warning("a %s came from %s, not a listed address", what, source)
        return True

    def listed(self, source: str | None) -> bool:
        address = _address(source) if source else None
        return address is not None and address in self.allowed

    def needs_confirmation(self, source: str | None) -> bool:
        """Whether a success callback from ``source`` waits for an STK query to confirm it.
        Independent of ``mode``: in ``log`` (or ``off``) an unlisted sender is let in, but
        its word alone does not pay an order."""
        if self.confirm_paid is ConfirmPaid.UNLISTED:
            return not self.listed(source)
        return self.confirm_paid is ConfirmPaid.ALWAYS

    def _trusted(self, text: str) -> bool:
        address = _address(text)
        return address is not None and any(address in net for net in self.trusted_proxies)


@functools.lru_cache(maxsize=1024)  # the same few senders, on every callback
def _address(text: str) -> IpAddress | None:
    try:
        return ipaddress.ip_address(text.strip())
    except ValueError:
        return None
