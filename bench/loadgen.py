"""Load generator for ``bench.callbacks``: closed-loop HTTP/1.1 POSTs over keep-alive sockets.

It runs as its own process (``python -m bench.loadgen ...``), started by
``bench.callbacks``, so that building requests and parsing responses never competes
with the server for the server's event loop. It prints one JSON object on stdout.

The client speaks HTTP/1.1 directly over ``asyncio`` streams instead of using
``aiohttp.ClientSession``: on a 2-core machine the client's own CPU cost would
otherwise cap the floor measurement, and the request shape here is fixed and simple
(one POST with Content-Length, a response with Content-Length, keep-alive).

This module also owns the callback bodies and the order totals, so the server side
(which seeds matching payments) and this client agree on them by construction.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import math
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from urllib.parse import urlsplit

from payments.callback_urls import attempt_callback_url

MSISDN = "254712345678"
# Seeded payments come in two groups: a few for warm-up, then the measured ones.
WARMUP_GROUP = "warm"
MEASURED_GROUP = "bench"
_RECEIPT_PREFIX = {WARMUP_GROUP: "WRM", MEASURED_GROUP: "BEN"}
REQUEST_TIMEOUT_SECONDS = 30.0
MEASURE_START = "measure-start"
MEASURE_END = "measure-end"


def order_total(index: int) -> int:
    """Whole KES; varied a little so amounts are not all identical."""
    return 100 + (index % 40) * 25


def checkout_request_id(group: str, index: int) -> str:
    return f"ws_CO_{group}_{index:06d}"


def callback_body(group: str, index: int) -> bytes:
    """A successful STK callback in Daraja's real shape for seeded payment ``index``.

    Written as text rather than ``json.dumps`` so ``Amount`` keeps Daraja's two
    decimals (``350.00``) and the receipt is exactly 10 characters.
    """
    receipt = f"{_RECEIPT_PREFIX[group]}{index:07d}"
    return (
        '{"Body":{"stkCallback":{'
        f'"MerchantRequestID":"29115-34620561-{index}",'
        f'"CheckoutRequestID":"{checkout_request_id(group, index)}",'
        '"ResultCode":0,"ResultDesc":"The service request is processed successfully.",'
        '"CallbackMetadata":{"Item":['
        f'{{"Name":"Amount","Value":{order_total(index)}.00}},'
        f'{{"Name":"MpesaReceiptNumber","Value":"{receipt}"}},'
        '{"Name":"Balance"},'
        '{"Name":"TransactionDate","Value":20261126102115},'
        f'{{"Name":"PhoneNumber","Value":{MSISDN}}}'
        "]}}}}"
    ).encode()


def bodies(group: str, count: int) -> list[bytes]:
    return [callback_body(group, i) for i in range(1, count + 1)]


def attempt_paths(url: str, first_id: int, count: int) -> list[str]:
    """Each callback goes to its own attempt's URL, as Duka sends it in the push (the
    seeded payment ids run from 1: the warm-up's, then the measured ones)."""
    return [
        urlsplit(attempt_callback_url(url, payment_id)).path
        for payment_id in range(first_id, first_id + count)
    ]


@dataclass
class Outcome:
    """What the measured phase saw; latencies are seconds, in completion order."""

    latencies: list[float] = field(default_factory=list)
    errors: int = 0
    error_samples: list[str] = field(default_factory=list)

    def error(self, what: str) -> None:
        self.errors += 1
        if len(self.error_samples) < 5:
            self.error_samples.append(what)


class _Connection:
    """One keep-alive HTTP/1.1 connection, reopened if the server closes it."""

    def __init__(self, host: str, port: int) -> None:
        self.host, self.port = host, port
        self._reader: asyncio.StreamReader | None = None
        self._writer: asyncio.StreamWriter | None = None

    async def post(self, head: bytes, body: bytes) -> tuple[int, bytes, bool]:
        """Send one request; (status, response body, server asked to close)."""
        if self._writer is None:
            self._reader, self._writer = await asyncio.open_connection(self.host, self.port)
        assert self._reader is not None
        # One write per request: head and body in the same segment (no Nagle stall).
        self._writer.write(head + body)
        response_head = await self._reader.readuntil(b"\r\n\r\n")
        lines = response_head.decode("latin-1").split("\r\n")
        status = int(lines[0].split(" ", 2)[1])
        headers = {
            name.strip().lower(): value.strip()
            for name, _, value in (line.partition(":") for line in lines[1:] if line)
        }
        if "content-length" not in headers:
            raise RuntimeError(f"response without Content-Length (status {status})")
        payload = await self._reader.readexactly(int(headers["content-length"]))
        closing = headers.get("connection", "").lower() == "close"
        if closing:
            await self.close()
        return status, payload, closing

    async def close(self) -> None:
        if self._writer is not None:
            self._writer.close()
            with contextlib.suppress(OSError):
                await self._writer.wait_closed()
        self._reader = self._writer = None


def _request_head(host: str, port: int, path: str, length: int) -> bytes:
    return (
        f"POST {path} HTTP/1.1\r\nHost: {host}:{port}\r\n"
        f"Content-Type: application/json\r\nContent-Length: {length}\r\n\r\n"
    ).encode()


async def _worker(
    connection: _Connection, work: Iterator[tuple[str, bytes]], outcome: Outcome
) -> None:
    # Work comes from one shared iterator (safe: one event loop thread), so a slow
    # connection takes fewer bodies instead of leaving the others idle at the end.
    for path, body in work:
        head = _request_head(connection.host, connection.port, path, len(body))
        started = time.perf_counter()
        try:
            status, payload, _ = await asyncio.wait_for(
                connection.post(head, body), REQUEST_TIMEOUT_SECONDS
            )
        except (TimeoutError, OSError, asyncio.IncompleteReadError, RuntimeError) as exc:
            outcome.error(f"{type(exc).__name__}: {exc}")
            await connection.close()  # the stream state is unknown: start afresh
            continue
        outcome.latencies.append(time.perf_counter() - started)
        if status != 200:
            outcome.error(f"HTTP {status}: {payload[:120]!r}")
            continue
        try:
            result_code = json.loads(payload).get("ResultCode")
        except ValueError:
            result_code = None
        if result_code != 0:
            outcome.error(f"ResultCode {result_code!r}: {payload[:120]!r}")


async def _phase(
    connections: list[_Connection], work: list[tuple[str, bytes]]
) -> tuple[Outcome, float]:
    outcome = Outcome()
    shared = iter(work)
    started = time.perf_counter()
    await asyncio.gather(*(_worker(c, shared, outcome) for c in connections))
    return outcome, time.perf_counter() - started


def _marker(text: str) -> None:
    sys.stdout.write(text + "\n")
    sys.stdout.flush()


def percentile(sorted_values: list[float], q: float) -> float:
    """Nearest-rank percentile (q in 0..100) of already sorted values."""
    if not sorted_values:
        return math.nan
    rank = max(1, math.ceil(q / 100 * len(sorted_values)))
    return sorted_values[rank - 1]


async def run(url: str, count: int, warmup: int, concurrency: int) -> dict[str, object]:
    parts = urlsplit(url)
    host, port = parts.hostname or "127.0.0.1", parts.port or 80
    connections = [_Connection(host, port) for _ in range(concurrency)]
    try:
        # Warm-up on the same connections: opens the sockets, fills caches and
        # SQLAlchemy's statement cache, so the measured phase is steady state.
        warm_work = zip(attempt_paths(url, 1, warmup), bodies(WARMUP_GROUP, warmup), strict=True)
        warm, _ = await _phase(connections, list(warm_work))
        paths = attempt_paths(url, warmup + 1, count)
        work = list(zip(paths, bodies(MEASURED_GROUP, count), strict=True))
        # Markers on stdout let the parent time its own (server) side of this phase.
        _marker(MEASURE_START)
        cpu_before = time.process_time()
        measured, wall = await _phase(connections, work)
        cpu = time.process_time() - cpu_before
        _marker(MEASURE_END)
    finally:
        await asyncio.gather(*(c.close() for c in connections))
    return {"concurrency": concurrency, **summary(count, measured, warm, wall, cpu)}


def summary(
    count: int, measured: Outcome, warm: Outcome, wall: float, cpu: float
) -> dict[str, object]:
    """The measured phase's figures, as both load generators print them."""
    latencies = sorted(measured.latencies)
    return {
        "count": count,
        "wall_seconds": wall,
        "rate": count / wall if wall else math.nan,
        "p50_ms": percentile(latencies, 50) * 1000,
        "p99_ms": percentile(latencies, 99) * 1000,
        "max_ms": (latencies[-1] if latencies else math.nan) * 1000,
        "mean_ms": (sum(latencies) / len(latencies) if latencies else math.nan) * 1000,
        # Our own CPU share: near 100% would mean the client, not the server, is the limit.
        "client_cpu_seconds": cpu,
        "client_wall_seconds": wall,
        "errors": measured.errors,
        "error_samples": measured.error_samples,
        "warmup_errors": warm.errors,
        "warmup_error_samples": warm.error_samples,
    }


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--url", required=True, help="the callback URL to POST to")
    parser.add_argument("--n", type=int, required=True, help="measured callbacks")
    parser.add_argument("--warmup", type=int, default=200, help="warm-up callbacks first")
    parser.add_argument("--concurrency", type=int, default=50, help="keep-alive connections")
    args = parser.parse_args(argv)
    result = asyncio.run(run(args.url, args.n, args.warmup, args.concurrency))
    json.dump(result, sys.stdout)
    sys.stdout.write("\n")


if __name__ == "__main__":
    main()
