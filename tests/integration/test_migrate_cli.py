"""`duka migrate`: the schema brought to this version's once, before servers start."""

from __future__ import annotations

import contextlib
import sqlite3
import subprocess
from pathlib import Path

from storage.schema_version import CODE_HEADS
from tests.integration.test_startup_errors import DUKA, clean_env, closed_port, one_line


def migrate(tmp_path: Path, **env: str) -> subprocess.CompletedProcess[str]:
    (tmp_path / "config.toml").write_text("")
    return subprocess.run(  # noqa: S603 (our own command and arguments)
        [DUKA, "--log-level", "error", "migrate"],
        cwd=tmp_path,
        env=clean_env(**env),
        capture_output=True,
        text=True,
        timeout=30,
    )


def test_migrate_brings_a_new_sqlite_file_to_the_code_schema_and_can_run_again(
    tmp_path: Path,
) -> None:
    database = tmp_path / "shop.sqlite3"
    url = f"sqlite+aiosqlite:///{database}"
    for _ in range(2):  # the second run finds nothing to do and says the same
        done = migrate(tmp_path, DUKA_DATABASE_URL=url)
        assert done.returncode == 0, done.stderr
        assert done.stdout == f"The database is at schema {min(CODE_HEADS)}, this version's.\n"
    with contextlib.closing(sqlite3.connect(database)) as db:
        stored = {row[0] for row in db.execute("SELECT version_num FROM alembic_version")}
        assert stored == set(CODE_HEADS)
        assert db.execute("SELECT count(*) FROM orders").fetchone() == (0,)


def test_migrate_against_an_unreachable_database_is_one_line(tmp_path: Path) -> None:
    url = f"postgresql+asyncpg://duka:pw-not-shown@127.0.0.1:{closed_port()}/duka"
    line = one_line(migrate(tmp_path, DUKA_DATABASE_URL=url))
    assert line.startswith("Configuration error in DUKA_DATABASE_URL: cannot reach the database")
    assert "pw-not-shown" not in line
