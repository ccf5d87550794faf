"""What stops ``duka serve`` at start, as one line, and what it warns about.

Configuration errors found while reading ``config.toml`` and the environment are
``bot.config``'s. These are the ones found only when a setting is used: the database
cannot be reached, does not exist or is read-only, the port is taken, the log level is
unknown. Each becomes a ``ConfigError`` naming the setting as it was given (its
config.toml key or its environment variable) and the fix, never a traceback.
"""

from __future__ import annotations

import contextlib
import errno
import logging
import os
import socket
from collections.abc import AsyncIterator, Iterator

from sqlalchemy import Connection
from sqlalchemy.engine import make_url
from sqlalchemy.exc import DBAPIError

from bot.config import SANDBOX_SHORT_CODE, AppConfig, ConfigError
from bot.http_logging import LOG_FORMATS
from payments.settings import DarajaEnvironment
from storage.backup import ServerRunning, server_lock
from storage.engine import Database, migrate

LOG_LEVELS = ("debug", "info", "warning", "error")
# SQLSTATEs PostgreSQL answers a connection with (see its errcodes appendix).
_NO_DATABASE = "3D000"
_LOGIN_REFUSED = {"28000", "28P01"}


def log_level(text: str) -> str:
    """``--log-level`` as logging's name for it."""
    if text.strip().lower() not in LOG_LEVELS:
        raise ConfigError(
            "--log-level", f'"{text}" is not a log level', f"use one of {', '.join(LOG_LEVELS)}"
        )
    return text.strip().upper()


def log_format(text: str) -> str:
    """``DUKA_LOG_FORMAT``: text (the default) or json."""
    if text.strip().lower() not in LOG_FORMATS:
        raise ConfigError(
            "DUKA_LOG_FORMAT", f'"{text}" is not a log format', "use text (default) or json"
        )
    return text.strip().lower()


@contextlib.asynccontextmanager
async def opened_database(config: AppConfig) -> AsyncIterator[Database]:
    """The migrated database, held (SQLite: under the server lock) until the block ends."""
    with _server_lock(config):
        try:
            database = Database(config.database_url, config.sealer)
        except OSError as exc:
            raise _unusable(config, exc) from None
        try:
            try:
                async with database.engine.connect():
                    pass
            except (OSError, DBAPIError) as exc:
                raise _unusable(config, exc) from None
            try:
                await migrate(database.engine)
                if database.is_sqlite:
                    # Opening and reading work on a read-only file, and migrating may have
                    # had nothing to write: find out now, not at the first callback.
                    await database.transaction(_write_nothing)
            except DBAPIError as exc:
                if not _read_only(exc):
                    raise
                raise _unusable(config, exc) from None
            yield database
        finally:
            await database.dispose()


def _write_nothing(conn: Connection) -> None:
    conn.exec_driver_sql("DELETE FROM alembic_version WHERE 0")


@contextlib.contextmanager
def _server_lock(config: AppConfig) -> Iterator[None]:
    with contextlib.ExitStack() as stack:
        # Only taking the lock is translated: the server's own errors pass through it.
        try:
            stack.enter_context(server_lock(config.database_url))
        except ServerRunning:
            raise ConfigError(
                config.database_url_key,
                "`duka restore` is putting a backup in place of this database",
                "start again when it has finished",
            ) from None
        except OSError as exc:
            raise _unusable(config, exc) from None
        yield


def _unusable(config: AppConfig, exc: BaseException) -> ConfigError:
    url = make_url(config.database_url)
    key = config.database_url_key
    if url.get_backend_name() == "sqlite":
        if _read_only(exc):
            return ConfigError(
                key,
                f"the SQLite file {url.database} is read-only",
                "make it and its directory writable by the user running duka "
                f"(e.g. chmod u+w {url.database}), or point {key} at a writable file",
            )
        return ConfigError(
            key,
            f"cannot open or create the SQLite file {url.database} ({database_reason(exc)})",
            f"create its directory and make it writable, or point {key} at a writable path",
        )
    where = f"{url.host or 'localhost'}:{url.port or 5432}"
    state = sqlstate(exc)
    if state == _NO_DATABASE:
        return ConfigError(
            key,
            f"the database {url.database} does not exist on {where}",
            f"create it (createdb {url.database}) or correct the database name",
        )
    if state in _LOGIN_REFUSED:
        return ConfigError(
            key,
            f"{where} refused the login of user {url.username} ({database_reason(exc)})",
            "correct the user and password, or allow the login in pg_hba.conf",
        )
    if isinstance(exc, socket.gaierror):
        return ConfigError(key, f"the database host {url.host} is unknown", "correct the host name")
    return ConfigError(
        key,
        f"cannot reach the database at {where} ({database_reason(exc)})",
        "start PostgreSQL there, or correct the host and port",
    )


def _read_only(exc: BaseException) -> bool:
    text = str(exc).lower()
    return "readonly database" in text or getattr(exc, "errno", None) in {errno.EROFS}


def sqlstate(exc: BaseException) -> str | None:
    """The PostgreSQL error code somewhere in ``exc``'s chain (SQLAlchemy wraps asyncpg's)."""
    seen: BaseException | None = exc
    while seen is not None:
        state = getattr(seen, "sqlstate", None)
        if isinstance(state, str):
            return state
        seen = getattr(seen, "orig", None) or seen.__cause__
    return None


def database_reason(exc: BaseException) -> str:
    """The innermost cause in a few words, on one line, without the URL or parameters."""
    while isinstance(exc, DBAPIError) and exc.orig is not None:
        exc = exc.orig
    if isinstance(exc, OSError) and exc.errno:
        return os.strerror(exc.errno).lower()  # asyncio's own strerror quotes a tuple
    lines = str(exc).strip().splitlines()
    return lines[0].strip() if lines else type(exc).__name__


def port_unusable(config: AppConfig, exc: OSError) -> ConfigError | None:
    """The ConfigError for a failed bind, or None when ``exc`` is something else."""
    where = f"{config.http_host}:{config.http_port}"
    key = config.http_port_key
    if exc.errno == errno.EADDRINUSE:
        return ConfigError(
            key,
            f"{where} is already in use by another program",
            f"stop that program, or set {key} to a free port",
        )
    if exc.errno == errno.EACCES:
        return ConfigError(
            key,
            f"{where} needs privileges this user does not have (ports below 1024)",
            f"set {key} to 1024 or above, behind your reverse proxy",
        )
    return None


def start_warnings(config: AppConfig) -> list[str]:
    """What ``duka serve`` can run with but probably should not."""
    warnings = []
    if config.telegram is None and config.whatsapp is None:
        warnings.append(
            "no chat channel is on: customers cannot order. Set TELEGRAM_BOT_TOKEN, or the "
            "WHATSAPP_ settings"
        )
    if not config.catalog:
        warnings.append(
            "the catalog is empty: customers see nothing to buy. Add [[catalog.products]] to "
            "config.toml, or point DUKA_CATALOG at a catalog file"
        )
    daraja = config.daraja
    production = daraja.environment is DarajaEnvironment.PRODUCTION
    if production and _sandbox_short_code(daraja.short_code):
        warnings.append(
            f"MPESA_ENVIRONMENT is production but MPESA_SHORTCODE {daraja.short_code} looks like "
            "one of Safaricom's sandbox test short codes (600xxx): check it is your own"
        )
    return warnings


def _sandbox_short_code(short_code: str) -> bool:
    # 174379 is refused by bot.config; the sandbox's C2B test codes are 600000 to 600999.
    return short_code == SANDBOX_SHORT_CODE or (len(short_code) == 6 and short_code[:3] == "600")


def log_start_warnings(config: AppConfig, log: logging.Logger) -> None:
    for warning in start_warnings(config):
        log.warning("%s", warning)
