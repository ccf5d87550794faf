"""`duka serve` that cannot start says so in one line naming the setting and the fix, exit 2.

Each test runs the installed command with a clean environment and ``--log-level error``,
so that stderr holds what went wrong and nothing else: the one line, no traceback.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import secrets
import shutil
import socket
import sqlite3
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import asyncpg
import pytest
from sqlalchemy.engine import make_url

from tests.conftest import DATA_KEY, SERVER_URL

DUKA = str(Path(sys.executable).parent / "duka")


def serve(
    tmp_path: Path,
    toml: str = "",
    *,
    log_level: str = "error",
    prefix: tuple[str, ...] = (),
    **env: str,
) -> subprocess.CompletedProcess[str]:
    """``duka serve`` in ``tmp_path`` with ``toml`` as its config.toml and only ``env`` set."""
    (tmp_path / "config.toml").write_text(toml)
    return subprocess.run(  # noqa: S603 (our own command and arguments)
        [*prefix, DUKA, "--log-level", log_level, "serve"],
        cwd=tmp_path,
        env=clean_env(**env),
        capture_output=True,
        text=True,
        timeout=30,
    )


def clean_env(**env: str) -> dict[str, str]:
    """This process's environment without Duka's settings, plus a data key, any free port
    and ``env``."""
    clean = {
        name: value
        for name, value in os.environ.items()
        if not name.startswith(("DUKA_", "MPESA_", "TELEGRAM_", "WHATSAPP_"))
    }
    return clean | {"DUKA_DATA_KEY": DATA_KEY, "DUKA_HTTP_PORT": "0", **env}


def one_line(done: subprocess.CompletedProcess[str]) -> str:
    """The single stderr line of a refused start (exit 2, nothing on stdout)."""
    assert done.returncode == 2, done.stderr
    assert done.stdout == ""
    lines = done.stderr.splitlines()
    assert len(lines) == 1, done.stderr
    [line] = lines
    assert "Fix: " in line
    assert "Traceback" not in line
    assert "['" not in line, "a Python list's repr leaked"
    assert "('" not in line, "a Python tuple's repr leaked"
    return line


@pytest.fixture
def taken_port() -> Iterator[int]:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        yield sock.getsockname()[1]


def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def test_unknown_log_level(tmp_path: Path) -> None:
    line = one_line(serve(tmp_path, log_level="loud"))
    assert line == (
        'Configuration error in --log-level: "loud" is not a log level. '
        "Fix: use one of debug, info, warning, error"
    )


def test_unknown_log_format(tmp_path: Path) -> None:
    line = one_line(serve(tmp_path, DUKA_LOG_FORMAT="xml"))
    assert line == (
        'Configuration error in DUKA_LOG_FORMAT: "xml" is not a log format. '
        "Fix: use text (default) or json"
    )


def test_port_in_use_names_the_config_toml_key(tmp_path: Path, taken_port: int) -> None:
    database = f"sqlite+aiosqlite:///{tmp_path / 'duka.sqlite3'}"
    toml = f"[http]\nport = {taken_port}\n"
    # DUKA_HTTP_PORT empty counts as unset, so the file's port applies.
    line = one_line(serve(tmp_path, toml, DUKA_HTTP_PORT="", DUKA_DATABASE_URL=database))
    assert line == (
        f"Configuration error in http.port: 127.0.0.1:{taken_port} is already in use by "
        "another program. Fix: stop that program, or set http.port to a free port"
    )


def test_unreachable_database_names_the_environment_variable(tmp_path: Path) -> None:
    url = f"postgresql+asyncpg://duka:pw-not-shown@127.0.0.1:{closed_port()}/duka"
    line = one_line(serve(tmp_path, DUKA_DATABASE_URL=url))
    assert line.startswith("Configuration error in DUKA_DATABASE_URL: cannot reach the database")
    assert "(connection refused). Fix: start PostgreSQL there" in line
    assert "pw-not-shown" not in line


def test_database_that_does_not_exist(tmp_path: Path) -> None:
    name = f"duka_missing_{secrets.token_hex(4)}"
    server = make_url(SERVER_URL)
    if not _postgres_reachable():
        pytest.skip(f"no PostgreSQL at {server.host}:{server.port}")
    url = server.set(database=name).render_as_string(hide_password=False)
    line = one_line(serve(tmp_path, f'[database]\nurl = "{url}"\n'))
    assert line.startswith(f"Configuration error in database.url: the database {name} does not")
    assert f"Fix: create it (createdb {name})" in line


def test_read_only_sqlite_file(tmp_path: Path) -> None:
    database = tmp_path / "duka.sqlite3"
    with contextlib.closing(sqlite3.connect(database)) as db:
        db.execute("CREATE TABLE t (x)")
    database.chmod(0o444)
    prefix: tuple[str, ...] = ()
    if os.geteuid() == 0:  # root writes anyway, unless it gives up that capability
        if shutil.which("setpriv") is None:
            pytest.skip("running as root without setpriv: the file would be writable")
        caps = "-dac_override,-dac_read_search"
        prefix = ("setpriv", f"--inh-caps={caps}", f"--bounding-set={caps}")
    line = one_line(
        serve(tmp_path, prefix=prefix, DUKA_DATABASE_URL=f"sqlite+aiosqlite:///{database}")
    )
    assert line == (
        f"Configuration error in DUKA_DATABASE_URL: the SQLite file {database} is read-only. "
        "Fix: make it and its directory writable by the user running duka "
        f"(e.g. chmod u+w {database}), or point DUKA_DATABASE_URL at a writable file"
    )


def test_wrong_config_toml_value_shows_it_as_written(tmp_path: Path) -> None:
    line = one_line(serve(tmp_path, '[merchant]\ntelegram_ids = ["abc"]\n'))
    assert line == (
        'Configuration error in merchant.telegram_ids: ["abc"] are not all numeric chat ids. '
        "Fix: write e.g. 12345678,87654321"
    )


def test_wrong_environment_value_lists_names_not_a_tuple(tmp_path: Path) -> None:
    line = one_line(serve(tmp_path, WHATSAPP_ACCESS_TOKEN="token"))
    assert line == (
        "Configuration error in WHATSAPP_PHONE_NUMBER_ID: not set while other WHATSAPP_ "
        "settings are. Fix: set all of WHATSAPP_ACCESS_TOKEN, WHATSAPP_PHONE_NUMBER_ID, "
        "WHATSAPP_APP_SECRET, WHATSAPP_VERIFY_TOKEN"
    )


def first_log_lines(tmp_path: Path, count: int, **env: str) -> list[str]:
    """The first ``count`` lines a ``duka serve`` that starts logs at warning level; then
    it is stopped."""
    (tmp_path / "config.toml").write_text("")
    with subprocess.Popen(  # noqa: S603 (our own command and arguments)
        [DUKA, "--log-level", "warning", "serve"],
        cwd=tmp_path,
        env=clean_env(**env),
        stderr=subprocess.PIPE,
        text=True,
    ) as process:
        assert process.stderr is not None
        deadline = threading.Timer(30, process.kill)  # a missing line must not hang the test
        deadline.start()
        try:
            return [process.stderr.readline() for _ in range(count)]
        finally:
            deadline.cancel()
            process.terminate()


def test_serve_warns_without_a_chat_channel_or_a_catalog(tmp_path: Path) -> None:
    """A shop nobody can order from still starts (callbacks must be served), but says why."""
    first, second = first_log_lines(tmp_path, 2)
    assert "WARNING duka: no chat channel is on: customers cannot order" in first
    assert "WARNING duka: the catalog is empty: customers see nothing to buy" in second


def test_json_logs_are_one_object_a_line(tmp_path: Path) -> None:
    """DUKA_LOG_FORMAT=json: a log collector reads each line as one JSON object."""
    [first] = first_log_lines(tmp_path, 1, DUKA_LOG_FORMAT="json")
    record = json.loads(first)
    assert record["level"] == "WARNING"
    assert record["logger"] == "duka"
    assert record["message"].startswith("no chat channel is on")
    assert set(record) == {"asctime", "level", "logger", "message"}


def _postgres_reachable() -> bool:
    async def connect() -> None:
        server = make_url(SERVER_URL).set(drivername="postgresql")
        conn = await asyncpg.connect(server.render_as_string(hide_password=False), timeout=3)
        await conn.close()

    try:
        asyncio.run(connect())
    except (OSError, asyncpg.PostgresError):
        return False
    return True
