"""``duka demo``: the whole product on this machine, with no accounts and no internet.

The real server, the Daraja simulator, a fresh SQLite file and a sample catalog, with a
terminal chat in which you are the customer (the merchant's notifications show up too).
``--script`` plays three customers instead: a happy path, a failed-then-retried one, and
one whose phone never answers the prompt and who pays by Paybill instead, through the
same server, simulator and database; it exits 0 only when every order ends paid with a
receipt and the expected messages were delivered.

The simulator decides by the paying number; the interactive banner prints its rules from
``payments/simulator/rules.py``. The script's numbers: 0712 345 678 pays; 0712 000 011 is
cancelled the first time, then pays; 0712 000 002 never answers. ``paybill REF AMOUNT``
pays the Paybill by hand (Daraja's C2B).

The chat owns the terminal, so logging goes to a file for the whole run (``--log-file``,
by default ``demo.log`` in the user's state directory, outside the demo's temporary
directory so that it outlives it), named at the start and at the end. The temporary
directory (configuration and database) is removed however the demo ends. Exit codes:
0 done (for ``--script``: every order paid), 1 not (or an unexpected error, whose
traceback is in the log), 2 the log file cannot be written, 130 Ctrl-C, and 128 + the
signal's number for SIGTERM (143) or SIGHUP (129, the terminal was closed).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import re
import secrets
import signal
import socket
import sys
import tempfile
from collections.abc import Callable, Coroutine, Iterator
from pathlib import Path
from typing import Any

from aiohttp import web
from sqlalchemy import Connection, select

from bot.app import CONVERSATION, DARAJA, DATABASE, access_logger_for, build_app
from bot.catalog import ProductSpec
from bot.channels.terminal import MERCHANT_CHAT, TerminalChannel, typed_lines
from bot.chat.engine import Conversation
from bot.chat.model import Inbound
from bot.config import load_config
from bot.http_logging import RedactTokens
from payments.daraja_client import DarajaClient
from payments.errors import DarajaError
from payments.outbox import OutboxStatus
from payments.phone import InvalidPhoneNumber, normalize_msisdn
from payments.simulator import rules_summary
from storage.engine import Database
from storage.schema import orders, outbox, payments

log = logging.getLogger(__name__)

Say = Callable[[str], None]
LOG_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"  # as ``duka serve``'s
EXIT_INTERRUPTED = 130  # 128 + SIGINT: what a shell reports for a program ended by Ctrl-C
# Stopped like Ctrl-C, so that the cleanup runs: a kill, and the terminal window closing.
STOP_SIGNALS = (signal.SIGTERM, *([signal.SIGHUP] if hasattr(signal, "SIGHUP") else []))
DEMO_PHONE = "0712 345 678"
WAIT_SECONDS = 30.0

DEMO_CATALOG = (
    ProductSpec("sukuma", "Sukuma wiki (bunch)", 30, "Vegetables", "Fresh from Limuru."),
    ProductSpec("tomatoes", "Tomatoes 1kg", 120, "Vegetables", "Ripe, for today's stew."),
    ProductSpec("unga-2kg", "Unga wa ugali 2kg", 210, "Staples", "Maize flour."),
    ProductSpec("rice-1kg", "Pishori rice 1kg", 250, "Staples", "Mwea pishori."),
    ProductSpec("milk", "Milk 500ml", 65, "Drinks", "Fresh milk."),
)


def default_log_file() -> Path:
    """``$XDG_STATE_HOME/duka/demo.log`` (``~/.local/state/duka/demo.log``): overwritten by
    each run, never left in the temporary directory nor in whatever directory you are in."""
    state = os.environ.get("XDG_STATE_HOME") or Path.home() / ".local" / "state"
    return Path(state) / "duka" / "demo.log"


def main(*, script: bool, callback_delay_seconds: float, log_file: Path, log_level: str) -> int:
    """``duka demo``: run it with logging in ``log_file``; the exit code (module docstring)."""
    try:
        handler = _log_file_handler(log_file)
    except OSError as exc:
        print(
            f"Cannot write the demo's log to {log_file} ({exc}): choose --log-file PATH",
            file=sys.stderr,
        )
        return 2
    code, ending = 1, ""
    signals: list[signal.Signals] = []
    with _logging_into(handler, log_level):
        try:
            demo = run_demo(
                script=script, callback_delay_seconds=callback_delay_seconds, log_file=log_file
            )
            code = 0 if asyncio.run(_stopped_by(STOP_SIGNALS, demo, signals)) else 1
        except KeyboardInterrupt:
            code, ending = EXIT_INTERRUPTED, "\nStopped (Ctrl-C)."
        except asyncio.CancelledError:
            if not signals:
                raise
            code, ending = 128 + signals[0], f"\nStopped ({signals[0].name})."
        except Exception as exc:
            log.exception("The demo stopped on an unexpected error")
            ending = f"\nThe demo stopped on an unexpected error: {exc!r}"
    with contextlib.suppress(OSError):  # after SIGHUP there is no terminal to print to
        print(f"{ending}\nThe log of this run is in {log_file}".lstrip("\n"))
    return code


def _log_file_handler(path: Path) -> logging.Handler:
    path.parent.mkdir(parents=True, exist_ok=True)
    handler = logging.FileHandler(path, mode="w", encoding="utf-8")
    handler.setFormatter(logging.Formatter(LOG_FORMAT))
    handler.addFilter(RedactTokens())
    return handler


@contextlib.contextmanager
def _logging_into(handler: logging.Handler, level: str) -> Iterator[None]:
    """Every log record, and every warning, goes to ``handler`` alone while the demo runs:
    a handler on the console would print its lines inside the chat."""
    root = logging.getLogger()
    saved_handlers, saved_level = root.handlers[:], root.level
    root.handlers[:] = [handler]
    root.setLevel(level)
    # httpx logs every request line at INFO (as in ``configure_logging``).
    for noisy in ("httpx", "httpcore"):
        logging.getLogger(noisy).setLevel(max(logging.WARNING, root.level))
    logging.captureWarnings(True)
    try:
        yield
    finally:
        logging.captureWarnings(False)
        root.handlers[:] = saved_handlers
        root.setLevel(saved_level)
        handler.close()


async def _stopped_by(
    signums: tuple[signal.Signals, ...],
    demo: Coroutine[Any, Any, bool],
    received: list[signal.Signals],
) -> bool:
    """``demo``, cancelled by any of ``signums`` (noted in ``received``) as asyncio.run
    cancels it on Ctrl-C, so that its cleanup (the server, the temporary directory) runs."""
    loop = asyncio.get_running_loop()
    task = asyncio.current_task()
    assert task is not None

    def stop(signum: signal.Signals) -> None:
        received.append(signum)
        task.cancel()

    for signum in signums:
        with contextlib.suppress(NotImplementedError):  # Windows has no loop signal handlers
            loop.add_signal_handler(signum, stop, signum)
    try:
        return await demo
    finally:
        for signum in signums:
            with contextlib.suppress(NotImplementedError):
                loop.remove_signal_handler(signum)


async def run_demo(
    say: Say = print,
    *,
    script: bool,
    callback_delay_seconds: float = 1.0,
    log_file: Path | None = None,
) -> bool:
    """The demo in a temporary directory that is removed however this ends (also when it is
    cancelled, or interrupted by Ctrl-C at the prompt). ``log_file`` is only named here."""
    with tempfile.TemporaryDirectory(prefix="duka-demo-") as workdir, socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
        config_path = Path(workdir) / "demo.toml"
        catalog = "".join(
            f'[[catalog.products]]\nsku = "{p.sku}"\nname = "{p.name}"\nprice = {p.price}\n'
            f'category = "{p.category}"\ndescription = "{p.description}"\n'
            for p in DEMO_CATALOG
        )
        config_path.write_text(
            f'[shop]\nname = "Mama Njeri\'s Duka"\n'
            f"[simulator]\ncallback_delay_seconds = {callback_delay_seconds}\n{catalog}"
        )
        config = load_config(
            env={
                "DUKA_DATABASE_URL": f"sqlite+aiosqlite:///{Path(workdir) / 'duka.sqlite3'}",
                "DUKA_HTTP_PORT": str(port),
                "MPESA_ENVIRONMENT": "simulator",
                # The Paybill fallback, served and registered with the built-in simulator.
                "MPESA_C2B_CONFIRMATION_URL": (
                    f"http://127.0.0.1:{port}/hooks/c2b/{secrets.token_hex(24)}"
                ),
            },
            path=config_path,
        )
        terminal = TerminalChannel(say)
        app = build_app(config, terminal=terminal, dispatch_seconds=0.2)
        runner = web.AppRunner(app, access_log_class=access_logger_for(config))
        await runner.setup()
        await web.SockSite(runner, sock).start()
        try:
            say(
                f"{config.shop_name} is open on http://127.0.0.1:{port} "
                "(M-Pesa: the built-in Daraja simulator; no real money moves)."
                + (f" Its log: {log_file}" if log_file else "")
            )
            if script:
                return await _scripted(app[CONVERSATION], terminal, app[DATABASE], app[DARAJA], say)
            return await _interactive(app[CONVERSATION], terminal, app[DARAJA], say)
        finally:
            await runner.cleanup()


class _Customer:
    """A customer in the terminal chat: says things and presses buttons by label."""

    def __init__(
        self,
        conversation: Conversation,
        terminal: TerminalChannel,
        chat_id: str,
        name: str,
        say: Say,
    ) -> None:
        self.conversation, self.terminal, self.chat_id = conversation, terminal, chat_id
        self.name, self._say = name, say

    async def types(self, text: str) -> None:
        self._say(f"[{self.name}] {text}")
        await self._send(Inbound("terminal", self.chat_id, self.name, text=text))

    async def presses(self, label: str) -> None:
        button = self.terminal.button(self.chat_id, label)
        if button is None:
            raise DemoFailed(f"{self.name} sees no button {label!r}")
        self._say(f"[{self.name} presses] {button.label}")
        await self._send(Inbound("terminal", self.chat_id, self.name, button=button.data))

    async def shares_number(self, phone: str) -> None:
        self._say(f"[{self.name} shares their number] {phone}")
        await self._send(
            Inbound("terminal", self.chat_id, self.name, contact_phone=phone, contact_is_own=True)
        )

    async def _send(self, event: Inbound) -> None:
        await self.conversation.reply_through(self.terminal, event)

    async def waits_for(self, words: str) -> None:
        """Until a message containing ``words`` reaches this chat."""
        await _wait_for_messages(self.terminal, self.chat_id, words, 1)

    def last_message(self) -> str:
        return self.terminal.messages.get(self.chat_id, [""])[-1]


async def _pay_by_paybill(
    daraja: DarajaClient, say: Say, who: str, phone: str, reference: str, amount: int
) -> None:
    """The customer's own M-Pesa menu: Lipa na M-Pesa → Paybill → account → amount."""
    say(f"[{who} pays by Paybill from {phone}] account {reference}, KES {amount:,}")
    await daraja.simulate_c2b(normalize_msisdn(phone).msisdn, amount, reference)


async def _wait_for_messages(
    terminal: TerminalChannel, chat_id: str, words: str, count: int
) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + WAIT_SECONDS
    while sum(words in text for text in terminal.messages.get(chat_id, [])) < count:
        if loop.time() > deadline:
            raise DemoFailed(f"{chat_id} never got {count} message(s) with {words!r}")
        await asyncio.sleep(0.05)


class DemoFailed(Exception):
    pass


async def _scripted(
    conversation: Conversation,
    terminal: TerminalChannel,
    database: Database,
    daraja: DarajaClient,
    say: Say,
) -> bool:
    wanjiru = _Customer(conversation, terminal, "wanjiru", "Wanjiru", say)
    otieno = _Customer(conversation, terminal, "otieno", "Otieno", say)
    kamau = _Customer(conversation, terminal, "kamau", "Kamau", say)
    try:
        say("\n--- 1. Wanjiru orders and pays ---")
        await wanjiru.types("/start")
        await wanjiru.presses("Vegetables")
        await wanjiru.presses("Sukuma")
        await wanjiru.presses("+")
        await wanjiru.presses("Add to cart")
        await wanjiru.presses("Menu")
        await wanjiru.presses("Staples")
        await wanjiru.presses("Unga")
        await wanjiru.presses("Add to cart")
        await wanjiru.presses("Cart")
        await wanjiru.presses("Checkout")
        await wanjiru.presses("Confirm order")
        await wanjiru.shares_number(DEMO_PHONE)
        await wanjiru.waits_for("Paid!")

        say("\n--- 2. Otieno's first payment is cancelled on his phone; he tries again ---")
        await otieno.types("/start")
        await otieno.presses("Drinks")
        await otieno.presses("Milk")
        await otieno.presses("Add to cart")
        await otieno.presses("Checkout")
        await otieno.presses("Confirm order")
        await otieno.types("0712 000 011")
        await otieno.presses("Yes, pay")
        await otieno.waits_for("did not go through")
        await otieno.presses("Try again")
        await otieno.waits_for("Paid!")

        say("\n--- 3. Kamau's phone never shows the prompt; he pays by Paybill instead ---")
        await kamau.types("/start")
        await kamau.presses("Staples")
        await kamau.presses("Pishori")
        await kamau.presses("Add to cart")
        await kamau.presses("Checkout")
        await kamau.presses("Confirm order")
        await kamau.types("0712 000 002")
        await kamau.presses("Yes, pay")
        await kamau.waits_for("did not go through")
        await kamau.presses("Pay by Paybill")
        instructions = re.search(r"Account (DK-\w+) → KES ([\d,]+)", kamau.last_message())
        if instructions is None:
            raise DemoFailed("Kamau got no Paybill instructions")
        amount = int(instructions.group(2).replace(",", ""))
        await _pay_by_paybill(daraja, say, "Kamau", "0712 000 002", instructions.group(1), amount)
        await kamau.waits_for("Paid!")
        await _wait_for_messages(terminal, MERCHANT_CHAT, "New paid order", 3)
    except DemoFailed as exc:
        say(f"\nDEMO FAILED: {exc}")
        return False
    return await _check(database, terminal, say)


async def _check(database: Database, terminal: TerminalChannel, say: Say) -> bool:
    paid, receipts, delivered = await database.transaction(_outcome)
    merchant_notes = sum("New paid order" in m for m in terminal.messages.get(MERCHANT_CHAT, []))
    ok = paid == 3 and receipts == 3 and delivered and merchant_notes == 3
    say(
        f"\nOrders paid: {paid}/3, receipts: {receipts}/3, all messages delivered: {delivered}, "
        f"merchant notifications: {merchant_notes}/3 -> {'OK' if ok else 'NOT OK'}"
    )
    return ok


def _outcome(conn: Connection) -> tuple[int, int, bool]:
    paid = len(conn.execute(select(orders.c.id).where(orders.c.status == "paid")).all())
    receipts = len(
        conn.execute(
            select(payments.c.id).where(
                payments.c.status == "paid", payments.c.mpesa_receipt.is_not(None)
            )
        ).all()
    )
    undelivered = conn.execute(
        select(outbox.c.id).where(outbox.c.status.in_([OutboxStatus.PENDING, OutboxStatus.FAILED]))
    ).all()
    return paid, receipts, not undelivered


async def _interactive(
    conversation: Conversation, terminal: TerminalChannel, daraja: DarajaClient, say: Say
) -> bool:
    say(_banner())
    you = _Customer(conversation, terminal, "you", "You", lambda _: None)
    with typed_lines() as lines:
        await you.types("/start")
        while True:
            try:
                line = (await lines.read_line()).strip()
            except EOFError:
                return True
            if line.lower() in {"quit", "exit"}:
                return True
            if not line:
                continue
            if line.lower() == "share":
                await you.shares_number(DEMO_PHONE)
            elif line.lower().startswith("paybill "):
                await _paybill_line(daraja, say, line)
            elif terminal.button("you", line) is not None and (line.isdigit() or len(line) > 2):
                await you.presses(line)
            else:
                await you.types(line)


def _banner() -> str:
    return (
        "You are the customer. Type a number to press a button, any text to chat, "
        f"'share' to share your number ({DEMO_PHONE}), /help for commands; 'quit', "
        "Ctrl-D or Ctrl-C to leave.\n"
        "Type another phone number to choose how the payment ends: the simulator decides "
        "by the paying number (Daraja's PartyA).\n"
        f"{rules_summary()}\n"
        "After a failed payment, 'Pay by Paybill' shows the Paybill details; type "
        "'paybill REF AMOUNT' (e.g. paybill DK-7KX3M9 270) to pay them."
    )


async def _paybill_line(daraja: DarajaClient, say: Say, line: str) -> None:
    """``paybill REF AMOUNT``: pay the shop's Paybill by hand from the demo phone."""
    parts = line.split()
    amount = parts[2].replace(",", "") if len(parts) == 3 else ""
    if not (amount.isascii() and amount.isdigit()):
        say("Type it as: paybill DK-7KX3M9 270")
        return
    try:
        await _pay_by_paybill(daraja, say, "You", DEMO_PHONE, parts[1], int(amount))
    except (DarajaError, InvalidPhoneNumber) as exc:
        say(f"M-Pesa refused the Paybill payment: {exc}")
