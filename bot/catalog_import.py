"""Loading a catalog file into a running shop: ``duka catalog import FILE`` and SIGHUP.

The file is checked as at start-up (``bot/catalog.py``), but every entry is checked
rather than stopping at the first bad one, and the import goes on without the bad ones:

- a good entry is upserted by sku, as at start-up: prices, names, categories and
  descriptions come from the file; ``stock`` only starts a count (one already kept is the
  shop's, changed by sales and ``/stock``);
- a bad entry is reported with its line and skipped: its product stays as it is (not
  hidden: the merchant meant to keep it);
- a product the file does not mention is hidden, as at start-up (never deleted: old
  orders keep it), unless some bad entry names no readable sku: it may have meant any
  product, so nothing is hidden then;
- a file that cannot be read, is not TOML or lists no product changes nothing.

Orders are untouched: each order line keeps the name and price it was confirmed with.
All of it happens in one transaction, which also reads what the report compares with.
"""

from __future__ import annotations

import asyncio
import re
import tomllib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Connection, select

from bot.catalog import CatalogError, CatalogFile, ProductSpec, check_products, sync_catalog
from storage.engine import Database
from storage.schema import products


@dataclass(frozen=True, slots=True)
class BadEntry:
    line: int | None  # the entry's [[products]] header; None when it cannot be told
    where: str  # e.g. products[3]
    problem: str
    fix: str

    def __str__(self) -> str:
        at = f"line {self.line}: " if self.line is not None else ""
        return f"{at}{self.where}: {self.problem}; fix: {self.fix}"


@dataclass(frozen=True, slots=True)
class CheckedCatalog:
    """A catalog file read and checked, not yet applied."""

    source: CatalogFile
    specs: tuple[ProductSpec, ...]
    bad: tuple[BadEntry, ...]
    kept: frozenset[str]  # the skus the bad entries name: left as they are
    unnamed: BadEntry | None  # the first bad entry with no readable sku: hide nothing


@dataclass(frozen=True, slots=True)
class ImportReport:
    source: CatalogFile
    changes: tuple[str, ...]  # what the import changed, one line each
    notes: tuple[str, ...]  # what it left alone though the file says otherwise
    bad: tuple[BadEntry, ...]
    specs: tuple[ProductSpec, ...]  # the entries applied
    kept: frozenset[str]

    @property
    def complete(self) -> bool:
        return not self.bad

    def lines(self) -> list[str]:
        """The whole report for a terminal or a log, one line per change or problem."""
        return [*self.changes, *self.notes, *map(str, self.bad), self.summary()]

    def summary(self) -> str:
        done = f"{len(self.changes)} change{'' if len(self.changes) == 1 else 's'}"
        said = f"{self.source.path}: {done}" if self.changes else f"{self.source.path}: no changes"
        if not self.bad:
            return f"{said}."
        entries = "entry was" if len(self.bad) == 1 else "entries were"
        return f"{said}; {len(self.bad)} bad {entries} skipped: fix and import again."


async def import_catalog(database: Database, source: CatalogFile) -> ImportReport:
    """Read ``source`` and apply its good entries; CatalogError if the file is unusable."""
    checked = await asyncio.to_thread(read_checked, source)
    return await database.transaction(apply_checked, checked)


def unusable(exc: CatalogError) -> str:
    """One line for a file that changed nothing."""
    return f"{exc.key}: {exc.problem}; fix: {exc.fix}"


def read_checked(source: CatalogFile) -> CheckedCatalog:
    try:
        text = source.path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        problem = exc.strerror if isinstance(exc, OSError) else "it is not UTF-8 text"
        raise CatalogError(
            str(source.path), f"cannot be read ({problem})", "give the path of a TOML file"
        ) from None
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        # tomllib's message ends "(at line N, column M)".
        raise CatalogError(
            str(source.path), f"not valid TOML: {exc}", "correct the syntax; nothing was changed"
        ) from None
    entries = _entries(data, source)
    if not entries:
        # Hiding the whole shop is what an empty file would mean; far likelier a wrong file.
        raise CatalogError(
            str(source.path),
            f"lists no [[{source.table}]]",
            "list the products; to close the shop, /hide them from the merchant chat",
        )
    specs, rejected = check_products(entries, source.table)
    lines = header_lines(text, source.table, len(entries))
    bad = [
        BadEntry(lines[r.position - 1], r.error.key, r.error.problem, r.error.fix) for r in rejected
    ]
    unnamed = next((b for b, r in zip(bad, rejected, strict=True) if r.sku is None), None)
    kept = frozenset(r.sku for r in rejected if r.sku is not None)
    return CheckedCatalog(source, tuple(specs), tuple(bad), kept, unnamed)


def _entries(data: Mapping[str, Any], source: CatalogFile) -> list[object]:
    found: object = data
    if source.table == "products":
        unknown = set(data) - {"products"}
        if unknown:
            raise CatalogError(
                str(source.path), f"unknown tables {sorted(unknown)}", "use [[products]] only"
            )
    # In config.toml the other sections were checked at start-up and are not read again.
    for part in source.table.split("."):
        found = found.get(part, {}) if isinstance(found, Mapping) else None
    if found == {}:
        return []  # not there: the caller says so
    if not isinstance(found, list):
        raise CatalogError(
            source.table, "must be a list of tables", f"write each as [[{source.table}]]"
        )
    return found


def header_lines(text: str, table: str, count: int) -> list[int | None]:
    """The line of each entry's ``[[table]]`` header, in order.

    tomllib keeps no positions, but entries come in file order, so the n-th header line is
    the n-th entry's. A header-like line inside a multi-line string, or entries written
    inline (``products = [{...}]``), would make the count differ: then no line is given
    rather than a wrong one.
    """
    # Each part bare or quoted, dots with optional blanks: [[catalog . "products"]] is valid.
    parts = [re.escape(part) for part in table.split(".")]
    name = r"[ \t]*\.[ \t]*".join(f"""(?:{p}|"{p}"|'{p}')""" for p in parts)
    header = re.compile(rf"[ \t]*\[\[[ \t]*{name}[ \t]*\]\][ \t]*(?:#.*)?")
    found = [n for n, line in enumerate(text.splitlines(), start=1) if header.fullmatch(line)]
    return list(found) if len(found) == count else [None] * count


def apply_checked(conn: Connection, checked: CheckedCatalog) -> ImportReport:
    # Locked on PostgreSQL so that a /price or /stock between this read and the upsert
    # cannot make the report describe a change from a value already gone. SQLite has no
    # row locks: there another process's edit in between could only make the report stale,
    # never the data (the file wins either way).
    rows = {
        row.sku: row
        for row in conn.execute(
            select(
                products.c.sku,
                products.c.name,
                products.c.price,
                products.c.category,
                products.c.description,
                products.c.active,
                products.c.stock,
                products.c.low_stock,
            ).with_for_update()
        )
    }
    keep = set(checked.kept)
    notes: list[str] = []
    if checked.unnamed is not None:
        keep |= set(rows)
        notes.append(
            f"nothing hidden: {checked.unnamed.where} names no usable sku, so it may mean any "
            "product"
        )
    changes: list[str] = []
    for spec in checked.specs:
        row = rows.get(spec.sku)
        if row is None:
            changes.append(_added(spec))
            continue
        changes += _changed(spec, row)
        if row.stock is not None and spec.stock is not None and spec.stock != row.stock:
            notes.append(
                f"{spec.sku}: stock stays {row.stock}, not {spec.stock}: the file only starts "
                f"a count; send /stock {spec.sku} {spec.stock} to set it"
            )
    listed = {spec.sku for spec in checked.specs} | keep
    changes += [
        f"{sku}: hidden (not in the file)"
        for sku, row in rows.items()
        if row.active and sku not in listed
    ]
    sync_catalog(conn, checked.specs, keep=keep)
    return ImportReport(
        checked.source, tuple(changes), tuple(notes), checked.bad, checked.specs, checked.kept
    )


def _added(spec: ProductSpec) -> str:
    counted = f", stock {spec.stock}" if spec.stock is not None else ""
    return f"{spec.sku}: added ({spec.name}, KES {spec.price:,}{counted})"


def _changed(spec: ProductSpec, row: Any) -> list[str]:
    changes = []
    if not row.active:
        changes.append(f"{spec.sku}: on sale again")
    if spec.price != row.price:
        changes.append(f"{spec.sku}: price KES {row.price:,} -> {spec.price:,}")
    for field in ("name", "category"):
        before, after = getattr(row, field), getattr(spec, field)
        if before != after:
            changes.append(f"{spec.sku}: {field} {before!r} -> {after!r}")
    if spec.description != row.description:
        changes.append(f"{spec.sku}: description changed")
    if row.stock is None and spec.stock is not None:
        changes.append(f"{spec.sku}: stock counted from {spec.stock}")
    if spec.low_stock != row.low_stock:
        changes.append(f"{spec.sku}: low_stock {_count(row.low_stock)} -> {_count(spec.low_stock)}")
    return changes


def _count(value: int | None) -> str:
    return "none" if value is None else str(value)


def translations_after(
    previous: Sequence[ProductSpec], report: ImportReport
) -> tuple[ProductSpec, ...]:
    """The configured products (and so the Kiswahili texts) once ``report`` is applied:
    the file's good entries, and the earlier ones of the products its bad entries kept."""
    applied = {spec.sku for spec in report.specs}
    kept = [p for p in previous if p.sku in report.kept and p.sku not in applied]
    return (*report.specs, *kept)
