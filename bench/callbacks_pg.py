"""Benchmark: Daraja STK callbacks into 1, 2 and 4 ``duka serve`` processes on PostgreSQL.

Run from the project root (PostgreSQL on 127.0.0.1:5432, user postgres, trust auth)::

    .venv/bin/python -m bench.callbacks_pg --n 4000

Method (see bench/README.md, ``bench.callbacks_pg``)
----------------------------------------------------
One run makes its own database (``duka_bench_<random>``, dropped at the end, also after
an error), runs ``duka migrate`` once, and then measures, one after the other:

* **floor**: ``bench.callbacks``' raw-INSERT floor on asyncpg (``bench.callbacks_pg_floor``,
  one process, a pool of 15 connections, one INSERT committed per request);
* **duka, P = 1, 2, 4**: P real ``duka serve`` processes (``python -m bot serve``), each on
  its own port, all on the same database with the same data key and the same
  ``MPESA_CALLBACK_URL`` (so every seeded attempt's URL is valid on every process);
  simulator mode, no chat channel, reconciler and dispatcher as shipped. Before each
  P, n fresh pending payments (plus 200 warm-up ones per process) are seeded with
  ``bench.callbacks._seed_rows``, and after it the processes are stopped with SIGTERM and
  the database is checked: all n paid, 2n outbox rows, one applied event per callback.

The load is ``bench.callbacks_pg_load``, one separate process: 50 keep-alive connections
in a closed loop, split evenly over the P servers, each server getting n/P callbacks at
its attempts' URLs. CPU is read from /proc at the load generator's measure-start and
measure-end markers: the Duka processes (with their simulator children), the PostgreSQL
backends of the bench database, the other PostgreSQL processes (WAL writer, checkpointer,
other databases), the load generator, and the whole machine (/proc/stat), so the table
shows where the two cores went. The servers' logs are searched for "deadlock".
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import re
import secrets
import socket
import statistics
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import aiohttp
import asyncpg
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncEngine

from bench import loadgen
from bench.callbacks import _seed_rows, insert_seed_rows
from bench.callbacks_pg_load import Target, callback_body, write_spec
from storage.engine import create_engine
from storage.schema import (
    orders,
    outbox,
    payment_events,
    payments,
    unmatched_payments,
)
from storage.sealing import Sealer, generate_key, parse_key

PROJECT_ROOT = Path(__file__).resolve().parent.parent
PG_SERVER = "postgresql://postgres@127.0.0.1:5432"
CONCURRENCY = 50
DEFAULT_N = 4000
DEFAULT_WARMUP = 200  # per process
DEFAULT_PROCS = (1, 2, 4)
TARGET_RATIO_2 = 1.6
SEED_QUERY_AFTER = timedelta(minutes=30)
START_TIMEOUT_SECONDS = 90.0
STOP_TIMEOUT_SECONDS = 30.0
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")
# The environment a server gets from us, not from whoever runs the bench.
_OURS = ("DUKA_", "MPESA_", "TELEGRAM_", "WHATSAPP_")


# --------------------------------------------------------------------------- /proc


def _ticks(pid: int) -> int | None:
    """utime + stime of one process, in clock ticks (None: gone)."""
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = text[text.rindex(")") + 2 :].split()
    return int(fields[11]) + int(fields[12])  # fields 14 and 15 of stat(5)


def _all_processes() -> Iterator[tuple[int, int, str]]:
    """(pid, parent pid, comm) of every process."""
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            text = Path(f"/proc/{entry}/stat").read_text()
        except OSError:
            continue
        comm = text[text.index("(") + 1 : text.rindex(")")]
        ppid = int(text[text.rindex(")") + 2 :].split()[1])
        yield int(entry), ppid, comm


def _tree(roots: list[int]) -> list[int]:
    """The processes ``roots`` and all their descendants."""
    children: dict[int, list[int]] = {}
    for pid, ppid, _ in _all_processes():
        children.setdefault(ppid, []).append(pid)
    found, todo = [], list(roots)
    while todo:
        pid = todo.pop()
        found.append(pid)
        todo += children.get(pid, [])
    return found


def _machine() -> tuple[int, int]:
    """(busy, total) ticks of all CPUs from /proc/stat (iowait counts as idle)."""
    values = [int(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    idle = values[3] + values[4]
    total = sum(values[:8])  # guest time is already inside user
    return total - idle, total


@dataclass
class Snapshot:
    wall: float
    machine: tuple[int, int]
    servers: dict[int, int]
    client: int
    postgres: dict[int, int]

    @classmethod
    def take(cls, server_roots: list[int], client_pid: int) -> Snapshot:
        wall = time.perf_counter()
        servers = {pid: t for pid in _tree(server_roots) if (t := _ticks(pid)) is not None}
        postgres = {
            pid: t
            for pid, _, comm in _all_processes()
            if comm == "postgres" and (t := _ticks(pid)) is not None
        }
        return cls(wall, _machine(), servers, _ticks(client_pid) or 0, postgres)


@dataclass
class CpuShares:
    """CPU over the measured phase, as a share of one core (1.0 = 100%)."""

    servers: float
    client: float
    pg_bench: float  # backends connected to the bench database
    pg_other: float  # WAL writer, checkpointer, other databases' backends, ...
    machine: float  # everything, all cores (2 cores: at most 2.0)
    cores: int

    @property
    def other(self) -> float:
        """Machine busy time not in the columns above: other work on the machine."""
        return self.machine - self.servers - self.client - self.pg_bench - self.pg_other


def _shares(start: Snapshot, end: Snapshot, bench_backends: set[int]) -> CpuShares:
    wall = end.wall - start.wall

    def share(ticks: int) -> float:
        return ticks / CLOCK_TICKS / wall

    servers = sum(t - start.servers.get(pid, 0) for pid, t in end.servers.items())
    pg_bench = pg_other = 0
    for pid, ticks in end.postgres.items():
        used = ticks - start.postgres.get(pid, 0)
        if pid in bench_backends:
            pg_bench += used
        else:
            pg_other += used
    busy = end.machine[0] - start.machine[0]
    total = end.machine[1] - start.machine[1]
    cores = os.cpu_count() or 1
    return CpuShares(
        servers=share(servers),
        client=share(end.client - start.client),
        pg_bench=share(pg_bench),
        pg_other=share(pg_other),
        machine=busy / total * cores if total else float("nan"),
        cores=cores,
    )


# --------------------------------------------------------------------------- results


@dataclass
class RunResult:
    kind: str  # "floor" | "duka"
    procs: int
    n: int
    round: int = 1
    rate: float = float("nan")
    p50_ms: float = float("nan")
    p99_ms: float = float("nan")
    max_ms: float = float("nan")
    mean_ms: float = float("nan")
    errors: int = 0
    error_samples: list[str] = field(default_factory=list)
    cpu: CpuShares | None = None
    check_ok: bool = False
    check: str = "not checked"
    deadlocks: int = 0  # "deadlock" in the servers' logs
    pg_deadlocks: int = 0  # pg_stat_database.deadlocks of the bench database, over the run
    # pg_stat_database.xact_commit/xact_rollback over the whole run (start-up, warm-up,
    # load, stop): a busy backend publishes its counters only now and then, so they are
    # read once the servers are gone, not at the measured phase's edges.
    commits: int = 0
    sent: int = 0  # callbacks sent, warm-up included
    rollbacks: int = 0
    log_notes: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return self.errors == 0 and self.check_ok and self.deadlocks == self.pg_deadlocks == 0

    @property
    def label(self) -> str:
        return "floor (asyncpg)" if self.kind == "floor" else f"duka P={self.procs}"


# --------------------------------------------------------------------------- database


@contextlib.asynccontextmanager
async def bench_database() -> AsyncIterator[str]:
    """A fresh database's name; dropped (connections forced off) when the block ends."""
    name = f"duka_bench_{secrets.token_hex(6)}"
    admin = await asyncpg.connect(f"{PG_SERVER}/postgres")
    try:
        await admin.execute(f'CREATE DATABASE "{name}"')
        try:
            yield name
        finally:
            await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    finally:
        await admin.close()


async def seed(engine: AsyncEngine, groups: list[tuple[str, int, int]]) -> None:
    """Pending payments, as ``bench.callbacks.seed`` makes them, for each (group, count,
    first id). That function checkpoints a SQLite file; this is the same minus that, and
    with the first STK query put off (see below)."""
    now = datetime.now(UTC)
    rows = [row for group, count, first in groups for row in _seed_rows(group, count, first, now)]
    for row in rows:
        # bench.callbacks seeds next_query_at = now + 1 minute. A slow run here (4 busy
        # processes on a shared 2-core machine) can take longer than that, and the
        # reconciler, on as shipped, would then start asking the simulator about payments
        # whose callbacks are still on their way. Pushed back, it has nothing due.
        row[3]["next_query_at"] = now + SEED_QUERY_AFTER
    await insert_seed_rows(engine, rows)


@dataclass
class Batch:
    """One round's seeded payments: the warm-up's ids, then the measured ones."""

    procs: int
    round: int  # 1..9: each round's receipts and CheckoutRequestIDs are its own
    first_id: int
    warm_count: int
    n: int

    @property
    def warm_group(self) -> str:
        return f"w{self.procs}r{self.round}"

    @property
    def measured_group(self) -> str:
        return f"m{self.procs}r{self.round}"

    @property
    def measured_first(self) -> int:
        return self.first_id + self.warm_count

    @property
    def last_id(self) -> int:
        return self.measured_first + self.n - 1

    def seed_groups(self) -> list[tuple[str, int, int]]:
        return [
            (self.warm_group, self.warm_count, self.first_id),
            (self.measured_group, self.n, self.measured_first),
        ]

    def work(self, callback_url: str) -> tuple[list[tuple[str, bytes]], list[tuple[str, bytes]]]:
        """(warm-up, measured) lists of (attempt path, body)."""
        warm_paths = loadgen.attempt_paths(callback_url, self.first_id, self.warm_count)
        paths = loadgen.attempt_paths(callback_url, self.measured_first, self.n)
        warm_bodies = [
            callback_body(self.warm_group, f"W{self.procs}{self.round}", i)
            for i in range(1, self.warm_count + 1)
        ]
        bodies = [
            callback_body(self.measured_group, f"M{self.procs}{self.round}", i)
            for i in range(1, self.n + 1)
        ]
        return list(zip(warm_paths, warm_bodies, strict=True)), list(
            zip(paths, bodies, strict=True)
        )


async def check_round(engine: AsyncEngine, batch: Batch) -> tuple[bool, str]:
    """All n measured payments and orders paid, 2n outbox rows for them, exactly one
    applied event per callback sent (warm-up included), nothing unmatched."""
    measured = payments.c.id.between(batch.measured_first, batch.last_id)
    measured_orders = select(payments.c.order_id).where(measured)
    in_round = payment_events.c.payment_id.between(batch.first_id, batch.last_id)
    sent = batch.warm_count + batch.n
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
        keys = await conn.scalar(
            select(func.count(outbox.c.dedupe_key.distinct())).where(
                outbox.c.order_id.in_(measured_orders)
            )
        )
        applied = await conn.scalar(
            select(func.count())
            .select_from(payment_events)
            .where(in_round, payment_events.c.status == "applied")
        )
        events = await conn.scalar(select(func.count()).select_from(payment_events).where(in_round))
        twice = await conn.scalar(
            select(func.count()).select_from(
                select(payment_events.c.payment_id)
                .where(in_round)
                .group_by(payment_events.c.payment_id)
                .having(func.count() > 1)
                .subquery()
            )
        )
        unmatched = await conn.scalar(select(func.count()).select_from(unmatched_payments))
    n = batch.n
    ok = (
        paid == n
        and orders_paid == n
        and messages == 2 * n
        and keys == messages
        and applied == sent
        and events == sent
        and twice == 0
        and unmatched == 0
    )
    text = (
        f"{paid}/{n} payments paid, {orders_paid}/{n} orders paid, {messages}/{2 * n} outbox "
        f"rows (2N, {keys} distinct keys), {applied}/{sent} events applied of {events} "
        f"stored (n + warm-up), {twice} payments with >1 event, {unmatched} unmatched"
    )
    return ok, text


# --------------------------------------------------------------------------- processes


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def _base_env() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if not k.startswith(_OURS)}


@dataclass
class Server:
    process: asyncio.subprocess.Process
    port: int
    log: Path


async def _start(argv: list[str], env: dict[str, str], port: int, log: Path) -> Server:
    with log.open("wb") as out:
        process = await asyncio.create_subprocess_exec(
            *argv, cwd=PROJECT_ROOT, env=env, stdout=out, stderr=asyncio.subprocess.STDOUT
        )
    return Server(process, port, log)


async def _wait_healthy(servers: list[Server]) -> None:
    deadline = time.monotonic() + START_TIMEOUT_SECONDS
    async with aiohttp.ClientSession() as session:
        for server in servers:
            while True:
                if server.process.returncode is not None:
                    raise RuntimeError(
                        f"server on port {server.port} exited ({server.process.returncode}):\n"
                        + _tail(server.log)
                    )
                with contextlib.suppress(aiohttp.ClientError, OSError):
                    async with session.get(f"http://127.0.0.1:{server.port}/healthz") as response:
                        if response.status == 200:
                            break
                if time.monotonic() > deadline:
                    raise RuntimeError(f"server on port {server.port} not healthy in time")
                await asyncio.sleep(0.2)


async def _stop(servers: list[Server]) -> list[int | None]:
    """SIGTERM each, wait for all; kill what is still there after the timeout."""
    for server in servers:
        if server.process.returncode is None:
            server.process.terminate()
    codes: list[int | None] = []
    for server in servers:
        try:
            codes.append(await asyncio.wait_for(server.process.wait(), STOP_TIMEOUT_SECONDS))
        except TimeoutError:
            server.process.kill()
            await server.process.wait()
            codes.append(None)
    return codes


@contextlib.asynccontextmanager
async def running(
    starts: list[tuple[list[str], dict[str, str], int, Path]],
) -> AsyncIterator[list[Server]]:
    servers: list[Server] = []
    try:
        for argv, env, port, log in starts:
            servers.append(await _start(argv, env, port, log))
        await _wait_healthy(servers)
        yield servers
    finally:
        await _stop(servers)


def _tail(log: Path, lines: int = 15) -> str:
    with contextlib.suppress(OSError):
        return "\n".join(log.read_text(errors="replace").splitlines()[-lines:])
    return "(no log)"


def _scan_log(log: Path) -> tuple[int, list[str]]:
    """(lines mentioning a deadlock, the warning/error lines: distinct ones, counted,
    numbers written as N)."""
    lines = log.read_text(errors="replace").splitlines()
    deadlocks = sum(1 for line in lines if "deadlock" in line.lower())
    counts: dict[str, int] = {}
    for line in lines:
        if re.search(r"\b(WARNING|ERROR|CRITICAL|Traceback)\b", line):
            short = re.sub(r"\d+", "N", re.sub(r"^\S+ \S+ ", "", line))
            counts[short[:150]] = counts.get(short[:150], 0) + 1
    return deadlocks, [f"{count}x {text}" for text, count in counts.items()]


# --------------------------------------------------------------------------- load


def _split(
    warm: list[tuple[str, bytes]], work: list[tuple[str, bytes]], ports: list[int]
) -> list[Target]:
    """Round-robin: server k gets items k, k+P, ...; the 50 connections split evenly."""
    count = len(ports)
    return [
        Target(
            host="127.0.0.1",
            port=port,
            concurrency=CONCURRENCY // count + (1 if k < CONCURRENCY % count else 0),
            warm=warm[k::count],
            work=work[k::count],
        )
        for k, port in enumerate(ports)
    ]


async def _db_stats(admin: asyncpg.Connection, database: str) -> tuple[int, int, int]:
    """(commits, rollbacks, deadlocks) of the bench database so far (pg_stat_database)."""
    row = await admin.fetchrow(
        "SELECT xact_commit, xact_rollback, deadlocks FROM pg_stat_database WHERE datname = $1",
        database,
    )
    assert row is not None
    return int(row[0]), int(row[1]), int(row[2])


async def _bench_backends(admin: asyncpg.Connection, database: str) -> set[int]:
    rows = await admin.fetch("SELECT pid FROM pg_stat_activity WHERE datname = $1", database)
    return {int(row["pid"]) for row in rows}


async def drive(
    targets: list[Target], server_roots: list[int], workdir: Path, admin: asyncpg.Connection,
    database: str, result: RunResult,
) -> None:  # fmt: skip
    """Run the load generator; fill in ``result``'s figures and CPU shares."""
    spec = workdir / f"spec-{result.kind}-{result.procs}.json"
    write_spec(spec, targets)
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "bench.callbacks_pg_load", str(spec),
        cwd=PROJECT_ROOT, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    assert proc.stdout is not None
    assert proc.stderr is not None
    stderr_task = asyncio.create_task(proc.stderr.read())
    start: Snapshot | None = None
    end: Snapshot | None = None
    backends: set[int] = set()
    output: list[bytes] = []
    while line := await proc.stdout.readline():
        marker = line.decode().strip()
        if marker == loadgen.MEASURE_START:
            start = Snapshot.take(server_roots, proc.pid)
        elif marker == loadgen.MEASURE_END:
            end = Snapshot.take(server_roots, proc.pid)
            backends = await _bench_backends(admin, database)
        else:
            output.append(line)
    stderr = await stderr_task
    if await proc.wait() != 0 or not output or start is None or end is None:
        raise RuntimeError(f"load generator failed ({proc.returncode}):\n{stderr.decode()}")
    summary: dict[str, Any] = json.loads(b"".join(output))
    result.rate = summary["rate"]
    result.p50_ms, result.p99_ms = summary["p50_ms"], summary["p99_ms"]
    result.max_ms, result.mean_ms = summary["max_ms"], summary["mean_ms"]
    result.errors = summary["errors"] + summary["warmup_errors"]
    result.error_samples = summary["error_samples"] + [
        "(warm-up) " + s for s in summary["warmup_error_samples"]
    ]
    result.cpu = _shares(start, end, backends)
    # The load generator's own account of its CPU in the measured phase (process_time).
    result.cpu.client = summary["client_cpu_seconds"] / summary["client_wall_seconds"]


# --------------------------------------------------------------------------- runs


@dataclass
class Setup:
    database: str
    data_key: str
    callback_url: str
    workdir: Path
    admin: asyncpg.Connection
    engine: AsyncEngine

    @property
    def sqlalchemy_url(self) -> str:
        return f"postgresql+asyncpg://postgres@127.0.0.1:5432/{self.database}"

    def duka_env(self, port: int) -> dict[str, str]:
        return _base_env() | {
            "DUKA_CONFIG": str(self.workdir / "config.toml"),
            "DUKA_DATABASE_URL": self.sqlalchemy_url,
            "DUKA_DATA_KEY": self.data_key,
            "DUKA_HTTP_HOST": "127.0.0.1",
            "DUKA_HTTP_PORT": str(port),
            "MPESA_ENVIRONMENT": "simulator",
            "MPESA_CALLBACK_URL": self.callback_url,
        }


async def run_migrate(setup: Setup) -> None:
    log = setup.workdir / "migrate.log"
    server = await _start([sys.executable, "-m", "bot", "migrate"], setup.duka_env(0), 0, log)
    if await server.process.wait() != 0:
        raise RuntimeError("duka migrate failed:\n" + _tail(log))
    print(f"duka migrate: {_tail(log, 1)}", flush=True)


async def _round_stats(setup: Setup) -> tuple[int, int, int]:
    """pg_stat_database once the servers are gone (their last counters published)."""
    await asyncio.sleep(1.5)
    return await _db_stats(setup.admin, setup.database)


def _minus(after: tuple[int, int, int], before: tuple[int, int, int]) -> tuple[int, int, int]:
    return after[0] - before[0], after[1] - before[1], after[2] - before[2]


async def run_floor(setup: Setup, n: int, warmup: int, round_number: int) -> RunResult:
    await setup.admin.execute("DROP TABLE IF EXISTS floor_callbacks")
    await setup.admin.execute(
        "CREATE TABLE floor_callbacks (id bigserial PRIMARY KEY, "
        "checkout_request_id text NOT NULL, raw text NOT NULL)"
    )
    result = RunResult("floor", 1, n, round_number)
    port = _free_port()
    # Paths and bodies only: the floor looks nothing up.
    batch = Batch(procs=0, round=round_number, first_id=1, warm_count=warmup, n=n)
    warm, work = batch.work(setup.callback_url)
    argv = [
        sys.executable, "-m", "bench.callbacks_pg_floor",
        "--port", str(port), "--dsn", f"{PG_SERVER}/{setup.database}",
    ]  # fmt: skip
    log = setup.workdir / f"floor-r{round_number}.log"
    before = await _db_stats(setup.admin, setup.database)
    start = (argv, _base_env(), port, log)
    async with running([start]) as servers:
        await drive(
            _split(warm, work, [port]),
            [s.process.pid for s in servers],
            setup.workdir,
            setup.admin,
            setup.database,
            result,
        )
    after = await _round_stats(setup)
    result.commits, result.rollbacks, result.pg_deadlocks = _minus(after, before)
    result.sent = warmup + n
    stored = await setup.admin.fetchval("SELECT count(*) FROM floor_callbacks")
    result.check_ok = stored == n + warmup
    result.check = f"{stored}/{n + warmup} rows stored (n + warm-up)"
    result.deadlocks, result.log_notes = _scan_log(log)
    return result


async def run_duka(
    setup: Setup, procs: int, n: int, warmup: int, first_id: int, round_number: int
) -> RunResult:
    result = RunResult("duka", procs, n, round_number)
    batch = Batch(procs, round_number, first_id, warmup * procs, n)
    await seed(setup.engine, batch.seed_groups())
    warm, work = batch.work(setup.callback_url)
    before = await _db_stats(setup.admin, setup.database)
    ports = [_free_port() for _ in range(procs)]
    starts = [
        (
            [sys.executable, "-m", "bot", "serve"],
            setup.duka_env(port),
            port,
            setup.workdir / f"duka-r{round_number}-P{procs}-{k}.log",
        )
        for k, port in enumerate(ports)
    ]
    async with running(starts) as servers:
        await drive(
            _split(warm, work, ports),
            [s.process.pid for s in servers],
            setup.workdir,
            setup.admin,
            setup.database,
            result,
        )
    result.check_ok, result.check = await check_round(setup.engine, batch)
    after = await _round_stats(setup)
    result.commits, result.rollbacks, result.pg_deadlocks = _minus(after, before)
    result.sent = batch.warm_count + n
    for _, _, _, log in starts:
        deadlocks, notes = _scan_log(log)
        result.deadlocks += deadlocks
        result.log_notes += [f"{log.name}: {note}" for note in notes]
    return result


# --------------------------------------------------------------------------- output


def _pct(value: float) -> str:
    return f"{value:.0%}"


def _ratio(result: RunResult, results: list[RunResult]) -> float | None:
    """Throughput over the same round's one-process Duka run."""
    one = next(
        (r.rate for r in results if r.kind == "duka" and r.procs == 1 and r.round == result.round),
        None,
    )
    return result.rate / one if one and result.kind == "duka" else None


def print_table(results: list[RunResult]) -> None:
    cores = os.cpu_count() or 1
    print(
        "| round | run | cb/s | p50 ms | p99 ms | ratio to P=1 | server CPU | PG CPU (bench "
        f"backends + other) | load gen CPU | machine busy (of {cores}00%) | not ours "
        "| PG commits / rollbacks per cb (whole run) | errors | deadlocks (logs / PG) |"
    )
    print("|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    for r in results:
        ratio = _ratio(r, results)
        cpu = r.cpu
        cells = (
            [_pct(cpu.servers), f"{_pct(cpu.pg_bench)} + {_pct(cpu.pg_other)}", _pct(cpu.client),
             _pct(cpu.machine), _pct(cpu.other)]
            if cpu else ["?"] * 5
        )  # fmt: skip
        commits = f"{r.commits / r.sent:.2f} / {r.rollbacks / r.sent:.2f}" if r.sent else "?"
        print(
            f"| {r.round} | {r.label} | {r.rate:.0f} | {r.p50_ms:.1f} | {r.p99_ms:.1f} | "
            f"{'' if ratio is None else f'{ratio:.2f}'} | "
            + " | ".join(cells)
            + f" | {commits} | {r.errors} | {r.deadlocks} / "
            + f"{r.pg_deadlocks}"
            + " |"
        )
    print()
    print("CPU per callback (ms of CPU time per measured callback; 100% of a core = 1 s/s):")
    for r in results:
        if r.cpu is None:
            continue
        per = 1000 / r.rate
        pg = r.cpu.pg_bench + r.cpu.pg_other
        total = r.cpu.servers + pg + r.cpu.client
        print(
            f"  round {r.round} {r.label:15} server {r.cpu.servers * per:5.2f}  PostgreSQL "
            f"{pg * per:5.2f}  load gen {r.cpu.client * per:5.2f}  total {total * per:5.2f}"
            f"   Little: 50 / rate = {CONCURRENCY / r.rate * 1000:.1f} ms, mean seen "
            f"{r.mean_ms:.1f} ms"
        )
    labels = list(dict.fromkeys(r.label for r in results))
    if len(results) > len(labels):
        print("\nmedians over the rounds:")
        for label in labels:
            runs = [r for r in results if r.label == label]
            ratios = [x for r in runs if (x := _ratio(r, results)) is not None]
            print(
                f"  {label:15} {statistics.median(r.rate for r in runs):7.0f} cb/s  p50 "
                f"{statistics.median(r.p50_ms for r in runs):6.1f} ms  p99 "
                f"{statistics.median(r.p99_ms for r in runs):6.1f} ms"
                + (f"  ratio to P=1 {statistics.median(ratios):.2f}" if ratios else "")
            )


async def _pg_settings(admin: asyncpg.Connection) -> str:
    names = ("server_version", "synchronous_commit", "fsync", "wal_sync_method", "max_connections")
    values = [await admin.fetchval(f"SHOW {name}") for name in names]
    return ", ".join(f"{n}={v}" for n, v in zip(names, values, strict=True))


async def bench(n: int, warmup: int, procs_list: list[int], rounds: int) -> bool:
    workdir = Path(tempfile.mkdtemp(prefix="duka-bench-pg-"))
    (workdir / "config.toml").write_text('[shop]\nname = "Bench Duka"\n')
    data_key = generate_key()
    callback_url = f"http://127.0.0.1/hooks/stk/{secrets.token_hex(24)}"
    results: list[RunResult] = []
    try:
        async with bench_database() as database:
            admin = await asyncpg.connect(f"{PG_SERVER}/{database}")
            engine = create_engine(
                f"postgresql+asyncpg://postgres@127.0.0.1:5432/{database}",
                Sealer(parse_key(data_key)),
            )
            try:
                setup = Setup(database, data_key, callback_url, workdir, admin, engine)
                print(
                    f"Callback benchmark on PostgreSQL: database {database}, n={n} measured "
                    f"callbacks per run (+{warmup} warm-up per process), {CONCURRENCY} "
                    f"connections split over the processes, {os.cpu_count()} CPU(s), python "
                    f"{sys.version.split()[0]}; {await _pg_settings(admin)}; load average "
                    f"{' '.join(f'{x:.2f}' for x in os.getloadavg())}",
                    flush=True,
                )
                await run_migrate(setup)
                first_id = 1
                for round_number in range(1, rounds + 1):
                    print(f"round {round_number}", flush=True)
                    result = await run_floor(setup, n, warmup, round_number)
                    _report(result)
                    results.append(result)
                    for procs in procs_list:
                        result = await run_duka(setup, procs, n, warmup, first_id, round_number)
                        first_id += warmup * procs + n
                        _report(result)
                        results.append(result)
            finally:
                await engine.dispose()
                await admin.close()
        print(f"\ndatabase {database} dropped; logs in {workdir}")
    except BaseException:
        print(f"logs kept in {workdir}", file=sys.stderr)
        raise
    print(f"load average at the end: {' '.join(f'{x:.2f}' for x in os.getloadavg())}\n")
    print_table(results)
    twos = [x for r in results if r.procs == 2 and (x := _ratio(r, results)) is not None]
    if twos:
        two = statistics.median(twos)
        verdict = "met" if two >= TARGET_RATIO_2 else "MISSED"
        print(f"\ntarget: 2 processes >= {TARGET_RATIO_2}x one -> {verdict} ({two:.2f}x)")
    failed = [r for r in results if not r.ok]
    if failed:
        print(f"RUN FAILED: {', '.join(r.label for r in failed)} (errors, check or deadlocks)")
    return not failed


def _report(result: RunResult) -> None:
    status = "" if result.ok else "  ** FAILED **"
    print(
        f"{result.label:15} {result.rate:7.0f} cb/s  p50 {result.p50_ms:6.1f} ms  p99 "
        f"{result.p99_ms:6.1f} ms  max {result.max_ms:6.1f} ms  errors {result.errors}  "
        f"deadlocks {result.deadlocks} (log) {result.pg_deadlocks} (PG)  whole run: PG commits "
        f"{result.commits}, rollbacks {result.rollbacks} for {result.sent} callbacks{status}",
        flush=True,
    )
    if result.cpu:
        c = result.cpu
        print(
            f"        cpu: servers {_pct(c.servers)}  PostgreSQL bench backends "
            f"{_pct(c.pg_bench)} other {_pct(c.pg_other)}  load gen {_pct(c.client)}  "
            f"machine {_pct(c.machine)} of {c.cores}00% (not ours {_pct(c.other)})",
            flush=True,
        )
    print(f"        check: {result.check}", flush=True)
    for sample in result.error_samples:
        print(f"        error: {sample}", flush=True)
    for note in result.log_notes:
        print(f"        log: {note}", flush=True)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        description="Duka's STK callbacks on PostgreSQL with 1, 2 and 4 processes "
        "(see bench/README.md)"
    )
    parser.add_argument("--n", type=int, default=DEFAULT_N, help="measured callbacks per run")
    parser.add_argument(
        "--warmup", type=int, default=DEFAULT_WARMUP, help="unmeasured callbacks per process"
    )
    parser.add_argument(
        "--procs", type=int, nargs="+", default=list(DEFAULT_PROCS), help="process counts"
    )
    parser.add_argument("--rounds", type=int, default=1, help="floor + all process counts")
    args = parser.parse_args(argv)
    if args.n < 1 or args.warmup < 0 or not all(1 <= p <= 9 for p in args.procs):
        parser.error("--n must be positive, --warmup not negative, --procs between 1 and 9")
    if not 1 <= args.rounds <= 9:
        parser.error("--rounds must be between 1 and 9")
    ok = asyncio.run(bench(args.n, args.warmup, args.procs, args.rounds))
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()
