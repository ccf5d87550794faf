"""A WhatsApp chat's latest list, kept page by page for its "More…" row.

A WhatsApp list shows ten rows; a longer one is sent a page at a time, and "More…" asks
for the next page of *that* list. The pages live in the database, not in the process
that sent the list, so that whichever process gets the tap (several share the database,
or the one that sent it restarted) can answer it.
"""

from __future__ import annotations

import json
from datetime import datetime

from sqlalchemy import Connection, select
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert

from storage.schema import whatsapp_lists

Page = list[tuple[str, str, str]]  # rows of (id, title, description)


def next_list_number(conn: Connection, chat_id: str) -> int:
    """The number the chat's next list goes by (its "More…" rows carry it)."""
    seq = conn.execute(
        select(whatsapp_lists.c.seq).where(whatsapp_lists.c.chat_id == chat_id)
    ).scalar_one_or_none()
    return (seq or 0) + 1


def save_list(
    conn: Connection, chat_id: str, seq: int, body: str, pages: list[Page], now: datetime
) -> None:
    """Make list ``seq`` the chat's latest (the one "More…" pages through)."""
    insert = pg_insert if conn.dialect.name == "postgresql" else sqlite_insert
    values = {"seq": seq, "body": body, "pages": json.dumps(pages), "updated_at": now}
    conn.execute(
        insert(whatsapp_lists)
        .values(chat_id=chat_id, **values)
        .on_conflict_do_update(index_elements=[whatsapp_lists.c.chat_id], set_=values)
    )


def latest_list(conn: Connection, chat_id: str) -> tuple[int, str, list[Page]] | None:
    """(number, body, pages) of the chat's latest list; None if it never had one."""
    row = conn.execute(
        select(whatsapp_lists.c.seq, whatsapp_lists.c.body, whatsapp_lists.c.pages).where(
            whatsapp_lists.c.chat_id == chat_id
        )
    ).first()
    if row is None:
        return None
    pages = [[(r[0], r[1], r[2]) for r in page] for page in json.loads(row.pages)]
    return int(row.seq), str(row.body), pages
