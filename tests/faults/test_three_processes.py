"""Three real ``duka serve`` processes on one PostgreSQL database (issue 10).

Thirty Telegram customers order and pay while their updates are spread round-robin over
three processes in webhook mode (so one chat's taps reach different processes), every
acknowledged Daraja callback is posted again to the other two processes, and one process
is SIGKILLed mid-run. Nothing may be lost or doubled: every order paid once, one "Paid!"
per customer and one merchant notice per order at the fake Bot API, one OAuth call for
the three processes, one reconciler at a time, and no deadlock in any log.

One Daraja simulator, shared by the three, runs in this test's event loop (its counters
are read directly) and serves real HTTP on loopback. The database is the test's own,
created on the PostgreSQL server of ``DUKA_TEST_POSTGRES_URL`` and dropped at the end.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import secrets
import time
from collections import Counter
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path
from typing import Any

import aiohttp
import asyncpg
import pytest
from sqlalchemy.engine import make_url

from bot.outbox_claims import CLAIM_LEASE
from payments.simulator import RunningSimulator, SimulatorConfig, start_simulator
from tests.conftest import REQUIRE_POSTGRES, SERVER_URL
from tests.e2e.test_telegram_shop import CATALOG
from tests.fakes.telegram_api import DEFAULT_TOKEN, FakeTelegram
from tests.faults.process import DUKA, DukaProcess

CUSTOMERS = 30
MERCHANT = 999
FIRST_CHAT = 5001
TAPPER = 4242  # the chat whose taps reach two processes at once
TAP_ROUNDS = 5
KILL_AFTER_PUSHES = 10  # customers told "check your phone" before one process dies
ARRIVAL_GAP = 0.1  # seconds between one customer's first message and the next one's
CALLBACK_SECRET = "three-processes-callback-secret-0123456789abcdef"
WEBHOOK_SECRET = "three-processes-webhook-secret"
REPLY_SECONDS = 10.0
SETTLE_SECONDS = 30.0
# A dead process's claimed outbox rows wait this long.
CLAIM_LEASE_SECONDS = CLAIM_LEASE.total_seconds()
TOML = (
    """
[shop]
name = "Test Duka"
[reconciliation]
query_after_seconds = 3
query_interval_seconds = 1
expire_after_seconds = 120
max_queries_per_second = 50
sweep_interval_seconds = 0.5
[limits]
chat_events_per_10_seconds = 60
"""
    + CATALOG
)
LOG_SWEEPS = "reconciler: this process sweeps"
LOG_DEADLOCK = "deadlock detected"


def phone_of(chat: int) -> str:
    """A number the simulator pays at once (suffix 100 and up: no special rule)."""
    return f"+254712345{100 + chat - FIRST_CHAT:03d}"


# --- a PostgreSQL database of this test's own ----------------------------------------------


def _dsn(database: str) -> str:
    url = make_url(SERVER_URL).set(drivername="postgresql", database=database)
    return url.render_as_string(hide_password=False)


@pytest.fixture
async def database_name() -> AsyncIterator[str]:
    name = f"duka_3p_{secrets.token_hex(4)}"
    try:
        admin = await asyncpg.connect(_dsn("postgres"), timeout=3)
    except (OSError, asyncpg.PostgresError) as exc:
        if REQUIRE_POSTGRES:
            pytest.fail(f"PostgreSQL is not usable ({exc})")
        pytest.skip(f"PostgreSQL is not usable ({exc})")
    try:
        await admin.execute(f'CREATE DATABASE "{name}"')
    finally:
        await admin.close()
    try:
        yield name
    finally:
        admin = await asyncpg.connect(_dsn("postgres"), timeout=3)
        try:
            await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        finally:
            await admin.close()


async def _query(database: str, sql: str, *args: object) -> list[asyncpg.Record]:
    conn = await asyncpg.connect(_dsn(database), timeout=3)
    try:
        return list(await conn.fetch(sql, *args))
    finally:
        await conn.close()


# --- three processes, a simulator and a fake Bot API ---------------------------------------


@dataclass
class Cluster:
    database: str
    telegram: FakeTelegram
    simulator: RunningSimulator
    processes: list[DukaProcess]
    routable: set[int] = field(default_factory=set)
    setup_seconds: float = 0.0  # migrate and start the three
    pushed_by: dict[int, int] = field(default_factory=dict)  # chat: process that pushed
    in_flight: Counter[int] = field(default_factory=Counter)  # updates not yet answered
    answered: asyncio.Condition = field(default_factory=asyncio.Condition)
    _turns: Iterator[int] = field(default_factory=itertools.count)

    def live(self) -> list[DukaProcess]:
        return [p for p in self.processes if p.process is not None and p.process.poll() is None]

    def webhook_url(self, index: int) -> str:
        return self.processes[index].url + "/telegram/webhook"

    def next_process(self) -> int:
        """Round-robin over the processes still taking updates."""
        while True:
            index = next(self._turns) % len(self.processes)
            if index in self.routable:
                return index

    async def deliver(self, update: dict[str, Any], index: int | None = None) -> int:
        """POST ``update`` to a process's webhook; the index of the one that took it."""
        index = self.next_process() if index is None else index
        status = await self.telegram.deliver_to_webhook(
            update, url=self.webhook_url(index), secret_token=WEBHOOK_SECRET
        )
        assert status == 200, f"process {index} answered {status}"
        return index


def _process_env(
    database: str, telegram: FakeTelegram, simulator: RunningSimulator
) -> dict[str, str]:
    """What the three processes share: the database, the simulator, the bot and merchant."""
    url = make_url(SERVER_URL).set(database=database)
    return {
        "DUKA_DATABASE_URL": url.render_as_string(hide_password=False),
        "MPESA_ENVIRONMENT": "simulator",
        "MPESA_BASE_URL": simulator.base_url,
        "TELEGRAM_BOT_TOKEN": DEFAULT_TOKEN,
        "TELEGRAM_API_BASE_URL": telegram.base_url,
        "TELEGRAM_WEBHOOK_SECRET": WEBHOOK_SECRET,
        "DUKA_MERCHANT_TELEGRAM_IDS": str(MERCHANT),
    }


async def _migrate(process: DukaProcess) -> None:
    migrate = await asyncio.create_subprocess_exec(
        DUKA,
        "migrate",
        cwd=process.workdir,
        env=process.env,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    output, _ = await migrate.communicate()
    assert migrate.returncode == 0, output.decode(errors="replace")


@pytest.fixture
async def cluster(tmp_path: Path, database_name: str) -> AsyncIterator[Cluster]:
    async with FakeTelegram() as telegram:
        simulator = await start_simulator(SimulatorConfig(callback_delay_seconds=0.5))
        processes: list[DukaProcess] = []
        try:
            env = _process_env(database_name, telegram, simulator)
            for n in range(3):
                workdir = tmp_path / f"p{n}"
                workdir.mkdir()
                process = DukaProcess(workdir, TOML, **env)
                # Fixed per process (a restart serves the same URLs), one secret for all, so
                # a callback is accepted at the same path on any of the three.
                process.env["MPESA_CALLBACK_URL"] = f"{process.url}/hooks/stk/{CALLBACK_SECRET}"
                process.env["TELEGRAM_WEBHOOK_URL"] = f"{process.url}/telegram/webhook"
                processes.append(process)
            started = time.monotonic()
            await _migrate(processes[0])
            await asyncio.gather(*(p.start() for p in processes))
            yield Cluster(
                database_name,
                telegram,
                simulator,
                processes,
                routable={0, 1, 2},
                setup_seconds=time.monotonic() - started,
            )
        finally:
            for process in processes:
                process.stop_quietly()
            await simulator.stop()


# --- callbacks copied to the other processes ------------------------------------------------


def _number(value: Decimal) -> int | float:
    return int(value) if value == value.to_integral_value() else float(value)


@dataclass
class CopiedCallbacks:
    posted: int = 0
    acknowledged: int = 0


async def copy_callbacks(cluster: Cluster, copied: CopiedCallbacks) -> None:
    """Every callback a process acknowledged is posted again to the other live processes,
    so callbacks land on all three; one the dead process missed is left to the reconciler."""
    sent = cluster.simulator.simulator.callbacks_sent
    seen = 0
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=10)) as session:
        while True:
            while seen < len(sent):  # the list grows while we post
                url, body, status = sent[seen]
                seen += 1
                if status != 200:
                    continue
                path = url.split("/hooks/stk/", 1)[1]
                text = json.dumps(body, default=_number)
                for process in cluster.live():
                    target = f"{process.url}/hooks/stk/{path}"
                    if target == url:
                        continue
                    copied.posted += 1
                    with contextlib.suppress(aiohttp.ClientError):
                        async with session.post(
                            target, data=text, headers={"Content-Type": "application/json"}
                        ) as response:
                            if response.status == 200:
                                copied.acknowledged += 1
            await asyncio.sleep(0.05)


# --- a customer at the fake Bot API ----------------------------------------------------------


def _buttons(fake: FakeTelegram, chat: int) -> list[tuple[str, str]]:
    found = []
    for message in reversed(fake.messages_to(chat)):
        for row in message.get("reply_markup", {}).get("inline_keyboard", []):
            found += [(b["text"], b["callback_data"]) for b in row]
    return found


def _replies_since(fake: FakeTelegram, chat: int, seen: int) -> list[str]:
    return [
        str(call.params.get("text", ""))
        for call in fake.calls[seen:]
        if call.method in {"sendMessage", "editMessageText"}
        and call.params.get("chat_id") == chat
        and not call.failed
    ]


async def _step(
    cluster: Cluster,
    chat: int,
    make_update: Callable[[], dict[str, Any]],
    done: Callable[[FakeTelegram], bool] | None = None,
) -> int:
    """Deliver one update of ``chat`` to the next process and wait until it is ``done``
    (by default: one answer on screen); the index of the process that took it."""
    fake = cluster.telegram
    done = done or _answered(chat, len(fake.calls), 1)
    index = await cluster.deliver(make_update())
    cluster.in_flight[index] += 1
    try:
        await fake.wait_for(done, timeout=REPLY_SECONDS)
        return index
    finally:
        async with cluster.answered:
            cluster.in_flight[index] -= 1
            cluster.answered.notify_all()


async def _press(cluster: Cluster, chat: int, label: str) -> None:
    fake = cluster.telegram
    await fake.wait_for(
        lambda f: any(label in text for text, _ in _buttons(f, chat)), timeout=REPLY_SECONDS
    )
    data = next(data for text, data in _buttons(fake, chat) if label in text)
    await _step(cluster, chat, lambda: fake.user_presses_button(chat, data))


async def _says(cluster: Cluster, chat: int, text: str) -> None:
    await _step(cluster, chat, lambda: cluster.telegram.user_sends_text(chat, text))


def _told_to_pay(fake: FakeTelegram, chat: int) -> bool:
    """The push went out: "check your phone" (or already "Paid!") is on the screen."""
    return any(t.startswith(("Check your phone", "Paid!")) for t in _replies_since(fake, chat, 0))


async def customer_orders_and_pays(cluster: Cluster, chat: int, delay: float) -> None:
    """The e2e shop flow (tests/e2e/test_telegram_shop.py), each tap to the next process."""
    fake = cluster.telegram
    await asyncio.sleep(delay)  # customers arrive over a few seconds, not all at once
    await _says(cluster, chat, "/start")
    for label in ("Vegetables", "Sukuma wiki", "+", "Add to cart", "Menu"):
        await _press(cluster, chat, label)
    for label in ("Staples", "Unga 2kg", "Add to cart", "Checkout", "Confirm order"):
        await _press(cluster, chat, label)
    assert any("Which M-Pesa number" in t for t in fake.texts_to(chat)), fake.texts_to(chat)
    cluster.pushed_by[chat] = await _step(
        cluster,
        chat,
        lambda: fake.user_shares_contact(chat, phone_of(chat), contact_user_id=chat),
        lambda f: _told_to_pay(f, chat),
    )


# --- what the processes and the fake saw -----------------------------------------------------


def _calls_with(fake: FakeTelegram, chat: int, start: str) -> int:
    """Every attempt (failed too) to put a text starting with ``start`` on ``chat``'s screen."""
    return sum(
        1
        for call in fake.calls
        if call.method in {"sendMessage", "editMessageText"}
        and call.params.get("chat_id") == chat
        and str(call.params.get("text", "")).startswith(start)
    )


async def _wait(predicate: Callable[[], Any], seconds: float, what: str) -> None:
    deadline = time.monotonic() + seconds
    while not await predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"not within {seconds} s: {what}")
        await asyncio.sleep(0.2)


def _log_of(process: DukaProcess) -> str:
    return process.log_path.read_text(errors="replace")


def _pids(cluster: Cluster) -> list[int]:
    return [p.process.pid if p.process is not None else -1 for p in cluster.processes]


async def _holder_of(cluster: Cluster, lease: str) -> int | None:
    """Which of our processes holds ``lease`` now (by its pid in ``processes``), if any."""
    rows = await _query(
        cluster.database,
        "SELECT p.pid FROM leases l JOIN processes p ON p.id = l.holder "
        "WHERE l.name = $1 AND l.expires_at > now()",
        lease,
    )
    pids = _pids(cluster)
    return pids.index(rows[0]["pid"]) if rows and rows[0]["pid"] in pids else None


async def _claims_of(cluster: Cluster) -> Counter[int]:
    """Unsent outbox rows each of our processes has claimed and still holds."""
    rows = await _query(
        cluster.database,
        "SELECT p.pid, count(*) AS n FROM outbox o JOIN processes p ON p.id = o.claimed_by "
        "WHERE o.status = 'pending' AND o.claimed_until > now() GROUP BY p.pid",
    )
    pids = _pids(cluster)
    return Counter({pids.index(r["pid"]): r["n"] for r in rows if r["pid"] in pids})


@dataclass
class Kill:
    victim: int
    claims: int  # outbox rows it held when killed: they wait out CLAIM_LEASE


async def _kill_one(cluster: Cluster) -> Kill:
    """SIGKILL a process that does not sweep, once no chat update it took is still
    unanswered (a webhook update is acknowledged before it is handled, so one in flight
    would die with it), preferring a moment when it holds no outbox claims (each would
    hold up its chat for CLAIM_LEASE, 60 s, as the reconciler's lease would hold up the
    sweeps: longer than this test may take) and has a push whose callback is still to
    come (so that callback finds it dead and the reconciler must settle that order)."""
    holder = await _holder_of(cluster, "reconciler")
    if holder is None:
        sweepers = [i for i, p in enumerate(cluster.processes) if LOG_SWEEPS in _log_of(p)]
        holder = sweepers[0] if sweepers else 0
    others = [i for i in range(len(cluster.processes)) if i != holder]
    deadline = time.monotonic() + 5.0
    for attempt in itertools.count():
        victim = others[attempt % len(others)]
        await _stop_routing_to(cluster, victim)
        claims = (await _claims_of(cluster))[victim]
        waiting = [
            chat
            for chat, index in cluster.pushed_by.items()
            if index == victim and not _calls_with(cluster.telegram, chat, "Paid!")
        ]
        if (not claims and waiting) or time.monotonic() > deadline:
            cluster.processes[victim].kill()
            return Kill(victim, claims)
        cluster.routable.add(victim)
        await asyncio.sleep(0.05)
    raise AssertionError("unreachable")


async def _stop_routing_to(cluster: Cluster, index: int) -> None:
    """No new updates to process ``index``; returns once it answered those it took."""
    cluster.routable.discard(index)
    async with cluster.answered:
        await cluster.answered.wait_for(lambda: not cluster.in_flight[index])


def _answered(chat: int, seen: int, count: int) -> Callable[[FakeTelegram], bool]:
    """Whether ``count`` answers reached ``chat`` after call ``seen``."""
    return lambda fake: len(_replies_since(fake, chat, seen)) >= count


async def _taps_to_two_processes_at_once(cluster: Cluster) -> list[str]:
    """Typed "1 unga" to two processes at the same moment, ``TAP_ROUNDS`` times; the
    "Added ..." answers, as the customer saw them."""
    fake = cluster.telegram
    first, second = sorted(cluster.routable)[:2]
    seen = len(fake.calls)
    for round_number in range(TAP_ROUNDS):
        await asyncio.gather(
            cluster.deliver(fake.user_sends_text(TAPPER, "1 unga"), first),
            cluster.deliver(fake.user_sends_text(TAPPER, "1 unga"), second),
        )
        await fake.wait_for(_answered(TAPPER, seen, 2 * (round_number + 1)), REPLY_SECONDS)
    return _replies_since(fake, TAPPER, seen)


async def test_three_processes_take_thirty_orders_and_a_sigkill_loses_and_doubles_nothing(
    cluster: Cluster,
) -> None:
    """30 customers, each tap to the next of three processes, callbacks copied to all; one
    process SIGKILLed mid-run: every order paid once, one "Paid!" and one merchant notice
    per order, one OAuth call, one reconciler, no deadlock."""
    started = time.monotonic()
    fake, sim = cluster.telegram, cluster.simulator.simulator
    copied = CopiedCallbacks()
    copier = asyncio.create_task(copy_callbacks(cluster, copied))
    chats = [FIRST_CHAT + n for n in range(CUSTOMERS)]
    shopping = [
        asyncio.create_task(customer_orders_and_pays(cluster, c, n * ARRIVAL_GAP))
        for n, c in enumerate(chats)
    ]
    try:
        await fake.wait_for(
            lambda f: (
                sum(_told_to_pay(f, chat) for chat in chats) >= KILL_AFTER_PUSHES
                and any(_calls_with(f, chat, "Paid!") for chat in chats)
            ),
            timeout=SETTLE_SECONDS,
        )
        kill = await _kill_one(cluster)
        killed_at = time.monotonic() - started
        paid_at_kill = sum(_calls_with(fake, chat, "Paid!") > 0 for chat in chats)
        await asyncio.gather(*shopping)
        taps = await _taps_to_two_processes_at_once(cluster)

        async def all_paid() -> bool:
            rows = await _query(
                cluster.database, "SELECT count(*) AS n FROM orders WHERE status = 'paid'"
            )
            return bool(rows[0]["n"] >= CUSTOMERS)

        await _wait(all_paid, SETTLE_SECONDS, f"{CUSTOMERS} orders paid")
        paid_in_db_at = time.monotonic() - started

        async def all_sent() -> bool:
            rows = await _query(
                cluster.database,
                "SELECT count(*) AS n FROM outbox WHERE status NOT IN ('sent', 'expanded')",
            )
            return bool(rows[0]["n"] == 0)

        # A row the dead process had claimed waits out CLAIM_LEASE before another sends it.
        await _wait(all_sent, SETTLE_SECONDS + CLAIM_LEASE_SECONDS, "every outbox row sent")
        sent_at = time.monotonic() - started
        await asyncio.sleep(1.5)  # longer than a dispatcher's poll: a second send would show
    finally:
        copier.cancel()
        for task in shopping:
            task.cancel()
        await asyncio.gather(copier, *shopping, return_exceptions=True)
    elapsed = time.monotonic() - started

    paid_per_customer = Counter({chat: _calls_with(fake, chat, "Paid!") for chat in chats})
    # Every attempt to show a merchant notice, by its order (a query-settled one shows no
    # receipt: Daraja's STK query answer carries none).
    notices = Counter(
        str(call.params["text"]).split(":", 1)[0].removeprefix("New paid order ")
        for call in fake.calls
        if call.method in {"sendMessage", "editMessageText"}
        and call.params.get("chat_id") == MERCHANT
        and str(call.params.get("text", "")).startswith("New paid order ")
    )
    references = {
        row["reference"] for row in await _query(cluster.database, "SELECT reference FROM orders")
    }
    receipts = [t.receipt for t in sim.transactions.values() if t.receipt is not None]
    payments = await _query(
        cluster.database,
        "SELECT order_id, count(*) FILTER (WHERE status = 'paid') AS paid, count(*) AS n "
        "FROM payments GROUP BY order_id",
    )
    settled_by = await _query(
        cluster.database,
        "SELECT coalesce(settled_by, '?') AS by, count(*) AS n FROM payments GROUP BY 1",
    )
    events = await _query(
        cluster.database,
        "SELECT source || ':' || status AS event, count(*) AS n FROM payment_events GROUP BY 1",
    )
    logs = [_log_of(p) for p in cluster.processes]
    deadlocks = [log.count(LOG_DEADLOCK) for log in logs]
    sweepers = [log.count(LOG_SWEEPS) for log in logs]
    holder = await _holder_of(cluster, "reconciler")
    failed_callbacks = sum(1 for _, _, status in sim.callbacks_sent if status != 200)
    by_query = sum(r["n"] for r in settled_by if r["by"] == "query")
    print(
        f"\nsetup {cluster.setup_seconds:.1f} s, wall {elapsed:.1f} s (kill at {killed_at:.1f} "
        f"s, orders paid in DB at {paid_in_db_at:.1f} s, outbox sent at {sent_at:.1f} s); "
        f"killed process {kill.victim} holding {kill.claims} outbox claims, "
        f"{paid_at_kill} customers paid before the kill\n"
        f"'Paid!' calls per customer: {sorted(Counter(paid_per_customer.values()).items())} "
        f"(count: customers); merchant notices per order "
        f"{sorted(Counter(notices[r] for r in references).items())} (count: orders), "
        f"{sum(notices.values())} in all\n"
        f"OAuth calls {sim.oauth_calls}, pushes {len(sim.push_requests)}, STK queries "
        f"{len(sim.query_requests)}, callbacks {len(sim.callbacks_sent)} ({failed_callbacks} "
        f"to the dead process), copies posted {copied.posted} acknowledged "
        f"{copied.acknowledged}\n"
        f"settled by {[(r['by'], r['n']) for r in settled_by]}; events "
        f"{sorted((r['event'], r['n']) for r in events)}; sweep log lines per process "
        f"{sweepers}; reconciler lease held by process {holder}; deadlocks per log {deadlocks}\n"
        f"two-process taps: {[t.split('.')[0] + ' / ' + t.rsplit(':', 1)[-1] for t in taps]}"
    )

    assert len(payments) == CUSTOMERS, payments
    assert all(row["paid"] == 1 for row in payments), payments
    assert len(receipts) == CUSTOMERS
    assert paid_per_customer == Counter({chat: 1 for chat in chats}), paid_per_customer
    assert notices == Counter({reference: 1 for reference in references}), notices
    assert sim.oauth_calls == 1
    assert sum(1 for n in sweepers if n) == 1, sweepers
    assert holder is not None
    assert holder != kill.victim
    assert deadlocks == [0, 0, 0]
    # A callback that found the process dead is settled by the reconciler's STK query.
    assert by_query >= failed_callbacks, (by_query, failed_callbacks)
    # Each turn saw the cart the turn before left: totals 210, 420, ... one each.
    totals = sorted(int(t.rsplit("KES", 1)[1].strip(" .").replace(",", "")) for t in taps)
    assert totals == [210 * n for n in range(1, 2 * TAP_ROUNDS + 1)], taps
