"""A WhatsApp chat's latest list, kept page by page for its "More…" row.

A WhatsApp list shows ten rows; a longer one is sent a page at a time, and "More…" asks
for the next page of *that* list. The pages live in the database, not in the process
that sent the list, so that whichever process gets the tap (several share the database,
or the one that sent it restarted) can answer it.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from datetime import datetime

from sqlalchemy import Connection, select, update
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert

from storage.schema import whatsapp_lists

Page = list[tuple[str, str, str]]  # rows of (id, title, description)


def save_list(
    conn: Connection, chat_id: str, body: str, pages: Callable[[int], list[Page]], now: datetime
) -> int:
    """Make a new list the chat's latest (the one "More…" pages through); its number.
    ``pages(number)`` builds the pages ("More…" rows carry the number). Taking the number
    and storing the pages is one upsert then one update on the row it locked: two lists
    for one chat at once (a reply and a notice) cannot get the same number."""
    insert = pg_insert if conn.dialect.name == "postgresql" else sqlite_insert
    statement = insert(whatsapp_lists).values(
        chat_id=chat_id, seq=1, body=body, pages="[]", updated_at=now
    )
    seq = conn.execute(
        statement.on_conflict_do_update(
            index_elements=[whatsapp_lists.c.chat_id],
            set_={"seq": whatsapp_lists.c.seq + 1, "body": body, "updated_at": now},
        ).returning(whatsapp_lists.c.seq)
    ).scalar_one()
    conn.execute(
        update(whatsapp_lists)
        .where(whatsapp_lists.c.chat_id == chat_id)
        .values(pages=json.dumps(pages(seq)))
    )
    return int(seq)


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
