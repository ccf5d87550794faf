"""SIGTERM drains (issue 9): the real ``duka serve`` stops taking connections, answers every
request it received, stores every callback it acknowledged and exits 0 within 5 s, also while
python-telegram-bot is backing off.

The senders speak HTTP/1.1 over raw keep-alive sockets so that each request's fate is known
exactly: written whole, then answered, or the connection closed with no answer. They behave
as HTTP clients must: a response with ``Connection: close`` ends that connection, and a new
one is opened for the next request (refused once the server stopped listening).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import sqlite3
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from bench import loadgen
from tests.fakes.telegram_api import DEFAULT_TOKEN, FakeTelegram
from tests.faults.process import DukaProcess
from tests.faults.seeding import seed_pending_payments

CALLBACK_SECRET = "sigterm-drain-secret-0123456789abcdefghij"
CONNECTIONS = 50
SEEDED = 3000  # more than the senders get through before and while the server stops
SIGTERM_AFTER = 400  # callbacks acknowledged before the signal: the stream is in full flow
EXIT_BOUND_SECONDS = 5.0  # the bound


@dataclass
class Tally:
    """Every request's fate, as its sender saw it."""

    acknowledged: set[int] = field(default_factory=set)  # 200 with ResultCode 0
    other_answers: list[str] = field(default_factory=list)
    unanswered: list[str] = field(default_factory=list)  # sent whole, closed with no answer
    in_flight: int = 0  # sent whole, answer not yet read
    refused: int = 0  # new connections refused: the server stopped listening
    closes_asked: int = 0  # answers that carried Connection: close


async def _read_response(reader: asyncio.StreamReader) -> tuple[int, bytes, bool]:
    head = await reader.readuntil(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    status = int(lines[0].split(" ", 2)[1])
    headers = {
        name.strip().lower(): value.strip()
        for name, _, value in (line.partition(":") for line in lines[1:] if line)
    }
    body = await reader.readexactly(int(headers["content-length"]))
    return status, body, headers.get("connection", "").lower() == "close"


async def _sender(
    port: int, work: Iterator[tuple[int, str, bytes]], tally: Tally, stopping: asyncio.Event
) -> None:
    """Posts callbacks one after the other on one keep-alive connection, until refused."""
    reader: asyncio.StreamReader | None = None
    writer: asyncio.StreamWriter | None = None
    try:
        for payment_id, path, body in work:
            if writer is None:
                try:
                    reader, writer = await asyncio.open_connection("127.0.0.1", port)
                except OSError:
                    tally.refused += 1
                    return
            assert reader is not None
            head = (
                f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n"
                f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n"
            ).encode()
            try:
                writer.write(head + body)
                await writer.drain()
            except OSError:
                # Not sent whole: the server had already reset the connection.
                writer, reader = None, None
                if stopping.is_set():
                    return
                continue
            tally.in_flight += 1
            try:
                status, answer, closing = await _read_response(reader)
            except (OSError, asyncio.IncompleteReadError, asyncio.LimitOverrunError) as exc:
                tally.unanswered.append(f"payment {payment_id}: {type(exc).__name__} {exc}")
                writer.close()
                writer, reader = None, None
                continue
            finally:
                tally.in_flight -= 1
            if status == 200 and json.loads(answer).get("ResultCode") == 0:
                tally.acknowledged.add(payment_id)
            else:
                tally.other_answers.append(f"payment {payment_id}: {status} {answer[:80]!r}")
            if closing:
                tally.closes_asked += 1
                writer.close()
                writer, reader = None, None
    finally:
        if writer is not None:
            writer.close()


def _paid_payment_ids(database: Path) -> set[int]:
    with contextlib.closing(sqlite3.connect(f"file:{database}?mode=ro", uri=True)) as db:
        return {row[0] for row in db.execute("SELECT id FROM payments WHERE status = 'paid'")}


async def test_sigterm_answers_every_request_received_and_stores_every_callback_acknowledged(
    duka_process: DukaProcess,
) -> None:
    """50 keep-alive connections post real callbacks without pause; SIGTERM mid-stream."""
    url = f"{duka_process.url}/hooks/stk/{CALLBACK_SECRET}"
    duka_process.env["MPESA_CALLBACK_URL"] = url
    await seed_pending_payments(duka_process.database, SEEDED)
    await duka_process.start()
    ids = range(1, SEEDED + 1)
    paths = loadgen.attempt_paths(url, 1, SEEDED)
    work = iter(
        [
            (payment_id, path, loadgen.callback_body(loadgen.MEASURED_GROUP, payment_id))
            for payment_id, path in zip(ids, paths, strict=True)
        ]
    )
    tally = Tally()
    stopping = asyncio.Event()
    senders = [
        asyncio.create_task(_sender(duka_process.port, work, tally, stopping))
        for _ in range(CONNECTIONS)
    ]
    try:
        async with asyncio.timeout(20):
            while len(tally.acknowledged) < SIGTERM_AFTER:  # noqa: ASYNC110 (senders' count)
                await asyncio.sleep(0.005)
        in_flight_at_sigterm = tally.in_flight
        acknowledged_before = len(tally.acknowledged)
        stopping.set()
        code, seconds = await duka_process.terminate(timeout=15)
        async with asyncio.timeout(10):
            await asyncio.gather(*senders)
    finally:
        for task in senders:
            task.cancel()
    report = (
        f"in flight at SIGTERM: {in_flight_at_sigterm}, acknowledged before: "
        f"{acknowledged_before}, after: {len(tally.acknowledged) - acknowledged_before}, "
        f"unanswered: {len(tally.unanswered)}, refused: {tally.refused}, "
        f"Connection: close answers: {tally.closes_asked}, exit {code} in {seconds:.2f} s"
    )
    print(report)
    unanswered = "\n".join(tally.unanswered[:10])
    assert tally.unanswered == [], f"{report}\n{unanswered}\n{duka_process.log()}"
    assert tally.other_answers == [], tally.other_answers[:5]
    assert code == 0, duka_process.log()
    assert seconds < EXIT_BOUND_SECONDS, report
    assert len(tally.acknowledged) < SEEDED, "the senders ran out of callbacks: seed more"
    # Every callback acknowledged was stored and applied before the process ended.
    missing = tally.acknowledged - _paid_payment_ids(duka_process.database)
    assert not missing, f"{len(missing)} acknowledged callbacks not stored: {sorted(missing)[:10]}"


async def test_sigterm_exits_0_within_5_s_while_telegram_polling_backs_off(
    duka_process: DukaProcess,
) -> None:
    """getUpdates refused with retry_after=30: PTB sleeps 30.5 s before it polls again."""
    async with FakeTelegram() as telegram:
        duka_process.env |= {
            "TELEGRAM_BOT_TOKEN": DEFAULT_TOKEN,
            "TELEGRAM_API_BASE_URL": telegram.base_url,
        }
        await duka_process.start()
        await telegram.wait_for(lambda f: len(f.calls_of("getUpdates")) >= 1, timeout=15)
        telegram.fail_next("getUpdates", 429, retry_after=30)
        await telegram.wait_for(
            lambda f: any(c.status == 429 for c in f.calls_of("getUpdates")), timeout=15
        )
        await asyncio.sleep(0.5)  # well into the backoff
        code, seconds = await duka_process.terminate(timeout=40)
    assert code == 0, duka_process.log()
    assert seconds < EXIT_BOUND_SECONDS, f"exit took {seconds:.1f} s\n{duka_process.log()}"
