"""Backups of the SQLite database: a consistent copy while the server runs, and putting one back.

``backup_sqlite`` uses SQLite's online backup API in one step: the copy is one read
transaction's snapshot, so every transaction committed before it began (every callback
already acknowledged, since acknowledging waits for the commit) is in it, and writers go
on meanwhile (WAL). The copy is a single file (journal mode DELETE), written beside its
destination and renamed into place, so a half-written backup never carries its name.

A running server holds a shared ``flock`` on ``<database>.server-lock`` for as long as it
has the database open (``server_lock``); ``restore_sqlite`` takes it exclusively, so it
refuses while any server runs on that file, and a server cannot start mid-restore. The
kernel drops the lock when the process ends, however it ends: no stale lock files.

PostgreSQL is backed up with its own tools: ``pg_commands`` says which.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import shlex
import sqlite3
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

from sqlalchemy.engine import URL, make_url

from storage.engine import MIGRATIONS_DIR

LOCK_SUFFIX = ".server-lock"


class BackupError(Exception):
    """The backup or restore did not happen; the message says why and what to do."""


class ServerRunning(BackupError):
    """A server has the database open (or a restore is putting one in place)."""


def sqlite_file(database_url: str) -> Path | None:
    """The SQLite file of ``database_url``; None for PostgreSQL or an in-memory database."""
    url = make_url(database_url)
    if url.get_backend_name() != "sqlite" or not url.database or url.database == ":memory:":
        return None
    return Path(url.database)


def _lock_path(database: Path) -> Path:
    return database.with_name(database.name + LOCK_SUFFIX)


@contextlib.contextmanager
def server_lock(database_url: str) -> Iterator[None]:
    """Held by a server while it runs on a SQLite file (nothing for PostgreSQL)."""
    database = sqlite_file(database_url)
    if database is None:
        yield
        return
    database.parent.mkdir(parents=True, exist_ok=True)
    with _locked(database, fcntl.LOCK_SH):
        yield


@contextlib.contextmanager
def _locked(database: Path, kind: int) -> Iterator[None]:
    with _lock_path(database).open("a") as lock:
        try:
            fcntl.flock(lock, kind | fcntl.LOCK_NB)
        except BlockingIOError:
            raise ServerRunning(
                f"a duka server is running on {database}"
                if kind == fcntl.LOCK_EX
                else f"`duka restore` is putting a backup in place at {database}"
            ) from None
        yield  # closing the file releases the lock


def backup_sqlite(database: Path, target: Path) -> int:
    """Copy ``database`` to ``target`` consistently, even while it is written; its size."""
    if not database.is_file():
        raise BackupError(f"there is no database at {database}, so nothing to back up")
    if target.resolve() in {database.resolve(), *_companions(database.resolve())}:
        raise BackupError(f"{target} is the database itself; choose another file")
    # mode=rw: a mistyped path must fail, not create an empty database to back up.
    with contextlib.closing(_connect(database, "rw")) as source:
        source.execute("PRAGMA busy_timeout=10000")
        _copy(source, target)
    return target.stat().st_size


def check_backup(file: Path) -> str:
    """The migration revision of backup ``file``, after checking that this code can use it."""
    if not file.is_file():
        raise BackupError(f"there is no file {file}")
    try:
        with contextlib.closing(_connect(file, "ro")) as db:
            if db.execute("PRAGMA quick_check").fetchone() != ("ok",):
                raise BackupError(f"{file} is damaged (SQLite's quick_check fails)")
            row = db.execute("SELECT version_num FROM alembic_version").fetchone()
    except sqlite3.DatabaseError:
        raise BackupError(
            f"{file} is not a Duka database (no SQLite file with our schema)"
        ) from None
    if row is None:
        raise BackupError(f"{file} is not a Duka database (no schema revision recorded)")
    revision = str(row[0])
    # Imported here: only `duka restore` needs it, and Alembic costs a server ~11 MB.
    from alembic.script import ScriptDirectory

    known = {script.revision for script in ScriptDirectory(str(MIGRATIONS_DIR)).walk_revisions()}
    if revision not in known:
        raise BackupError(
            f"{file} was made by a newer Duka (schema revision {revision}, unknown here); "
            "restore it with that version"
        )
    return revision


def restore_sqlite(file: Path, database: Path, now: datetime | None = None) -> Path | None:
    """Put backup ``file`` in place of ``database`` (no server may be running on it).
    The database it replaces is kept beside it; its new name is returned (None: none was)."""
    check_backup(file)
    database.parent.mkdir(parents=True, exist_ok=True)
    with _locked(database, fcntl.LOCK_EX):
        staged = database.with_name(f".{database.name}.restoring")
        with contextlib.closing(_connect(file, "ro")) as source:
            _copy(source, staged)
        kept = None
        if database.exists():
            stamp = (now or datetime.now(UTC)).strftime("%Y%m%dT%H%M%SZ")
            kept = database.with_name(f"{database.name}.before-restore-{stamp}")
            # The WAL goes with its database: left behind, SQLite would replay the old
            # database's last transactions into the restored one.
            for old, new in zip(_companions(database), _companions(kept), strict=True):
                if old.exists():
                    old.rename(new)
            database.rename(kept)
        os.replace(staged, database)
        _sync_directory(database.parent)
    return kept


def pg_commands(database_url: str, file: Path) -> tuple[str, str]:
    """(backup, restore) commands for PostgreSQL; the password is left out of both."""
    given = make_url(database_url)
    # URL.set(password=None) would keep it: a new URL without one.
    url = URL.create(
        "postgresql", given.username, None, given.host, given.port, given.database, given.query
    )
    target = shlex.quote(url.render_as_string(hide_password=False))
    path = shlex.quote(str(file))
    return (
        f"pg_dump --format=custom --file={path} {target}",
        f"pg_restore --clean --if-exists --single-transaction --dbname={target} {path}",
    )


def _connect(file: Path, mode: str) -> sqlite3.Connection:
    return sqlite3.connect(f"{file.resolve().as_uri()}?mode={mode}", uri=True)


def _copy(source: sqlite3.Connection, target: Path) -> None:
    """The whole of ``source`` as one standalone file at ``target``, renamed into place."""
    staged = target.with_name(f".{target.name}.partial")
    staged.unlink(missing_ok=True)
    try:
        with contextlib.closing(sqlite3.connect(staged)) as copy:
            # pages=-1: one step, so one snapshot; in steps, every commit in between
            # would restart the copy.
            source.backup(copy, pages=-1)
            # One file to keep: no -wal beside it that could be lost on the way.
            copy.execute("PRAGMA journal_mode=DELETE")
        with staged.open("rb") as fh:
            os.fsync(fh.fileno())
        os.replace(staged, target)
    finally:
        staged.unlink(missing_ok=True)
    _sync_directory(target.parent)


def _companions(database: Path) -> tuple[Path, Path]:
    return database.with_name(database.name + "-wal"), database.with_name(database.name + "-shm")


def _sync_directory(directory: Path) -> None:
    """Make a rename in ``directory`` survive a power cut."""
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
