"""The sealed columns as stored: checking the data key against them, and re-sealing them
with a new one (``duka rekey``; ``serve`` too, at start-up, while DUKA_DATA_KEY_OLD is set).

Rows are read and written through plain column objects, not the ``Sealed*`` types, so that
what moves is the stored (sealed) text itself.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from typing import Any

import sqlalchemy as sa
from sqlalchemy import Connection

from storage.schema import metadata
from storage.sealing import CannotUnseal, SealedText, SealedValue, Sealer

BATCH = 500
# Tables that only cache what can be had again (Daraja's token, a WhatsApp list's pages):
# a new key empties them rather than re-sealing them (they have no id to batch by).
CACHES = frozenset({"daraja_tokens", "whatsapp_lists"})


class WrongDataKey(Exception):
    """The stored phone numbers were sealed with a key we do not have."""


def sealed_columns() -> Iterator[tuple[str, tuple[str, ...], tuple[str, ...]]]:
    """(table, its SealedValue columns, its SealedText columns), for tables having any."""
    for table in metadata.sorted_tables:
        values = tuple(c.name for c in table.columns if isinstance(c.type, SealedValue))
        texts = tuple(c.name for c in table.columns if isinstance(c.type, SealedText))
        if values or texts:
            yield table.name, values, texts


def check_key(conn: Connection, sealer: Sealer) -> None:
    """Refuse a key that cannot open what is stored (a typo, or a rotation half done): a
    server running on it would fail on every phone number it reads."""
    for name, values, _ in sealed_columns():
        for column in values:
            table = sa.table(name, sa.column(column))
            stored = conn.execute(
                sa.select(table.c[column]).where(table.c[column].is_not(None)).limit(1)
            ).scalar_one_or_none()
            if stored is None:
                continue
            try:
                sealer.open_value(stored)
            except CannotUnseal:
                raise WrongDataKey(f"{name}.{column} cannot be opened with it") from None
            return


def rekey(conn: Connection, sealer: Sealer) -> int:
    """Re-seal every sealed value with the current key; how many rows changed. Values still
    stored in clear (from before sealing) are sealed too. Idempotent."""
    changed = 0
    for name, values, texts in sealed_columns():
        if name in CACHES:
            changed += conn.execute(sa.delete(sa.table(name))).rowcount
            continue
        kinds: dict[str, Callable[[str], str | None]] = {c: sealer.reseal_value for c in values}
        kinds.update({c: sealer.reseal_text for c in texts})
        changed += rewrite(conn, name, kinds)
    return changed


def rewrite(conn: Connection, name: str, kinds: Mapping[str, Callable[[str], str | None]]) -> int:
    """Pass every non-empty stored value of table ``name``'s columns through its function
    (None: leave it), in batches by id; how many rows changed. Migration 0008 uses it too."""
    table = sa.table(name, sa.column("id"), *(sa.column(c) for c in kinds))
    changed, last_id = 0, 0
    while True:
        rows = conn.execute(
            sa.select(table).where(table.c.id > last_id).order_by(table.c.id).limit(BATCH)
        ).all()
        if not rows:
            return changed
        last_id = rows[-1].id
        for row in rows:
            new: dict[str, Any] = {}
            for column, reseal in kinds.items():
                stored = getattr(row, column)
                if stored and (resealed := reseal(stored)) is not None:
                    new[column] = resealed
            if new:
                conn.execute(table.update().where(table.c.id == row.id).values(new))
                changed += 1
