"""``duka demo``: the whole product on this machine, with no accounts and no internet.

The real server, the Daraja simulator, a fresh SQLite file and a sample catalog, with a
terminal chat in which you are the customer (the merchant's notifications show up too).
``--script`` plays a day of the shop instead (``bot.demo_script``): a delivery, pickups,
a failed-then-retried payment, a Paybill payment, a race for the last item, and the
merchant moving the delivery on; it exits 0 only when every paying order ends paid with
a receipt, the expected messages were delivered and nothing was oversold.
In the interactive demo, a line starting with ``!`` is typed by the merchant
(``!/today``, ``!/ready DK-7KX3M9``, ``!/report``...).

The simulator decides by the paying number; the interactive banner prints its rules from
``payments/simulator/rules.py``. The script's numbers: 0712 345 678 pays; 0712 000 011 is
cancelled the first time, then pays; 0712 000 002 never answers. ``paybill REF AMOUNT``
pays the Paybill by hand (Daraja's C2B); ``location`` shares a location in town.

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
import errno
import logging
import os
import secrets
import signal
import socket
import sys
import tempfile
from collections.abc import Coroutine, Iterator
from pathlib import Path
from typing import Any

from aiohttp import web

from bot.app import CONVERSATION, DARAJA, DATABASE, MERCHANT_DESK, access_logger_for, build_app
from bot.catalog import ProductSpec
from bot.channels.terminal import TerminalChannel, typed_lines
from bot.chat.engine import Conversation
from bot.config import load_config
from bot.demo_people import DEMO_PHONE, Customer, Merchant, Say, pay_by_paybill
from bot.demo_script import scripted
from bot.http_logging import RedactTokens
from bot.merchant import MerchantDesk
from payments.daraja_client import DarajaClient
from payments.errors import DarajaError
from payments.phone import InvalidPhoneNumber
from payments.simulator import rules_summary

log = logging.getLogger(__name__)

LOG_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"  # as ``duka serve``'s
EXIT_INTERRUPTED = 130  # 128 + SIGINT: what a shell reports for a program ended by Ctrl-C
# Stopped like Ctrl-C, so that the cleanup runs: a kill, and the terminal window closing.
STOP_SIGNALS = (signal.SIGTERM, *([signal.SIGHUP] if hasattr(signal, "SIGHUP") else []))

DEMO_CATALOG = (
    ProductSpec("sukuma", "Sukuma wiki (bunch)", 30, "Vegetables", "Fresh from Limuru."),
    ProductSpec("tomatoes", "Tomatoes 1kg", 120, "Vegetables", "Ripe, for today's stew."),
    ProductSpec("unga-2kg", "Unga wa ugali 2kg", 210, "Staples", "Maize flour."),
    ProductSpec("rice-1kg", "Pishori rice 1kg", 250, "Staples", "Mwea pishori."),
    ProductSpec("milk", "Milk 500ml", 65, "Drinks", "Fresh milk."),
)
# The shop delivers to two zones or is picked up from; one product has one left.
DEMO_SHOP = """[shop]
name = "Mama Njeri's Duka"
fulfilment = ["pickup", "delivery"]
pickup_point = "Stall 14, Gikomba Market"
pickup_hours = "Mon-Sat 7:00-19:00"
[[shop.delivery_zones]]
name = "CBD"
fee = 100
[[shop.delivery_zones]]
name = "Eastlands"
fee = 150
"""
LAST_TRAY = """[[catalog.products]]
sku = "mandazi"
name = "Mandazi (tray of 12)"
price = 120
category = "Snacks"
description = "Fresh this morning."
stock = 1
low_stock = 0
"""


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
            if signals or _terminal_closed(exc):
                # Stopping by a signal, or the window was closed and reading or writing the
                # terminal failed before the SIGHUP that follows was handled: it ends as
                # that signal would. What went wrong on the way out is in the log.
                log.warning("The demo stopped on %r while stopping", exc, exc_info=True)
                stop = signals[0] if signals else signal.SIGHUP
                code, ending = 128 + stop, f"\nStopped ({stop.name})."
            else:
                log.exception("The demo stopped on an unexpected error")
                ending = f"\nThe demo stopped on an unexpected error: {exc!r}"
    with contextlib.suppress(OSError):  # after SIGHUP there is no terminal to print to
        print(f"{ending}\nThe log of this run is in {log_file}".lstrip("\n"))
    return code


def _terminal_closed(exc: BaseException | None) -> bool:
    """Whether ``exc`` (or what caused it) is the EIO of a terminal that no longer exists."""
    while exc is not None:
        if isinstance(exc, OSError) and exc.errno == errno.EIO:
            return True
        exc = exc.__cause__ or exc.__context__
    return False


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
            f"{DEMO_SHOP}[simulator]\ncallback_delay_seconds = {callback_delay_seconds}\n"
            f"{catalog}{LAST_TRAY}"
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
            conversation, desk = app[CONVERSATION], app[MERCHANT_DESK]
            if script:
                database, daraja = app[DATABASE], app[DARAJA]
                return await scripted(conversation, terminal, database, daraja, desk, say)
            return await _interactive(conversation, terminal, app[DARAJA], desk, say)
        finally:
            await runner.cleanup()


async def _interactive(
    conversation: Conversation,
    terminal: TerminalChannel,
    daraja: DarajaClient,
    desk: MerchantDesk,
    say: Say,
) -> bool:
    say(_banner())
    you = Customer(conversation, terminal, "you", "You", lambda _: None)
    merchant = Merchant(desk, terminal, say)
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
            if line.startswith("!"):
                if not await merchant.types(line[1:].strip(), echo=False):
                    say(MERCHANT_HINT)
            elif line.lower() == "share":
                await you.shares_number(DEMO_PHONE)
            elif line.lower() == "location":
                await you.shares_location()
            elif line.lower().startswith("paybill "):
                await _paybill_line(daraja, say, line)
            elif terminal.button("you", line) is not None and (line.isdigit() or len(line) > 2):
                await you.presses(line)
            else:
                await you.types(line)


MERCHANT_HINT = (
    "Lines starting with ! are typed by the merchant: !/today, !/orders, !/order DK-..., "
    "!/ready DK-..., !/stock, !/report, !/export (the commands are in the README)."
)


def _banner() -> str:
    return (
        "You are the customer. Type a number to press a button, any text to chat, "
        f"'share' to share your number ({DEMO_PHONE}), /help for commands; 'quit', "
        "Ctrl-D or Ctrl-C to leave.\n"
        "Type another phone number to choose how the payment ends: the simulator decides "
        "by the paying number (Daraja's PartyA).\n"
        f"{rules_summary()}\n"
        "After a failed payment, 'Pay by Paybill' shows the Paybill details; type "
        "'paybill REF AMOUNT' (e.g. paybill DK-7KX3M9 270) to pay them. 'location' shares "
        "your location (for delivery).\n"
        f"{MERCHANT_HINT}"
    )


async def _paybill_line(daraja: DarajaClient, say: Say, line: str) -> None:
    """``paybill REF AMOUNT``: pay the shop's Paybill by hand from the demo phone."""
    parts = line.split()
    amount = parts[2].replace(",", "") if len(parts) == 3 else ""
    if not (amount.isascii() and amount.isdigit()):
        say("Type it as: paybill DK-7KX3M9 270")
        return
    try:
        await pay_by_paybill(daraja, say, "You", DEMO_PHONE, parts[1], int(amount))
    except (DarajaError, InvalidPhoneNumber) as exc:
        say(f"M-Pesa refused the Paybill payment: {exc}")
