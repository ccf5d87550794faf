"""Is the database's schema the one this code was written for (Alembic's head)?

Start-up migrates, so a difference means someone changed the database underneath a
running process (a downgrade, a restore from an older backup): ``/readyz`` says so.
"""

from __future__ import annotations

from functools import lru_cache

from alembic.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import Connection

from storage.engine import MIGRATIONS_DIR


@lru_cache(maxsize=1)
def code_heads() -> frozenset[str]:
    """The newest revision(s) among the migrations shipped with this code (read once)."""
    return frozenset(ScriptDirectory(str(MIGRATIONS_DIR)).get_heads())


def stored_heads(conn: Connection) -> frozenset[str]:
    """The revision(s) the database says it is at; empty when it was never migrated."""
    return frozenset(MigrationContext.configure(conn).get_current_heads())


def schema_problem(conn: Connection) -> str | None:
    """Why the stored schema is not the code's, or None when it is."""
    stored, expected = stored_heads(conn), code_heads()
    if stored == expected:
        return None
    at = ", ".join(sorted(stored)) or "no revision"
    return f"database at {at}, code at {', '.join(sorted(expected))}"
