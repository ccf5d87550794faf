"""Database transactions and SQL statements per chat event, screen by screen.

Run from the project root::

    .venv/bin/python -m bench.chat_transactions [--repeat 5] [--json]

Method
------
Duka is built as the tests build it (``bot.app.build_app``, reconciler and dispatcher
off) on a fresh SQLite file, with its embedded Daraja simulator answering the pushes and
posting the callbacks back over HTTP. One customer per repetition then walks through the
whole shop by calling ``app[CONVERSATION].handle(Inbound(...))`` exactly as a channel
does: /start, a category, a product, a quantity, add to cart, the cart, checkout,
confirm, paying by shared contact, by the saved number ("Yes") and by a typed number
("Yes, pay"), a failed payment with "Try again" and "Cancel order", /cancel of an order,
/orders, the language and help commands, a greeting and unrecognised text.

Counting uses SQLAlchemy's engine events, on both engines a SQLite ``Database`` has: the
async engine's ``sync_engine`` (aiosqlite) and the blocking writer engine
(``database._blocking``) that ``Database.transaction`` runs on. ``begin`` counts
transactions (``commit`` and ``rollback`` say how each ended); ``before_cursor_execute``
counts statements, leaving out the ``BEGIN IMMEDIATE`` that storage/engine.py issues at
every begin (COMMIT does not go through a cursor). Nothing in the product is changed or
patched: the listeners are added to the running app's engines.

A reply carrying a ``tag`` (the "check your phone" message) costs the channel one more
transaction after ``handle``: ``Conversation.reply_through`` stores the sent message's
id with ``Conversation.remember``. The benchmark calls ``remember`` the same way for each
tagged reply, inside the event's window, and shows that share in its own column.

Background work must not leak into an event's window: after every event that starts a
payment the benchmark waits (reading the SQLite file with the ``sqlite3`` module, which
the listeners do not see) until the simulator's callback has settled the payment, before
the next event. The counts of every measured repetition are compared; "stable" says they
were all equal. Wall time is the median over the measured repetitions (one unmeasured
warm-up repetition first) and is printed relative to the Menu button's, because absolute
times say more about the machine than about the code; ``--json`` also gives milliseconds.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import socket
import sqlite3
import statistics
import tempfile
import threading
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from aiohttp import web
from sqlalchemy import Engine, event

from bot.app import CONVERSATION, DATABASE, build_app
from bot.chat.engine import Conversation
from bot.chat.model import Inbound, Reply
from bot.config import load_config
from storage.engine import Database
from storage.sealing import generate_key

DEFAULT_REPEAT = 5
CALLBACK_SECRET = "bench-callback-secret-0123456789abcdefgh"
SETTLE_TIMEOUT = 15.0  # seconds to wait for a payment's callback
OPEN_STATUSES = ("created", "pending", "unknown")
REFERENCE_STEP = "menu"  # wall times are printed relative to this step's
CONFIG_TOML = """
[shop]
name = "Bench Duka"
[simulator]
callback_delay_seconds = 0.1
[limits]
chat_events_per_10_seconds = 1000
prompts_per_phone_per_10_minutes = 1000
prompts_per_phone_per_day = 1000
prompts_per_customer_per_10_minutes = 1000
[[catalog.products]]
sku = "sukuma"
name = "Sukuma wiki"
price = 30
category = "Vegetables"
[[catalog.products]]
sku = "unga"
name = "Unga 2kg"
price = 210
category = "Staples"
[[catalog.products]]
sku = "sukari"
name = "Sukari 1kg"
price = 160
category = "Staples"
"""


# --------------------------------------------------------------------------- counting


@dataclass
class Tally:
    transactions: int = 0
    commits: int = 0
    rollbacks: int = 0
    statements: int = 0

    def minus(self, other: Tally) -> Tally:
        return Tally(
            self.transactions - other.transactions,
            self.commits - other.commits,
            self.rollbacks - other.rollbacks,
            self.statements - other.statements,
        )


class Counter:
    """Transactions and statements on the engines it is attached to, from any thread."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._tally = Tally()

    def attach(self, engine: Engine) -> None:
        event.listen(engine, "begin", self._on_begin)
        event.listen(engine, "commit", self._on_commit)
        event.listen(engine, "rollback", self._on_rollback)
        event.listen(engine, "before_cursor_execute", self._on_statement)

    def snapshot(self) -> Tally:
        with self._lock:
            t = self._tally
            return Tally(t.transactions, t.commits, t.rollbacks, t.statements)

    def _on_begin(self, _conn: Any) -> None:
        with self._lock:
            self._tally.transactions += 1

    def _on_commit(self, _conn: Any) -> None:
        with self._lock:
            self._tally.commits += 1

    def _on_rollback(self, _conn: Any) -> None:
        with self._lock:
            self._tally.rollbacks += 1

    def _on_statement(self, *args: Any) -> None:
        statement = str(args[2])  # (conn, cursor, statement, parameters, context, many)
        if statement.strip().upper().startswith("BEGIN"):
            return  # the BEGIN IMMEDIATE of every transaction, already counted above
        with self._lock:
            self._tally.statements += 1


def attach_counter(database: Database) -> Counter:
    counter = Counter()
    counter.attach(database.engine.sync_engine)
    if database._blocking is not None:
        counter.attach(database._blocking)
    return counter


# --------------------------------------------------------------------------- the journey


@dataclass
class Walk:
    """One customer's pass through the shop: its chat and phone numbers."""

    database_file: Path
    chat_id: str
    good_number: str  # ends in 123: the simulator pays
    poor_number: str  # ends in 004: "insufficient funds"
    order_id: int = 0  # the newest order, read after each "confirm"

    def newest_order(self) -> int:
        with contextlib.closing(sqlite3.connect(self.database_file)) as db:
            row = db.execute("SELECT max(id) FROM orders").fetchone()
        return int(row[0])

    def open_payments(self) -> int:
        marks = ",".join("?" * len(OPEN_STATUSES))
        with contextlib.closing(sqlite3.connect(self.database_file)) as db:
            row = db.execute(
                f"SELECT count(*) FROM payments WHERE status IN ({marks})", OPEN_STATUSES
            ).fetchone()
        return int(row[0])


@dataclass(frozen=True)
class Step:
    name: str
    event: Callable[[Walk], Inbound]
    pays: bool = False  # starts an M-Pesa prompt: wait for its callback afterwards
    confirms: bool = False  # creates an order: remember its id


def text(value: str | Callable[[Walk], str]) -> Callable[[Walk], Inbound]:
    def make(walk: Walk) -> Inbound:
        typed = value(walk) if callable(value) else value
        return Inbound("terminal", walk.chat_id, "Wanjiru", text=typed)

    return make


def button(value: str | Callable[[Walk], str]) -> Callable[[Walk], Inbound]:
    def make(walk: Walk) -> Inbound:
        data = value(walk) if callable(value) else value
        return Inbound("terminal", walk.chat_id, "Wanjiru", button=data)

    return make


def contact(walk: Walk) -> Inbound:
    phone = "+254" + walk.good_number[1:]
    return Inbound("terminal", walk.chat_id, "Wanjiru", contact_phone=phone, contact_is_own=True)


JOURNEY: tuple[Step, ...] = (
    # First order: a new customer, no saved number, pays by sharing the contact.
    Step("/start (new customer)", text("/start")),
    Step("category", button("cat:Staples")),
    Step("product", button("prod:unga")),
    Step("product: quantity 2", button("qty:unga:2")),
    Step("add to cart", button("add:unga:2")),
    Step("cart", button("cart")),
    Step("cart: +", button("inc:unga")),
    Step("cart: −", button("dec:unga")),
    Step("checkout (summary)", button("checkout")),
    Step("confirm order (no saved number)", button("confirm"), confirms=True),
    Step("share contact -> M-Pesa prompt", contact, pays=True),
    Step("/orders", text("/orders")),
    Step("menu", button("menu")),
    # Second order: the saved number, "Yes".
    Step("product (2nd order)", button("prod:sukari")),
    Step("add to cart (2nd order)", button("add:sukari:1")),
    Step("checkout (2nd order)", button("checkout")),
    Step("confirm order (saved number)", button("confirm"), confirms=True),
    Step("Yes [saved number] -> prompt", button("phone:yes"), pays=True),
    # Third order: another number, typed; the payment fails, is retried, then cancelled.
    Step("product (3rd order)", button("prod:unga")),
    Step("add to cart (3rd order)", button("add:unga:1")),
    Step("checkout (3rd order)", button("checkout")),
    Step("confirm order (3rd order)", button("confirm"), confirms=True),
    Step("Use another number", button("phone:other")),
    Step("typed number -> Pay KES ...?", text(lambda w: w.poor_number)),
    Step("Yes, pay [typed] -> prompt (fails)", button("phone:typed"), pays=True),
    Step("Try again -> prompt (fails)", button(lambda w: f"retry:{w.order_id}"), pays=True),
    Step("Cancel order (after failure)", button(lambda w: f"cancel:{w.order_id}")),
    # Fourth order: left at the phone step with /cancel.
    Step("product (4th order)", button("prod:sukari")),
    Step("add to cart (4th order)", button("add:sukari:1")),
    Step("checkout (4th order)", button("checkout")),
    Step("confirm order (4th order)", button("confirm"), confirms=True),
    Step("/cancel (order dropped, items back)", text("/cancel")),
    # The rest of the commands and free text.
    Step("/language", text("/language")),
    Step("language: Kiswahili", button("lang:sw")),
    Step("/help", text("/help")),
    Step("greeting (habari -> welcome)", text("habari")),
    Step("unrecognised text", text("ninataka kitu")),
)


@dataclass
class Measured:
    tally: Tally  # handle + the channel's remember() for tagged replies
    remember: int  # transactions of remember() alone
    seconds: float


@dataclass
class StepResult:
    name: str
    counts: list[tuple[int, int, int]] = field(default_factory=list)  # (tx, remember, stmts)
    seconds: list[float] = field(default_factory=list)
    rollbacks: int = 0


async def measure(conversation: Conversation, counter: Counter, walk: Walk, step: Step) -> Measured:
    inbound = step.event(walk)
    before = counter.snapshot()
    started = time.perf_counter()
    replies: list[Reply] = await conversation.handle(inbound)
    handled = counter.snapshot()
    for number, reply in enumerate(replies):
        if reply.tag:  # as Conversation.reply_through does after channel.send
            await conversation.remember(inbound.channel, walk.chat_id, reply.tag, str(number))
    seconds = time.perf_counter() - started
    after = counter.snapshot()
    if not replies:
        raise RuntimeError(f"{step.name}: no reply (flood gate?)")
    return Measured(after.minus(before), after.transactions - handled.transactions, seconds)


async def settle(walk: Walk) -> None:
    """Wait until no payment is open: the simulator's callback has been applied."""
    deadline = time.monotonic() + SETTLE_TIMEOUT
    while walk.open_payments():
        if time.monotonic() > deadline:
            raise RuntimeError("a payment did not settle: is the simulator's callback arriving?")
        await asyncio.sleep(0.02)
    await asyncio.sleep(0.05)  # let the inbox's writer finish what follows the status change


async def walk_once(conversation: Conversation, counter: Counter, walk: Walk) -> list[Measured]:
    results = []
    for step in JOURNEY:
        results.append(await measure(conversation, counter, walk, step))
        if step.confirms:
            walk.order_id = walk.newest_order()
        if step.pays:
            await settle(walk)
    return results


# --------------------------------------------------------------------------- the app


@contextlib.asynccontextmanager
async def running_duka(workdir: Path) -> AsyncIterator[web.Application]:
    """Duka as the tests start it: embedded simulator, reconciler and dispatcher off."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    config_file = workdir / "config.toml"
    config_file.write_text(CONFIG_TOML)
    config = load_config(
        env={
            "DUKA_DATABASE_URL": f"sqlite+aiosqlite:///{workdir / 'duka.sqlite3'}",
            "DUKA_HTTP_PORT": str(port),
            "MPESA_ENVIRONMENT": "simulator",
            "MPESA_CALLBACK_URL": f"http://127.0.0.1:{port}/hooks/stk/{CALLBACK_SECRET}",
            "DUKA_DATA_KEY": generate_key(),
        },
        path=config_file,
    )
    app = build_app(config, run_reconciler=False, run_dispatcher=False)
    runner = web.AppRunner(app, shutdown_timeout=2)
    await runner.setup()  # migration, catalog, simulator, inbox
    try:
        await web.SockSite(runner, sock).start()
        yield app
    finally:
        await runner.cleanup()
        sock.close()


def phone(repetition: int, ending: int) -> str:
    """A Safaricom-prefixed number of its own per repetition; the simulator reads the end."""
    return f"07{20000000 + repetition * 1000 + ending:08d}"


async def run(repeat: int) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="duka-chat-tx-") as tmp:
        workdir = Path(tmp)
        async with running_duka(workdir) as app:
            conversation = app[CONVERSATION]
            counter = attach_counter(app[DATABASE])
            results = [StepResult(step.name) for step in JOURNEY]
            warmup: list[tuple[int, int, int]] = []
            between = Tally()
            for repetition in range(repeat + 1):  # repetition 0: warm-up, not measured
                walk = Walk(
                    workdir / "duka.sqlite3",
                    f"bench-{repetition}",
                    phone(repetition, 123),
                    phone(repetition, 4),
                )
                start = counter.snapshot()
                measured = await walk_once(conversation, counter, walk)
                inside = sum(m.tally.transactions for m in measured)
                spent = counter.snapshot().minus(start).transactions
                between.transactions += spent - inside  # the callbacks, between events
                for result, m in zip(results, measured, strict=True):
                    counts = (m.tally.transactions, m.remember, m.tally.statements)
                    if repetition == 0:
                        warmup.append(counts)
                        continue
                    result.counts.append(counts)
                    result.seconds.append(m.seconds)
                    result.rollbacks += m.tally.rollbacks
    return report(results, warmup, repeat, between)


def report(
    results: list[StepResult], warmup: list[tuple[int, int, int]], repeat: int, between: Tally
) -> dict[str, Any]:
    medians = {r.name: statistics.median(r.seconds) for r in results}
    reference = medians[REFERENCE_STEP]
    steps = []
    for result in results:
        tx, remember, statements = result.counts[0]
        steps.append(
            {
                "step": result.name,
                "transactions": tx,
                "of_which_remember": remember,
                "statements": statements,
                "rollbacks": result.rollbacks,
                "stable": len(set(result.counts)) == 1,
                "median_ms": round(medians[result.name] * 1000, 3),
                "time_vs_menu": round(medians[result.name] / reference, 2),
            }
        )
    stable = all(s["stable"] for s in steps)
    return {
        "repetitions": repeat,
        "stable": stable,
        "warmup_differs": [
            r.name for r, w in zip(results, warmup, strict=True) if w != r.counts[0]
        ],
        "callback_transactions_per_walk": between.transactions / (repeat + 1),
        "total_transactions": sum(s["transactions"] for s in steps),
        "total_statements": sum(s["statements"] for s in steps),
        "steps": steps,
    }


def print_table(summary: dict[str, Any]) -> None:
    width = max(len(s["step"]) for s in summary["steps"])
    print(f"{'screen / event':{width}}  {'tx':>3}  {'(remember)':>10}  {'stmts':>5}  {'time':>6}")
    for s in summary["steps"]:
        remember = str(s["of_which_remember"]) if s["of_which_remember"] else ""
        flag = "" if s["stable"] else "  (counts varied between repetitions)"
        print(
            f"{s['step']:{width}}  {s['transactions']:3}  {remember:>10}  "
            f"{s['statements']:5}  {s['time_vs_menu']:5.1f}x{flag}"
        )
    print(
        f"{'total':{width}}  {summary['total_transactions']:3}  {'':>10}  "
        f"{summary['total_statements']:5}"
    )
    print()
    print(
        f"tx: database transactions per event (handle, plus reply_through's remember() for "
        f"a tagged reply, shown in (remember)); stmts: SQL statements, BEGIN not counted; "
        f"time: median wall time of {summary['repetitions']} repetitions, relative to "
        f"'{REFERENCE_STEP}'."
    )
    print(
        f"stable across repetitions: {'yes' if summary['stable'] else 'NO'}; "
        f"callback transactions between events: "
        f"{summary['callback_transactions_per_walk']:g} per walk (not in the table)."
    )
    if summary["warmup_differs"]:
        print("warm-up walk counted differently at: " + ", ".join(summary["warmup_differs"]))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--repeat", type=int, default=DEFAULT_REPEAT, help="measured walks")
    parser.add_argument("--json", action="store_true", help="print JSON instead of a table")
    args = parser.parse_args()
    if args.repeat < 1:
        parser.error("--repeat must be at least 1")
    summary = asyncio.run(run(args.repeat))
    if args.json:
        print(json.dumps(summary, indent=2, ensure_ascii=False))
    else:
        print_table(summary)


if __name__ == "__main__":
    main()
