"""Benchmark: a rush of customers shopping on Telegram, against a PTB echo-bot floor.

Run from the project root::

    .venv/bin/python -m bench.chat --n 20 100 300 --rtt-ms 0 200
    .venv/bin/python -m bench.chat --quick          # N=20, RTT 0: under a minute
    .venv/bin/python -m bench.chat --n 100 --rtt-ms 0 --profile   # + a profiled Duka run
    .venv/bin/python -m bench.chat --n 20 --rtt-ms 0 --merchant   # Duka has a merchant chat

Method
------
For every RTT and N, two bots are measured one after the other, each as its own process
against its own fresh fake Bot API (``tests.fakes.telegram_api.FakeTelegram``, in this
process) that enforces Telegram's flood limits (``FloodLimits``: 30 messages/s for the
bot, 1/s per chat, short bursts allowed, 429 with ``retry_after`` beyond them;
answerCallbackQuery is free) and delays every Bot API call by ``--rtt-ms``:

* **floor**: ``bench.chat_floor``, a minimal PTB 22 bot (PTB's ``AIORateLimiter`` at
  29/s, 1024 updates in flight) that answers every action with one message (and every
  button with answerCallbackQuery);
* **duka**: the real ``duka serve`` (``python -m bot serve``) on a fresh SQLite file
  (``duka migrate`` first), polling the fake with ``TELEGRAM_BOT_TOKEN``/
  ``TELEGRAM_API_BASE_URL``, paying through the Daraja simulator in a process of its own
  (``duka simulator``; a push is paid 2 s later), reconciler and outbox dispatcher
  running as in production.

N customers (``bench.chat_customers``) start at once. Each does the same 8 actions:
/start, a category, a product, Add to cart, a second product (typed: "2 sukari"),
Checkout, Confirm order, and shares their own contact; against Duka they then wait for
"Paid!". Between actions a customer thinks for ``--think-ms`` (+/- 50%, seeded), as a
person reads before tapping; this also keeps one chat near Telegram's 1 message/s.

Measured per run: per-action latency (action -> the answer on screen, i.e. accepted by the
fake), button acknowledgement (press -> answerCallbackQuery), prompt -> paid ("Check your
phone" on screen -> "Paid!" on screen) and callback -> paid (the order's ``paid_at`` in
Duka's database -> "Paid!" on screen), the 429s the fake gave (and those after the first
second), message calls (sends and edits, refused ones included) per order, the bot
process's CPU seconds (user + system, all threads, /proc; the event-loop thread's share
too) from the first action until the last customer finished, per action answered, and
its RSS when idle (after start-up) and at its peak during the run (sampled every 0.2 s).
Each Duka run checks that every customer got exactly one "Paid!" message. See
bench/README.md for how to read the tables.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import re
import signal
import sqlite3
import sys
import tempfile
import time
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path

from bench.chat_bots import (
    MERCHANT_CHAT,
    PROFILE_FILE,
    TOKEN,
    cpu_seconds,
    main_thread_cpu_seconds,
    profile_report,
    rss_mb,
    running_bot,
    sample_peak_rss,
    until_ready,
)
from bench.chat_customers import (
    DUKA_SCRIPT,
    FLOOR_SCRIPT,
    Customer,
    Screen,
    Walk,
    WatchedTelegram,
    Watcher,
)
from bench.chat_report import RunResult, line, table, targets
from tests.fakes.telegram_api import FloodLimits

FIRST_CHAT_ID = 700_001
SETTLE_SECONDS = 1.0  # after start-up, before "idle"; after the run, for late duplicates
NO_MERCHANT = "no merchant chat is configured"  # Duka's warning for each paid order here


def phone_of(index: int) -> str:
    """Each customer's own number; ending in 500, which the simulator simply pays."""
    return f"+2547{20_000_000 + index * 1000 + 500:08d}"


async def run_once(
    kind: str,
    n: int,
    rtt_ms: int,
    think_seconds: float,
    patience: float,
    seed: int,
    profile: bool = False,
    merchant: bool = False,
) -> RunResult:
    """One bot, fresh everything: fake Bot API, process, database; N customers at once."""
    result = RunResult(kind, n, rtt_ms)
    watcher = Watcher(merchant_chat=MERCHANT_CHAT if merchant else None)
    fake = WatchedTelegram(
        watcher, token=TOKEN, flood_limits=FloodLimits(), round_trip_seconds=rtt_ms / 1000
    )
    await fake.start()
    try:
        with tempfile.TemporaryDirectory(prefix=f"duka-bench-chat-{kind}-") as tmp:
            workdir = Path(tmp)
            bot = running_bot(kind, fake.base_url, workdir, profile=profile, merchant=merchant)
            async with bot as (process, port):
                await until_ready(process, watcher.polled, port, workdir / "bot.log")
                await asyncio.sleep(SETTLE_SECONDS)
                walks = await _rush(kind, n, fake, watcher, process.pid, think_seconds,
                                    patience, seed, result)  # fmt: skip
                await asyncio.sleep(SETTLE_SECONDS)  # a duplicate "Paid!" would show by now
            _summarise(result, walks, watcher)
            if merchant and kind == "duka":
                result.merchant_messages = watcher.merchant_messages
            if kind == "duka":
                result.callback_to_paid = _callback_to_paid(workdir / "duka.sqlite3", walks)
            _read_log(result, workdir / "bot.log")
            if profile:
                result.profile = profile_report(workdir / PROFILE_FILE)
    finally:
        await fake.stop()
    return result


async def _rush(
    kind: str,
    n: int,
    fake: WatchedTelegram,
    watcher: Watcher,
    pid: int,
    think_seconds: float,
    patience: float,
    seed: int,
    result: RunResult,
) -> list[Walk]:
    """All N customers at once; the bot's CPU and RSS while they shop."""
    customers = []
    for index in range(n):
        chat_id = FIRST_CHAT_ID + index
        watcher.screens[chat_id] = Screen()
        customers.append(
            Customer(fake, watcher.screens[chat_id], chat_id, phone_of(index), think_seconds,
                     seed * 100_003 + index)
        )  # fmt: skip
    result.rss_idle_mb = rss_mb(pid)
    peak = [result.rss_idle_mb]
    sampler = asyncio.create_task(sample_peak_rss(pid, peak))
    script, wait_paid = (FLOOR_SCRIPT, False) if kind == "floor" else (DUKA_SCRIPT, True)
    cpu_before, loop_before = cpu_seconds(pid), main_thread_cpu_seconds(pid)
    started, own_before = time.perf_counter(), time.process_time()
    try:
        walks = await asyncio.gather(*(c.shop(script, wait_paid, patience) for c in customers))
    finally:
        result.cpu_seconds = cpu_seconds(pid) - cpu_before
        result.loop_cpu_seconds = main_thread_cpu_seconds(pid) - loop_before
        result.wall = time.perf_counter() - started
        result.client_cpu = (time.process_time() - own_before) / result.wall
        sampler.cancel()
        result.rss_peak_mb = peak[0]
    result.refusals_after_first_second = sum(t > started + 1.0 for t in watcher.refusals)
    return walks


def _summarise(result: RunResult, walks: Sequence[Walk], watcher: Watcher) -> None:
    for walk in walks:
        result.latencies += walk.latencies
        for query_id, pressed in walk.presses.items():
            acknowledged = watcher.acknowledged.get(query_id)
            if acknowledged is None:
                result.unacknowledged += 1
            else:
                result.acks.append(acknowledged - pressed)
        if walk.prompt_to_paid is not None:
            result.prompt_to_paid.append(walk.prompt_to_paid)
        if walk.error is not None:
            result.errors.append(f"chat {walk.chat_id}: {walk.error}")
    result.refusals = len(watcher.refusals)
    result.message_calls = watcher.message_calls
    result.paid_once = sum(count == 1 for count in watcher.paid_calls.values())
    result.paid_twice = sum(count > 1 for count in watcher.paid_calls.values())
    result.errors += [f"fake answered {failure}" for failure in watcher.other_failures]


def _callback_to_paid(database: Path, walks: Sequence[Walk]) -> list[float]:
    """Seconds from the order's ``paid_at`` (set when the callback was applied) to "Paid!"
    on screen, for each order whose paid message names it ("... for order DK-...")."""
    paid_on_screen: dict[str, float] = {}
    for walk in walks:
        found = re.search(r"order ([A-Z0-9-]+)", walk.paid_text)
        if found and walk.paid_wall is not None:
            paid_on_screen[found.group(1)] = walk.paid_wall
    if not paid_on_screen or not database.exists():
        return []
    delays = []
    with contextlib.closing(sqlite3.connect(database)) as db:
        rows = db.execute("SELECT reference, paid_at FROM orders WHERE paid_at IS NOT NULL")
        for reference, paid_at in rows:
            if reference in paid_on_screen:
                at = datetime.fromisoformat(str(paid_at))
                at = at if at.tzinfo else at.replace(tzinfo=UTC)
                delays.append(paid_on_screen[reference] - at.timestamp())
    return delays


def _read_log(result: RunResult, path: Path) -> None:
    for text in path.read_text(errors="replace").splitlines():
        if NO_MERCHANT in text:
            result.no_merchant_lines += 1
        elif " WARNING " in text or " ERROR " in text or "Traceback" in text:
            result.log_warnings += 1
            if len(result.log_samples) < 3:
                result.log_samples.append(text[:200])


def _print_run(result: RunResult) -> None:
    print(line(result), flush=True)
    for error in result.errors[:5]:
        print(f"    {result.kind}: {error}", flush=True)
    if result.log_warnings:
        print(f"    {result.kind} log: {result.log_warnings} warning/error lines, e.g.", flush=True)
        for sample in result.log_samples:
            print(f"      {sample}", flush=True)


async def bench(
    ns: Sequence[int],
    rtts: Sequence[int],
    think_seconds: float,
    patience: float,
    seed: int,
    profile: bool,
    merchant: bool,
) -> bool:
    print(
        f"Chat benchmark: N={list(ns)} customers, RTT={list(rtts)} ms, think "
        f"{think_seconds:.1f} s +/- 50%, fake Bot API with {FloodLimits()}, "
        f"{os.cpu_count()} CPU(s), python {sys.version.split()[0]}",
        flush=True,
    )
    # SIGTERM cancels the run, so that the bot processes are stopped on the way out.
    main_task = asyncio.current_task()
    assert main_task is not None
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, main_task.cancel)
    pairs: list[tuple[RunResult, RunResult]] = []
    for rtt_ms in rtts:
        for n in ns:
            floor = await run_once("floor", n, rtt_ms, think_seconds, patience, seed)
            _print_run(floor)
            duka = await run_once(
                "duka", n, rtt_ms, think_seconds, patience, seed, merchant=merchant
            )
            _print_run(duka)
            pairs.append((floor, duka))
    print()
    print(table(pairs))
    for text in targets(pairs):
        print(text)
    failed = [r for pair in pairs for r in pair if not r.ok]
    if failed:
        print(f"RUN FAILED: {len(failed)} run(s) lost answers or paid messages (see above)")
    if profile:
        n, rtt_ms = max(ns), rtts[0]
        print(f"\nprofiled extra Duka run, N={n} RTT {rtt_ms} ms (slower under cProfile; "
              "not part of the figures):", flush=True)  # fmt: skip
        profiled = await run_once(
            "duka", n, rtt_ms, think_seconds, patience, seed, profile=True, merchant=merchant
        )
        print(line(profiled))
        print(profiled.profile)
    return not failed


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        description="A rush of Telegram customers: duka serve vs a PTB echo bot (bench/README.md)"
    )
    parser.add_argument("--n", type=int, nargs="+", default=[20, 100, 300], help="customers")
    parser.add_argument("--rtt-ms", type=int, nargs="+", default=[0, 200], help="Bot API RTT")
    parser.add_argument("--quick", action="store_true", help="N=20, RTT 0 only (< 1 minute)")
    parser.add_argument("--think-ms", type=int, default=1000, help="mean pause between actions")
    parser.add_argument("--timeout", type=float, default=120.0, help="seconds per wait")
    parser.add_argument("--seed", type=int, default=1, help="for the think times")
    parser.add_argument("--profile", action="store_true", help="add a profiled Duka run")
    parser.add_argument(
        "--merchant", action="store_true", help="Duka tells one merchant chat of each paid order"
    )
    args = parser.parse_args(argv)
    if args.quick:
        args.n, args.rtt_ms = [20], [0]
    if min(args.n) < 1 or min(args.rtt_ms) < 0 or args.think_ms < 0 or args.timeout <= 0:
        parser.error("--n and --timeout must be positive, --rtt-ms and --think-ms not negative")
    run = bench(
        args.n, args.rtt_ms, args.think_ms / 1000, args.timeout, args.seed, args.profile,
        args.merchant,
    )  # fmt: skip
    try:
        ok = asyncio.run(run)
    except asyncio.CancelledError:  # SIGTERM: the bots have been stopped
        sys.exit(143)
    # Missing a target is a result, not an error; only a run that lost answers exits 1.
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()
