"""What Duka counts as it runs, for Prometheus (``/metrics``; see docs/operations.md).

Every count is made at a boundary (the inbox's answer to a callback, a push's outcome,
a reconciler query's answer, a dispatcher send, a chat event, a Daraja round trip) by a
``Metrics`` object passed in, never a module global: each object has a registry of its
own, so the tests can build many apps in one process. It lives here, in ``payments``,
because that is the lowest layer that counts anything; ``bot`` imports it from here.

What can be read from the database (open payments, the outbox backlog, unmatched money)
is not counted here but read when Prometheus scrapes (``bot.metrics_http``).
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager

from prometheus_client import CollectorRegistry, Counter, Histogram

from payments.settlement import EventStatus

# A callback refused (malformed, an unlisted source, a wrong attempt token, forged) is one
# outcome for the operator: none of them moved money.
_REFUSED = frozenset({EventStatus.REJECTED, EventStatus.FORGED})


class Metrics:
    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry(auto_describe=True)
        r = self.registry
        self.callbacks = Counter(
            "duka_callbacks",
            "STK callbacks taken in, by what storing them did",
            ["outcome"],
            registry=r,
        )
        self.stk_pushes = Counter(
            "duka_stk_pushes", "STK pushes sent, by Daraja's answer", ["outcome"], registry=r
        )
        self.stk_queries = Counter(
            "duka_stk_queries", "STK status queries made, by the answer", ["outcome"], registry=r
        )
        self.outbox_sent = Counter(
            "duka_outbox_sent", "Outbox messages a platform accepted", ["channel"], registry=r
        )
        self.outbox_failed = Counter(
            "duka_outbox_failed",
            "Outbox messages given up on for good",
            ["channel", "reason"],
            registry=r,
        )
        self.chat_events = Counter(
            "duka_chat_events",
            "Customer chat events answered (not a flood's dropped ones)",
            ["channel"],
            registry=r,
        )
        self.chat_event_seconds = Histogram(
            "duka_chat_event_seconds",
            "From a chat event in to its replies sent (the STK push's wait not included)",
            ["channel"],
            registry=r,
        )
        self.daraja_request_seconds = Histogram(
            "duka_daraja_request_seconds",
            "Daraja HTTP round trips, by endpoint",
            ["endpoint"],
            buckets=(0.1, 0.25, 0.5, 1, 2, 5, 10, 20, 30, 60),
            registry=r,
        )

    def callback(self, status: EventStatus) -> None:
        self.callbacks.labels("refused" if status in _REFUSED else str(status)).inc()

    def push(self, outcome: str) -> None:
        """``accepted``, ``refused`` (nothing was sent) or ``unknown`` (may have been)."""
        self.stk_pushes.labels(outcome).inc()

    def query(self, outcome: str) -> None:
        """``succeeded``, ``failed`` (M-Pesa's answer), ``pending``, ``error`` (no answer)."""
        self.stk_queries.labels(outcome).inc()

    def sent(self, channel: str) -> None:
        self.outbox_sent.labels(channel).inc()

    def failed(self, channel: str, reason: str) -> None:
        self.outbox_failed.labels(channel or "none", reason).inc()

    @contextmanager
    def chat_event(self, channel: str) -> Iterator[None]:
        self.chat_events.labels(channel).inc()
        started = time.perf_counter()
        try:
            yield
        finally:
            self.chat_event_seconds.labels(channel).observe(time.perf_counter() - started)

    @contextmanager
    def daraja_request(self, endpoint: str) -> Iterator[None]:
        """Times one round trip, answered or not (a timeout is a long one)."""
        started = time.perf_counter()
        try:
            yield
        finally:
            self.daraja_request_seconds.labels(endpoint).observe(time.perf_counter() - started)
