"""Is the database's schema the one this code was written for (Alembic's head)?

Start-up migrates, so a difference means someone changed the database underneath a
running process (a downgrade, a restore from an older backup): ``/readyz`` says so.

The head is a constant here rather than asked of Alembic: importing Alembic (and Mako,
Pygments with it) keeps about 11 MB resident for the life of the process, and a server
whose database is already at head never needs it. ``tests/integration/test_migrations.py``
checks the constant against Alembic's own reading of ``storage/migrations``.
"""

from __future__ import annotations

from sqlalchemy import Connection, inspect, text

# The newest revision in storage/migrations/versions: change it with every new migration.
CODE_HEADS = frozenset({"0012"})
VERSION_TABLE = "alembic_version"  # Alembic's default, which storage/migrations/env.py keeps


def stored_heads(conn: Connection) -> frozenset[str]:
    """The revision(s) the database says it is at; empty when it was never migrated."""
    if not inspect(conn).has_table(VERSION_TABLE):
        return frozenset()
    return frozenset(conn.execute(text("SELECT version_num FROM alembic_version")).scalars())


def schema_problem(conn: Connection) -> str | None:
    """Why the stored schema is not the code's, or None when it is."""
    stored = stored_heads(conn)
    if stored == CODE_HEADS:
        return None
    at = ", ".join(sorted(stored)) or "no revision"
    return f"database at {at}, code at {', '.join(sorted(CODE_HEADS))}"
