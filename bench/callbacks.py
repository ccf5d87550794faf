"""Benchmark: Daraja STK callbacks over real HTTP into Duka on SQLite, against a floor.

Run from the project root::

    .venv/bin/python -m bench.callbacks --n 5000 [--rounds 3] [--profile]

Method
------
Two servers are measured in the same run, alternately (floor, Duka, floor, Duka, ...),
each on a fresh SQLite file in WAL mode with ``synchronous=FULL``:

* **floor**: a bare aiohttp handler that reads the body, ``json.loads`` it, INSERTs
  (checkout_request_id, raw) into one table through one shared aiosqlite connection and
  commits, then answers ``{"ResultCode":0,"ResultDesc":"Accepted"}``. It is the least a
  durable callback endpoint can do in this stack, so it bounds what Duka can reach.
* **duka**: the real application (``bot.app.build_app``), seeded with pending payments
  (one per callback, plus the warm-up ones) so that every callback does the real work:
  store the raw body, payment -> paid, order -> paid, two outbox rows, one transaction
  shared by whatever callbacks are queued (the inbox's group commit).

The servers run in this process's event loop, as in production. The load comes from a
separate process (``bench.loadgen``) so it never competes for that loop: 50 keep-alive
connections in a closed loop (each sends its next request when the previous answer
arrives), first ``--warmup`` callbacks that are not measured, then ``--n`` measured ones.
Throughput is n / wall time of the measured phase; latency is per request, from write to
last response byte, as the client saw it. Any non-200 answer or ResultCode != 0 is an
error, and a run with errors, or whose database check fails, is reported as FAILED.

The floor's one shared connection lets statements of concurrent requests interleave in
aiosqlite's queue, so one COMMIT often covers several INSERTs: a naive handler gets some
group commit for free. That makes the floor a demanding one, which is the point.

In a closed loop, mean latency = connections / throughput (Little's law): at 50
connections, 1000 callbacks/s means 50 ms on average. The two targets (ratio >= 0.5,
Duka p99 <= 50 ms) are therefore two views of the same per-callback cost.

After each Duka run the database is checked: all n measured payments and orders paid,
2n outbox rows for their orders, n + warm-up events applied. A light wrapper around the
inbox's batch method on the running instance (Duka's code is not changed) reports how
many callbacks each group commit carried and how busy the single writer was. The "cpu"
columns are each process's CPU time over the measured phase's wall time (100% = one
core); the server's includes aiosqlite's thread.

``--profile`` adds one extra Duka run, not part of the figures: cProfile on the
event-loop thread (grouped by library, then the top functions), SQLite calls timed by
name on aiosqlite's thread (cProfile cannot see them there), and wall time per SQL
statement kind as SQLAlchemy issued it.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import cProfile
import io
import json
import math
import os
import pstats
import socket
import sqlite3
import statistics
import sys
import tempfile
import threading
import time
from collections import defaultdict
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import aiosqlite
import aiosqlite.core
from aiohttp import web
from sqlalchemy import event, func, insert, select
from sqlalchemy.ext.asyncio import AsyncEngine

from bench import loadgen
from bot.app import ENGINE, build_app
from bot.config import load_config
from payments.inbox import CallbackInbox
from payments.webhook import INBOX
from storage.schema import customers, order_items, orders, outbox, payment_events, payments

PROJECT_ROOT = Path(__file__).resolve().parent.parent
CONCURRENCY = 50
DEFAULT_N = 5000
DEFAULT_ROUNDS = 3
DEFAULT_WARMUP = 200
TARGET_RATIO = 0.5
TARGET_P99_MS = 50.0
# A fixed secret (>= 24 chars) free of the words Safaricom rejects in callback URLs.
CALLBACK_SECRET = "bench-callback-secret-0123456789abcdefgh"
ACCEPTED = {"ResultCode": 0, "ResultDesc": "Accepted"}
SEED_CHUNK = 2500  # rows per seeding transaction: a few big transactions, not thousands


# --------------------------------------------------------------------------- results


@dataclass
class RunResult:
    kind: str  # "floor" | "duka"
    rate: float
    p50_ms: float
    p99_ms: float
    max_ms: float
    errors: int
    error_samples: list[str]
    check_ok: bool
    check: str
    server_cpu: float  # CPU seconds of this (server) process / wall seconds of the load
    client_cpu: float  # the same for the load generator process
    notes: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return self.errors == 0 and self.check_ok

    def line(self) -> str:
        status = "" if self.ok else "  ** FAILED **"
        return (
            f"{self.kind:5}  {self.rate:8.0f} cb/s  p50 {self.p50_ms:6.1f} ms  "
            f"p99 {self.p99_ms:6.1f} ms  max {self.max_ms:6.1f} ms  errors {self.errors}  "
            f"cpu server {self.server_cpu:4.0%} client {self.client_cpu:4.0%}{status}"
        )


# --------------------------------------------------------------------------- load


def _listening_socket() -> socket.socket:
    """A socket bound up front, so the callback URL can name its port before start-up."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    return sock


async def _drive(
    url: str,
    n: int,
    warmup: int,
    on_start: Callable[[], None] = lambda: None,
    on_end: Callable[[], None] = lambda: None,
) -> tuple[dict[str, Any], float]:
    """Run the load generator process; its JSON summary and this process's CPU share.

    The load generator prints a marker line when its measured phase starts and ends,
    so the server's CPU (the server shares this process) and an optional profiler
    cover exactly that phase. The markers arrive within a loop iteration or so.
    """
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "bench.loadgen",
        "--url", url, "--n", str(n), "--warmup", str(warmup),
        "--concurrency", str(CONCURRENCY),
        cwd=PROJECT_ROOT,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    assert proc.stdout is not None
    assert proc.stderr is not None
    stderr_task = asyncio.create_task(proc.stderr.read())
    cpu_start = wall_start = cpu_end = wall_end = 0.0
    output: list[bytes] = []
    while line := await proc.stdout.readline():
        marker = line.decode().strip()
        if marker == loadgen.MEASURE_START:
            cpu_start, wall_start = time.process_time(), time.perf_counter()
            on_start()
        elif marker == loadgen.MEASURE_END:
            on_end()
            cpu_end, wall_end = time.process_time(), time.perf_counter()
        else:
            output.append(line)
    stderr = await stderr_task
    if await proc.wait() != 0 or not output:
        raise RuntimeError(f"load generator failed ({proc.returncode}):\n{stderr.decode()}")
    summary: dict[str, Any] = json.loads(b"".join(output))
    if summary["warmup_errors"]:
        summary["errors"] += summary["warmup_errors"]
        summary["error_samples"] += ["(warm-up) " + s for s in summary["warmup_error_samples"]]
    server_cpu = (cpu_end - cpu_start) / (wall_end - wall_start) if wall_end else math.nan
    return summary, server_cpu


def _result(kind: str, summary: dict[str, Any], server_cpu: float) -> RunResult:
    return RunResult(
        kind=kind,
        rate=summary["rate"],
        p50_ms=summary["p50_ms"],
        p99_ms=summary["p99_ms"],
        max_ms=summary["max_ms"],
        errors=summary["errors"],
        error_samples=summary["error_samples"],
        check_ok=False,
        check="not checked",
        server_cpu=server_cpu,
        client_cpu=summary["client_cpu_seconds"] / summary["client_wall_seconds"],
    )


# --------------------------------------------------------------------------- floor


def _floor_app(db: aiosqlite.Connection) -> web.Application:
    async def receive(request: web.Request) -> web.Response:
        body = await request.read()
        document = json.loads(body)
        checkout_id = document["Body"]["stkCallback"]["CheckoutRequestID"]
        # Naive on purpose: INSERT then commit per request on one shared connection.
        # (With 50 requests in flight their statements interleave in aiosqlite's queue,
        # so one COMMIT often covers several INSERTs: a free, accidental group commit.)
        await db.execute(
            "INSERT INTO callbacks (checkout_request_id, raw) VALUES (?, ?)",
            (checkout_id, body.decode()),
        )
        await db.commit()
        return web.json_response(ACCEPTED)

    app = web.Application()
    app.router.add_post("/hooks/stk/{token}/{attempt}/{attempt_token}", receive)
    return app


async def run_floor(workdir: Path, n: int, warmup: int) -> RunResult:
    path = workdir / "floor.sqlite3"
    db = await aiosqlite.connect(path)
    try:
        # The same durability as Duka (storage/engine.py): WAL, fsync at every commit.
        await db.execute("PRAGMA journal_mode=WAL")
        await db.execute("PRAGMA synchronous=FULL")
        await db.execute(
            "CREATE TABLE callbacks (id INTEGER PRIMARY KEY, "
            "checkout_request_id TEXT NOT NULL, raw TEXT NOT NULL)"
        )
        await db.commit()
        sock = _listening_socket()
        runner = web.AppRunner(_floor_app(db), shutdown_timeout=2)
        await runner.setup()
        try:
            await web.SockSite(runner, sock).start()
            port = sock.getsockname()[1]
            summary, server_cpu = await _drive(
                f"http://127.0.0.1:{port}/hooks/stk/{CALLBACK_SECRET}", n, warmup
            )
        finally:
            await runner.cleanup()
            sock.close()
        result = _result("floor", summary, server_cpu)
        async with db.execute("SELECT count(*) FROM callbacks") as cursor:
            row = await cursor.fetchone()
        stored = row[0] if row else 0
        result.check_ok = stored == n + warmup
        result.check = f"{stored}/{n + warmup} rows stored (n + warm-up)"
        return result
    finally:
        await db.close()


# --------------------------------------------------------------------------- duka


@contextlib.asynccontextmanager
async def running_duka(workdir: Path) -> AsyncIterator[tuple[web.Application, str]]:
    """Duka built as in production (reconciler off), on a fresh SQLite file."""
    sock = _listening_socket()
    port = sock.getsockname()[1]
    config_file = workdir / "config.toml"
    config_file.write_text('[shop]\nname = "Bench Duka"\n')
    callback_url = f"http://127.0.0.1:{port}/hooks/stk/{CALLBACK_SECRET}"
    config = load_config(
        env={
            "DUKA_DATABASE_URL": f"sqlite+aiosqlite:///{workdir / 'duka.sqlite3'}",
            "DUKA_HTTP_PORT": str(port),
            "MPESA_ENVIRONMENT": "simulator",
            "MPESA_CALLBACK_URL": callback_url,
        },
        path=config_file,
    )
    # The callback path only: delivering the queued messages is the dispatcher's work,
    # paced by Telegram/WhatsApp in production, and measured by neither side here.
    app = build_app(config, run_reconciler=False, run_dispatcher=False)
    runner = web.AppRunner(app, shutdown_timeout=2)
    await runner.setup()  # runs the cleanup contexts: migration, simulator, inbox
    try:
        await web.SockSite(runner, sock).start()
        yield app, callback_url
    finally:
        await runner.cleanup()
        sock.close()


def _seed_rows(group: str, count: int, first_id: int, now: datetime) -> Iterator[SeedRow]:
    """(customer, order, item, payment) rows for ``count`` pending payments of ``group``."""
    for index in range(1, count + 1):
        row_id = first_id + index - 1
        total = loadgen.order_total(index)
        yield (
            {"id": row_id, "channel": "terminal", "chat_id": f"bench-{row_id}",
             "name": "Bench Customer", "created_at": now},
            {"id": row_id, "reference": f"BN-{row_id:07d}", "customer_id": row_id,
             "status": "awaiting_payment", "total": total, "created_at": now,
             "updated_at": now},
            {"order_id": row_id, "sku": "bench-item", "name": "Bench item",
             "unit_price": total, "quantity": 1},
            {"id": row_id, "order_id": row_id, "status": "pending",
             "msisdn": loadgen.MSISDN, "amount": total,
             "checkout_request_id": loadgen.checkout_request_id(group, index),
             "merchant_request_id": f"29115-34620561-{index}", "created_at": now,
             "updated_at": now, "push_accepted_at": now,
             "next_query_at": now + timedelta(minutes=1), "own_callback_url": True},
        )  # fmt: skip


SeedRow = tuple[dict[str, Any], dict[str, Any], dict[str, Any], dict[str, Any]]


async def insert_seed_rows(engine: AsyncEngine, rows: list[SeedRow]) -> None:
    """(customer, order, item, payment) rows from ``_seed_rows``, a few large transactions."""
    for start in range(0, len(rows), SEED_CHUNK):
        chunk = rows[start : start + SEED_CHUNK]
        async with engine.begin() as conn:
            for position, table in enumerate((customers, orders, order_items, payments)):
                await conn.execute(insert(table), [r[position] for r in chunk])


async def seed(engine: AsyncEngine, database: Path, n: int, warmup: int) -> None:
    """Pending payments for the warm-up callbacks (ids 1..warmup), then the measured ones."""
    now = datetime.now(UTC)
    rows = [
        *_seed_rows(loadgen.WARMUP_GROUP, warmup, 1, now),
        *_seed_rows(loadgen.MEASURED_GROUP, n, warmup + 1, now),
    ]
    await insert_seed_rows(engine, rows)
    # Fold the seeding into the main file so both servers start with a near-empty WAL.
    with contextlib.closing(sqlite3.connect(database, isolation_level=None)) as raw:
        raw.execute("PRAGMA wal_checkpoint(TRUNCATE)")


async def check_duka(engine: AsyncEngine, n: int, warmup: int) -> tuple[bool, str]:
    """All measured payments and orders paid, 2n outbox rows for their orders."""
    measured = payments.c.id > warmup  # seeded after the warm-up's (CheckoutRequestIDs are sealed)
    measured_orders = select(payments.c.order_id).where(measured)
    async with engine.connect() as conn:
        paid = await conn.scalar(
            select(func.count()).select_from(payments).where(measured, payments.c.status == "paid")
        )
        orders_paid = await conn.scalar(
            select(func.count())
            .select_from(orders)
            .where(orders.c.id.in_(measured_orders), orders.c.status == "paid")
        )
        messages = await conn.scalar(
            select(func.count()).select_from(outbox).where(outbox.c.order_id.in_(measured_orders))
        )
        applied = await conn.scalar(
            select(func.count())
            .select_from(payment_events)
            .where(payment_events.c.status == "applied")
        )
    ok = paid == n and orders_paid == n and messages == 2 * n and applied == n + warmup
    text = (
        f"{paid}/{n} payments paid, {orders_paid}/{n} orders paid, "
        f"{messages}/{2 * n} outbox rows (2N), {applied}/{n + warmup} events applied "
        "(n + warm-up)"
    )
    return ok, text


@dataclass
class WriterStats:
    """Group commits as the inbox's writer task ran them: (callbacks, start, end)."""

    batches: list[tuple[int, float, float]] = field(default_factory=list)

    def summary(self, skip_callbacks: int) -> str:
        # The warm-up finishes before the measured phase starts, so the first
        # ``skip_callbacks`` callbacks are exactly the warm-up's batches.
        seen, measured = 0, []
        for batch in self.batches:
            if seen >= skip_callbacks:
                measured.append(batch)
            seen += batch[0]
        if not measured:
            return "writer: no batches"
        sizes = [b[0] for b in measured]
        durations = [b[2] - b[1] for b in measured]
        span = measured[-1][2] - measured[0][1]
        return (
            f"group commit: {len(measured)} transactions, callbacks per transaction "
            f"mean {statistics.fmean(sizes):.1f} / max {max(sizes)}, transaction "
            f"mean {statistics.fmean(durations) * 1000:.1f} ms / max "
            f"{max(durations) * 1000:.1f} ms, writer busy {sum(durations) / span:.0%}"
        )


def instrument_inbox(inbox: CallbackInbox) -> WriterStats:
    """Time each group commit by wrapping the instance's batch method (Duka is unchanged)."""
    stats = WriterStats()
    original: Callable[[list[Any]], Any] = inbox._store_batch

    async def timed(batch: list[Any]) -> None:
        started = time.perf_counter()
        try:
            await original(batch)
        finally:
            stats.batches.append((len(batch), started, time.perf_counter()))

    inbox._store_batch = timed  # type: ignore[method-assign]
    return stats


async def run_duka(workdir: Path, n: int, warmup: int, profile: bool = False) -> RunResult:
    profiler: Profiler | None = None
    async with running_duka(workdir) as (app, url):
        engine = app[ENGINE]
        await seed(engine, workdir / "duka.sqlite3", n, warmup)
        stats = instrument_inbox(app[INBOX])
        if profile:
            profiler = Profiler(engine)
            await profiler.prepare()
            try:
                summary, server_cpu = await _drive(
                    url, n, warmup, profiler.loop_profile.enable, profiler.loop_profile.disable
                )
            finally:
                profiler.loop_profile.disable()
                profiler.restore()
        else:
            summary, server_cpu = await _drive(url, n, warmup)
        result = _result("duka", summary, server_cpu)
        result.check_ok, result.check = await check_duka(engine, n, warmup)
        result.notes.append(stats.summary(skip_callbacks=warmup))
    if profiler is not None:
        # Only now: a thread's profile can be read once that thread has finished, and
        # the app's shutdown (engine.dispose) is what ends aiosqlite's threads.
        result.notes.append(profiler.report())
    return result


# --------------------------------------------------------------------------- profiling


class _TimedQueue:
    """Stands in for aiosqlite's request queue inside its worker thread, timing each call.

    cProfile cannot see the SQLite calls there (aiosqlite hands the thread
    ``functools.partial`` objects of C methods, which cProfile does not report), so
    the profiled run times them by name: execute, executemany, fetchall, commit...
    """

    def __init__(self, inner: Any, busy: dict[str, list[float]]) -> None:
        self._inner = inner
        self._busy = busy

    def get(self) -> tuple[Any, Callable[[], Any]]:
        started = time.perf_counter()
        future, function = self._inner.get()
        self._busy["(idle: waiting for work)"][1] += time.perf_counter() - started
        name = getattr(getattr(function, "func", function), "__name__", repr(function))
        busy = self._busy[name]

        def timed() -> Any:
            began = time.perf_counter()
            try:
                return function()
            finally:
                busy[0] += 1
                busy[1] += time.perf_counter() - began

        return future, timed


class Profiler:
    """Where a Duka run spends its time, three ways:

    * cProfile on the event-loop thread (HTTP, parsing, SQLAlchemy, settlement), only
      during the measured phase;
    * aiosqlite's worker thread(s), where SQLite itself runs: calls timed by name
      (a runtime patch of aiosqlite's worker function, undone afterwards; the engine's
      pool is emptied first so the connections opened under load get the patch);
    * each SQL statement kind as SQLAlchemy issued it, wall time including the hop to
      that thread and back.
    The last two cover the warm-up too (a small share of the run).
    """

    def __init__(self, engine: AsyncEngine) -> None:
        self.engine = engine
        self.loop_profile = cProfile.Profile()
        self.thread_busy: list[dict[str, list[float]]] = []
        self.threads: list[threading.Thread] = []
        self.statements: dict[str, list[float]] = defaultdict(lambda: [0, 0.0])
        self._original_worker: Callable[..., None] = aiosqlite.core._connection_worker_thread

    async def prepare(self) -> None:
        """Patch aiosqlite and listen for statements; the caller enables loop_profile."""
        await self.engine.dispose()  # close the idle connections opened while seeding
        original, threads, thread_busy = self._original_worker, self.threads, self.thread_busy

        def timed_worker(tx: Any) -> None:
            busy: dict[str, list[float]] = defaultdict(lambda: [0, 0.0])
            thread_busy.append(busy)
            threads.append(threading.current_thread())
            original(_TimedQueue(tx, busy))  # duck-typed stand-in for the SimpleQueue

        aiosqlite.core._connection_worker_thread = timed_worker
        event.listen(self.engine.sync_engine, "before_cursor_execute", self._before)
        event.listen(self.engine.sync_engine, "after_cursor_execute", self._after)

    def restore(self) -> None:
        aiosqlite.core._connection_worker_thread = self._original_worker
        event.remove(self.engine.sync_engine, "before_cursor_execute", self._before)
        event.remove(self.engine.sync_engine, "after_cursor_execute", self._after)

    def _before(self, conn: Any, cursor: Any, statement: str, *args: Any) -> None:
        conn.info["bench_started"] = time.perf_counter()

    def _after(self, conn: Any, cursor: Any, statement: str, *args: Any) -> None:
        # Group by the statement's first words ("UPDATE payments", "INSERT INTO outbox").
        words = statement.split()
        key = " ".join(words[:3] if words[:2] == ["INSERT", "INTO"] else words[:2])
        entry = self.statements[key]
        entry[0] += 1
        entry[1] += time.perf_counter() - conn.info.pop("bench_started", time.perf_counter())

    def report(self, top: int = 25) -> str:
        # Read the thread timings only after the app's shutdown ended those threads.
        for thread in self.threads:
            thread.join(timeout=5)
        out = io.StringIO()
        out.write("\n=== profile: SQL statements as issued (wall time incl. thread hop) ===\n")
        for key, (count, seconds) in sorted(self.statements.items(), key=lambda kv: -kv[1][1]):
            out.write(f"  {key:32} {count:6.0f} calls {seconds * 1000:9.1f} ms total\n")
        out.write("\n=== profile: aiosqlite worker thread(s): SQLite calls by name ===\n")
        merged: dict[str, list[float]] = defaultdict(lambda: [0, 0.0])
        for busy in self.thread_busy:
            for name, (count, seconds) in busy.items():
                merged[name][0] += count
                merged[name][1] += seconds
        for name, (count, seconds) in sorted(merged.items(), key=lambda kv: -kv[1][1]):
            out.write(f"  {name:32} {count:6.0f} calls {seconds * 1000:9.1f} ms total\n")
        stats = pstats.Stats(self.loop_profile, stream=out)
        out.write("\n=== profile: event-loop thread, own time by area ===\n")
        areas = _own_time_by_area(stats)
        total = sum(areas.values())
        for area, seconds in sorted(areas.items(), key=lambda kv: -kv[1]):
            out.write(f"  {area:40} {seconds * 1000:9.1f} ms  {seconds / total:4.0%}\n")
        out.write(f"\n=== profile: event-loop thread, top {top} by own time ===\n")
        stats.sort_stats("tottime").print_stats(top)
        out.write(f"=== profile: event-loop thread, top {top} by cumulative time ===\n")
        stats.sort_stats("cumulative").print_stats(top)
        return out.getvalue()


def _own_time_by_area(stats: pstats.Stats) -> dict[str, float]:
    """Sum cProfile's own time per library, so "who burns the loop" reads at a glance."""
    areas: dict[str, float] = defaultdict(float)
    project = str(PROJECT_ROOT) + os.sep
    raw: dict[tuple[str, int, str], tuple[Any, ...]] = stats.stats  # type: ignore[attr-defined]
    for (filename, _, function), (_, _, own, *_rest) in raw.items():
        if function == "<method 'poll' of 'select.epoll' objects>":
            area = "(idle: epoll wait)"
        elif filename == "~":
            area = "C builtins (socket, json, queue, ...)"
        elif "site-packages" in filename:
            area = filename.split("site-packages" + os.sep, 1)[1].split(os.sep, 1)[0]
        elif filename.startswith(project):
            area = "duka: " + filename[len(project) :].split(os.sep, 1)[0]
        elif f"{os.sep}asyncio{os.sep}" in filename:
            area = "asyncio (stdlib)"
        else:
            area = "other stdlib"
        areas[area] += own
    return areas


# --------------------------------------------------------------------------- main


def _median(results: list[RunResult], attribute: str) -> float:
    return float(statistics.median(getattr(r, attribute) for r in results))


async def bench(n: int, rounds: int, warmup: int, profile: bool, base_dir: Path | None) -> bool:
    """Run the rounds and print the figures; False if any run failed."""
    print(
        f"Callback benchmark: n={n} measured callbacks per run (+{warmup} warm-up), "
        f"{CONCURRENCY} keep-alive connections, {rounds} round(s), SQLite WAL "
        f"synchronous=FULL, {os.cpu_count()} CPU(s), python {sys.version.split()[0]}",
        flush=True,
    )
    results: dict[str, list[RunResult]] = {"floor": [], "duka": []}
    for round_number in range(1, rounds + 1):
        for kind in ("floor", "duka"):
            with tempfile.TemporaryDirectory(prefix=f"duka-bench-{kind}-", dir=base_dir) as tmp:
                runner = run_floor if kind == "floor" else run_duka
                result = await runner(Path(tmp), n, warmup)
            results[kind].append(result)
            print(f"round {round_number} {result.line()}", flush=True)
            print(f"        check: {result.check}", flush=True)
            for note in result.notes:
                print(f"        {note}", flush=True)
            for sample in result.error_samples:
                print(f"        error: {sample}", flush=True)

    floor, duka = results["floor"], results["duka"]
    floor_rate, duka_rate = _median(floor, "rate"), _median(duka, "rate")
    duka_p99 = _median(duka, "p99_ms")
    ratio = duka_rate / floor_rate
    failed = [r for r in floor + duka if not r.ok]
    print(f"\nmedian of {rounds} round(s):")
    for kind, runs in results.items():
        print(
            f"  {kind:5}  {_median(runs, 'rate'):8.0f} cb/s  p50 {_median(runs, 'p50_ms'):6.1f} ms"
            f"  p99 {_median(runs, 'p99_ms'):6.1f} ms"
        )
    per_round = ", ".join(f"{d.rate / f.rate:.2f}" for f, d in zip(floor, duka, strict=True))
    print(f"  ratio duka/floor (median throughputs): {ratio:.2f}   per round: {per_round}")
    ratio_met, p99_met = ratio >= TARGET_RATIO, duka_p99 <= TARGET_P99_MS
    print(
        f"target: ratio >= {TARGET_RATIO} -> {'met' if ratio_met else 'MISSED'} ({ratio:.2f}); "
        f"duka p99 <= {TARGET_P99_MS:.0f} ms -> {'met' if p99_met else 'MISSED'} "
        f"({duka_p99:.1f} ms); overall: {'MET' if ratio_met and p99_met else 'NOT MET'}"
    )
    if failed:
        print(f"RUN FAILED: {len(failed)} run(s) had errors or a failed database check")

    if profile:
        print("\nprofiled extra Duka run (slower under cProfile; not part of the figures):")
        with tempfile.TemporaryDirectory(prefix="duka-bench-profile-", dir=base_dir) as tmp:
            result = await run_duka(Path(tmp), n, warmup, profile=True)
        print(f"profile {result.line()}\n        check: {result.check}")
        for note in result.notes:
            print(f"        {note}")
    return not failed


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        description="Duka's STK callback path vs. a bare aiohttp+SQLite floor (see bench/README.md)"
    )
    parser.add_argument("--n", type=int, default=DEFAULT_N, help="measured callbacks per run")
    parser.add_argument("--rounds", type=int, default=DEFAULT_ROUNDS, help="floor/duka pairs")
    parser.add_argument("--warmup", type=int, default=DEFAULT_WARMUP, help="unmeasured first")
    parser.add_argument("--profile", action="store_true", help="add a profiled Duka run")
    parser.add_argument(
        "--dir", type=Path, default=None, help="where the SQLite files go (default: system tmp)"
    )
    args = parser.parse_args(argv)
    if args.n < 1 or args.rounds < 1 or args.warmup < 0:
        parser.error("--n and --rounds must be positive, --warmup not negative")
    ok = asyncio.run(bench(args.n, args.rounds, args.warmup, args.profile, args.dir))
    # Missing the target is a result, not an error; only a broken run exits non-zero.
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()
