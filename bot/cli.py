"""The ``duka`` command (also ``python -m bot``)."""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import sys
from collections.abc import Callable
from datetime import datetime
from pathlib import Path
from urllib.parse import urlsplit

import httpx

from bot import backups, reports, serving, startup
from bot import copy_db as copy_database
from bot.app import access_logger_for, build_app
from bot.catalog import CatalogError, CatalogFile
from bot.catalog_import import (
    CheckedCatalog,
    ImportReport,
    apply_checked,
    read_checked,
    unusable,
)
from bot.config import MIN_CALLBACK_SECRET_LENGTH, AppConfig, ConfigError, load_config
from bot.http_logging import configure_logging
from payments.credentials import NAIROBI
from payments.daraja_client import ALREADY_REGISTERED, DarajaClient
from payments.errors import C2BAlreadyRegistered, DarajaError
from storage.engine import Database, migrate
from storage.schema_version import CODE_HEADS
from storage.sealed_rows import rekey
from storage.sealing import CannotUnseal, generate_key

DESCRIPTION = """Duka: a chat shop on Telegram and WhatsApp that takes M-Pesa payments.
Settings come from config.toml (DUKA_CONFIG names another file) and the environment,
which wins; the README lists them all. `duka serve` runs the shop; `duka demo` tries it in
the terminal with no accounts."""


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="duka", description=DESCRIPTION, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    commands.add_parser(
        "serve",
        help="run the shop: the chat channels, the M-Pesa callback webhook, the reconciler "
        "and the message outbox, on DUKA_HTTP_HOST:DUKA_HTTP_PORT (default 127.0.0.1:8080; "
        "config.toml [http]) with the database in DUKA_DATABASE_URL (default "
        "./var/duka.sqlite3), migrated at start. SIGTERM or Ctrl-C stops it cleanly",
        description="Run the shop until SIGTERM or Ctrl-C. It has no options: every setting "
        "is in config.toml or the environment (see the README's settings table).",
    )
    demo = commands.add_parser(
        "demo", help="the shop in your terminal: you are the customer (no accounts needed)"
    )
    demo.add_argument(
        "--script", action="store_true", help="play three scripted customers and check the result"
    )
    demo.add_argument(
        "--callback-delay",
        type=float,
        default=1.0,
        metavar="SECONDS",
        help="how long the simulated M-Pesa takes from the PIN prompt to its answer "
        "(default: %(default)s)",
    )
    demo.add_argument(
        "--log-file",
        type=Path,
        metavar="PATH",
        help="where the log goes while the chat owns the terminal (overwritten; default: "
        "$XDG_STATE_HOME/duka/demo.log, i.e. ~/.local/state/duka/demo.log)",
    )
    commands.add_parser(
        "c2b-register",
        help="register the Paybill (C2B) confirmation and validation URLs with Daraja "
        "(MPESA_C2B_CONFIRMATION_URL, MPESA_C2B_VALIDATION_URL); safe to run again",
    )
    commands.add_parser(
        "keygen",
        help="print a new data key for DUKA_DATA_KEY (phone numbers are stored sealed with it)",
    )
    commands.add_parser(
        "rekey",
        help="re-seal stored phone numbers with DUKA_DATA_KEY (the old key in DUKA_DATA_KEY_OLD)",
    )
    export = commands.add_parser(
        "export",
        help="write the orders paid in a period as CSV (Nairobi days, both ends included)",
    )
    export.add_argument("--from", dest="first", metavar="YYYY-MM-DD", help="default: today")
    export.add_argument("--to", dest="last", metavar="YYYY-MM-DD", help="default: --from")
    export.add_argument("--out", type=Path, required=True, metavar="FILE")
    catalog = commands.add_parser("catalog", help="change the catalog without a restart")
    catalog_commands = catalog.add_subparsers(dest="catalog_command", required=True)
    catalog_import = catalog_commands.add_parser(
        "import",
        help="upsert the products of FILE (a [[products]] table) by sku, as start-up does, and "
        "hide the ones it leaves out; each change and each bad entry (by line) is printed, bad "
        "entries are skipped. Exit 0: all applied; 1: some entries skipped; 2: nothing read",
    )
    catalog_import.add_argument(
        "file", type=Path, metavar="FILE", help="TOML with [[products]] tables, as DUKA_CATALOG"
    )
    commands.add_parser(
        "migrate",
        help="bring the database to this version's schema and exit (duka serve also does it "
        "at start; run it once before restarting several servers on one database)",
    )
    backup = commands.add_parser(
        "backup",
        help="copy the SQLite database to FILE, consistently, while the server runs "
        "(for PostgreSQL: prints the pg_dump command); see docs/operations.md",
    )
    backup.add_argument("file", type=Path, metavar="FILE")
    restore = commands.add_parser(
        "restore",
        help="put backup FILE in place of the SQLite database (the server must be stopped; "
        "the replaced database is kept beside it)",
    )
    restore.add_argument("file", type=Path, metavar="FILE")
    copy_db = commands.add_parser(
        "copy-db", help=copy_database.HELP, description=copy_database.HELP
    )
    copy_db.add_argument(
        "--from",
        dest="source",
        required=True,
        metavar="URL",
        help="e.g. sqlite+aiosqlite:///./var/duka.sqlite3 (the database duka serve used)",
    )
    copy_db.add_argument(
        "--to",
        dest="target",
        required=True,
        metavar="URL",
        help="e.g. postgresql+asyncpg://duka@db.example.com/duka: an empty database (made "
        "with createdb); copy-db creates the tables",
    )
    simulator = commands.add_parser("simulator", help="run the Daraja simulator on its own")
    simulator.add_argument("--host", default="127.0.0.1", help="default: %(default)s")
    simulator.add_argument("--port", type=int, default=8090, help="default: %(default)s")
    simulator.add_argument(
        "--callback-delay",
        type=float,
        default=2.0,
        metavar="SECONDS",
        help="from an accepted STK push to its callback (default: %(default)s)",
    )
    parser.add_argument(
        "--log-level",
        default="INFO",
        metavar="LEVEL",
        help="debug, info, warning or error (default: info); DUKA_LOG_FORMAT=json makes the "
        "log one JSON object per line",
    )
    args = parser.parse_args(argv)
    try:
        log_format = startup.log_format(os.environ.get("DUKA_LOG_FORMAT") or "text")
        configure_logging(startup.log_level(args.log_level), log_format)
        if args.command == "serve":
            return _serve()
        if args.command == "c2b-register":
            return asyncio.run(_c2b_register(print))
        if args.command == "keygen":
            return _keygen()
        if args.command == "rekey":
            return asyncio.run(_rekey(print))
        if args.command == "export":
            return _export(args.first, args.last, args.out, print)
        if args.command == "catalog":
            return _catalog_import(args.file, print)
        if args.command == "migrate":
            return asyncio.run(_migrate(print))
        if args.command == "backup":
            return backups.backup(args.file, print)
        if args.command == "restore":
            return backups.restore(args.file, print)
        if args.command == "copy-db":
            return asyncio.run(copy_database.copy_db(args.source, args.target, print))
        if args.command == "demo":
            from bot import demo as demo_command

            return demo_command.main(
                script=args.script,
                callback_delay_seconds=args.callback_delay,
                log_file=args.log_file or demo_command.default_log_file(),
                log_level=startup.log_level(args.log_level),
            )
        from payments.simulator import SimulatorConfig, run_simulator_forever

        config = SimulatorConfig(callback_delay_seconds=args.callback_delay)
        asyncio.run(run_simulator_forever(config, args.host, args.port))
        return 0
    except ConfigError as exc:
        print(exc, file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 0


def _serve() -> int:
    config = load_config()
    startup.log_start_warnings(config, logging.getLogger("duka"))
    try:
        serving.serve(
            build_app(config, reload_catalog_on_sighup=True),
            config.http_host,
            config.http_port,
            access_logger_for(config),
        )
    except OSError as exc:
        # Binding comes after start-up: the port is known to be taken only then.
        problem = startup.port_unusable(config, exc)
        if problem is None:
            raise
        raise problem from None
    return 0


async def _migrate(say: Callable[[str], None]) -> int:
    """Migrate as ``duka serve`` does at start (same one-line errors), then stop."""
    config = load_config(with_catalog=False)
    async with startup.opened_database(config):
        pass
    say(f"The database is at schema {', '.join(sorted(CODE_HEADS))}, this version's.")
    return 0


def _keygen() -> int:
    """The key alone on stdout (for scripts); the advice on stderr."""
    print(generate_key())
    print(
        "Set DUKA_DATA_KEY to this key and keep a copy somewhere safe, apart from the database "
        "backups: without it the stored phone numbers cannot be read.",
        file=sys.stderr,
    )
    return 0


async def _rekey(say: Callable[[str], None]) -> int:
    """Re-seal every stored phone number with DUKA_DATA_KEY (reading with either key)."""
    config = load_config()
    database = Database(config.database_url, config.sealer)
    try:
        await migrate(database.engine)
        changed = await database.transaction(rekey, config.sealer)
    except CannotUnseal:
        say(
            "Some stored values open with neither DUKA_DATA_KEY nor DUKA_DATA_KEY_OLD: "
            "nothing was changed. Set DUKA_DATA_KEY_OLD to the key they were sealed with."
        )
        return 2
    finally:
        await database.dispose()
    done = "DUKA_DATA_KEY_OLD can now be removed" if config.sealer.rotating else "no old key set"
    say(f"Re-sealed {changed} rows with DUKA_DATA_KEY ({done}).")
    return 0


def _export(first: str | None, last: str | None, out: Path, say: Callable[[str], None]) -> int:
    """The orders paid from ``first`` to ``last`` as CSV in ``out``."""
    today = datetime.now(NAIROBI).date()
    words = [f"{first or today}..{last or first or today}"]
    try:
        period = reports.period_from(words, today)
    except reports.BadPeriod as exc:
        say(f"--from/--to: {exc}")
        return 2
    sold = asyncio.run(_paid_orders(period))
    try:
        out.write_text(reports.report_csv(sold), encoding="utf-8", newline="")
    except OSError as exc:
        say(f"--out: cannot write {out} ({exc.strerror}); choose a writable path")
        return 2
    say(f"Wrote {len(sold)} paid orders ({period}) to {out}.")
    return 0


async def _paid_orders(period: reports.Period) -> list[reports.PaidOrder]:
    config = load_config()
    database = Database(config.database_url, config.sealer)
    try:
        await migrate(database.engine)
        return await database.transaction(reports.paid_orders, period)
    finally:
        await database.dispose()


def _catalog_import(path: Path, say: Callable[[str], None]) -> int:
    """Apply the good entries of ``path``; 0 when all were good, 1 when some were skipped."""
    config = load_config(with_catalog=False)  # the file may be the configured one, and bad
    try:
        checked = read_checked(CatalogFile(path))
    except CatalogError as exc:
        say(unusable(exc))
        return 2
    report = asyncio.run(_apply_catalog(config, checked))
    for line in report.lines():
        say(line)
    served = config.catalog_file
    if served is not None and served.path.resolve() != path.resolve():
        # Otherwise the next start (or SIGHUP) quietly puts the old catalog back.
        say(f"Note: duka serve loads the catalog from {served.path}: change it there too.")
    return 0 if report.complete else 1


async def _apply_catalog(config: AppConfig, checked: CheckedCatalog) -> ImportReport:
    database = Database(config.database_url, config.sealer)
    try:
        await migrate(database.engine)
        return await database.transaction(apply_checked, checked)
    finally:
        await database.dispose()


async def _c2b_register(say: Callable[[str], None]) -> int:
    """Register our C2B URLs once; a second run explains instead of failing."""
    config = load_config()
    settings = config.daraja
    if not settings.c2b_confirmation_url:
        say(
            "MPESA_C2B_CONFIRMATION_URL is not set: set it to your public URL ending in a "
            "long secret (and optionally MPESA_C2B_VALIDATION_URL)"
        )
        return 2
    if settings.is_buy_goods:
        say("C2B registration is for a Paybill: a till has no account number to name the order")
        return 2
    if not settings.base_url:
        say(
            "MPESA_ENVIRONMENT=simulator without MPESA_BASE_URL: `duka serve` registers with its "
            "embedded simulator by itself; point MPESA_BASE_URL at a `duka simulator` to register "
            "there"
        )
        return 2
    shown = ", ".join(
        _redacted(url) for url in (settings.c2b_confirmation_url, settings.c2b_validation_url)
    )
    # The servers' shared Daraja token (PostgreSQL): a token of its own would end theirs.
    database = Database(config.database_url, config.sealer)
    async with httpx.AsyncClient() as http:
        try:
            client = DarajaClient(settings, http, database=database)
            answer = await client.register_c2b_urls()
        except C2BAlreadyRegistered:
            say(
                f"Short code {settings.short_code} already has C2B URLs registered (Daraja "
                f"{ALREADY_REGISTERED}: Urls are already registered). If they are {shown}, "
                "nothing more to do. Daraja never replaces them: to change them, ask Safaricom "
                "(apisupport@safaricom.co.ke) to delete the old ones, then run this again."
            )
            return 0
        except DarajaError as exc:
            say(f"Daraja refused the registration: {exc}")
            return 2
        finally:
            await database.dispose()
    say(f"Registered for short code {settings.short_code}: {shown} ({answer})")
    return 0


def _redacted(url: str) -> str:
    """The URL without its secret: only the last secret-holding segment is hidden."""
    parts = urlsplit(url)
    segments = parts.path.split("/")
    hidden = [
        "***" if len(segment) >= MIN_CALLBACK_SECRET_LENGTH else segment for segment in segments
    ]
    return f"{parts.scheme}://{parts.netloc}{'/'.join(hidden)}"
