"""The shop's products: read from TOML, checked, and loaded into the database at start-up.

Products come from ``[[catalog.products]]`` in config.toml, or from the file named by
``DUKA_CATALOG`` (a ``[[products]]`` table). Loading upserts by ``sku``; a product that
is no longer listed is hidden, never deleted, so old orders keep it.

A product may also carry ``name_sw``, ``description_sw`` and ``category_sw``: what a
customer who chose Kiswahili sees. The products table keeps the English texts only;
the Swahili ones stay with the configured catalog, in memory, and ``with_translations``
puts them back on the products read from the database.

A product may carry ``stock``, its starting count (left out: not counted), and
``low_stock``. The count is set once, when the product is first loaded or first counted;
from then on sales and the merchant's ``/stock`` change it, and a restart keeps it
(``storage/stock.py``).

``duka catalog import FILE`` and SIGHUP to ``duka serve`` load a catalog file again while
the shop runs (``bot/catalog_import.py``): the same checks, the same upsert.
"""

from __future__ import annotations

import dataclasses
import re
import tomllib
from collections.abc import Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sqlalchemy import Connection, func, select, update
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert

from storage.schema import products

MAX_PRICE = 250_000  # what one M-Pesa STK push can carry
SKU = re.compile(r"[A-Za-z0-9._-]{1,32}")
MAX_CATEGORY_BYTES = 56
MAX_NAME = 100
KEYS = (
    "sku",
    "name",
    "price",
    "category",
    "description",
    "name_sw",
    "category_sw",
    "description_sw",
    "stock",
    "low_stock",
)
MAX_STOCK = 1_000_000


class CatalogError(ValueError):
    """The catalog cannot be used; ``key`` says where, the message what to fix."""

    def __init__(self, key: str, problem: str, fix: str) -> None:
        super().__init__(f"{problem}. Fix: {fix}")
        self.key = key
        self.problem = problem
        self.fix = fix


@dataclass(frozen=True, slots=True)
class CatalogFile:
    """Where the catalog is read from: ``DUKA_CATALOG`` (a ``[[products]]`` table) or
    config.toml (``[[catalog.products]]``); ``duka serve`` reads it again on SIGHUP."""

    path: Path
    table: str = "products"


@dataclass(frozen=True, slots=True)
class ProductSpec:
    sku: str
    name: str
    price: int  # whole KES
    category: str = ""
    description: str = ""
    # Kiswahili; empty means the English text is shown.
    name_sw: str = ""
    category_sw: str = ""
    description_sw: str = ""
    # What is left (None: not counted); in the configuration, the starting count.
    stock: int | None = None
    low_stock: int | None = None  # tell the merchant when stock falls to this

    @property
    def sold_out(self) -> bool:
        return self.stock is not None and self.stock <= 0

    def name_in(self, language: str) -> str:
        return (self.name_sw if language == "sw" else "") or self.name

    def category_in(self, language: str) -> str:
        return (self.category_sw if language == "sw" else "") or self.category

    def description_in(self, language: str) -> str:
        return (self.description_sw if language == "sw" else "") or self.description


def read_catalog_file(path: Path) -> list[ProductSpec]:
    try:
        with path.open("rb") as fh:
            data = tomllib.load(fh)
    except FileNotFoundError:
        raise CatalogError(
            "DUKA_CATALOG", f"{path} does not exist", "point it at a TOML file"
        ) from None
    except tomllib.TOMLDecodeError as exc:
        raise CatalogError(str(path), f"not valid TOML ({exc})", "correct the syntax") from None
    unknown = set(data) - {"products"}
    if unknown:
        raise CatalogError(str(path), f"unknown tables {sorted(unknown)}", "use [[products]] only")
    return parse_products(data.get("products", []), source=f"{path}: products")


def parse_products(entries: object, source: str) -> list[ProductSpec]:
    """The products, or the first problem raised (start-up: a bad catalog stops it)."""
    specs, rejected = check_products(entries, source)
    if rejected:
        raise rejected[0].error
    return specs


@dataclass(frozen=True, slots=True)
class Rejected:
    """An entry that cannot be used, and why."""

    position: int  # 1-based, in the order of the list
    sku: str | None  # when it names a usable sku: the product that entry meant
    error: CatalogError


def check_products(entries: object, source: str) -> tuple[list[ProductSpec], list[Rejected]]:
    """Every usable entry, and every other one with its problem: checking goes on past a
    bad entry, so that an import can report them all at once."""
    if not isinstance(entries, list):
        raise CatalogError(source, "must be a list of tables", "write each as [[products]]")
    specs: list[ProductSpec] = []
    rejected: list[Rejected] = []
    seen: set[str] = set()
    category_sw: dict[str, str] = {}  # a category has one Swahili name, given once or more
    for position, entry in enumerate(entries, start=1):
        try:
            spec = _product(entry, f"{source}[{position}]")
            _check_against_earlier(spec, seen, category_sw, f"{source}[{position}]")
        except CatalogError as exc:
            rejected.append(Rejected(position, _readable_sku(entry), exc))
            continue
        seen.add(spec.sku)
        if spec.category_sw:
            category_sw.setdefault(spec.category, spec.category_sw)
        specs.append(spec)
    return specs, rejected


def _check_against_earlier(
    spec: ProductSpec, seen: set[str], category_sw: Mapping[str, str], where: str
) -> None:
    if spec.sku in seen:
        raise CatalogError(
            where, f"sku {spec.sku!r} appears twice", "give each product its own sku"
        )
    earlier = category_sw.get(spec.category)
    if spec.category_sw and earlier is not None and earlier != spec.category_sw:
        raise CatalogError(
            where,
            f"category {spec.category!r} is called {earlier!r} in Kiswahili earlier, "
            f"{spec.category_sw!r} here",
            "give a category the same category_sw on every product",
        )


def _readable_sku(entry: object) -> str | None:
    sku = entry.get("sku") if isinstance(entry, Mapping) else None
    return sku if isinstance(sku, str) and SKU.fullmatch(sku) else None


def _product(entry: object, where: str) -> ProductSpec:
    if not isinstance(entry, Mapping):
        raise CatalogError(where, "is not a table", "write sku, name and price")
    unknown = set(entry) - set(KEYS)
    if unknown:
        raise CatalogError(where, f"unknown keys {sorted(unknown)}", f"use {', '.join(KEYS)}")
    sku, name = entry.get("sku"), entry.get("name")
    if not isinstance(sku, str) or not SKU.fullmatch(sku):
        raise CatalogError(
            where, f"sku {sku!r} is not usable", "use 1-32 letters, digits, '.', '_' or '-'"
        )
    if not isinstance(name, str) or not name.strip() or len(name.strip()) > MAX_NAME:
        raise CatalogError(
            where, f"product {sku!r} has no name of 1-{MAX_NAME} characters", 'set name = "..."'
        )
    name_sw = _text(entry, "name_sw", where)
    if len(name_sw) > MAX_NAME:
        raise CatalogError(
            where, f"name_sw of {sku!r} is longer than {MAX_NAME} characters", "shorten it"
        )
    price = entry.get("price")
    if isinstance(price, bool) or not isinstance(price, int) or not 1 <= price <= MAX_PRICE:
        raise CatalogError(
            where,
            f"price of {sku!r} is {price!r}, not a whole number of shillings",
            f"use a whole number from 1 to {MAX_PRICE:,}, e.g. price = 120",
        )
    category, category_sw = _text(entry, "category", where), _text(entry, "category_sw", where)
    # Buttons carry "cat:<category>" and Telegram allows 64 bytes of button data; the
    # Swahili name is only a label, but one as long would not fit on a button either.
    for key, value in (("category", category), ("category_sw", category_sw)):
        if len(value.encode()) > MAX_CATEGORY_BYTES:
            raise CatalogError(
                where,
                f"{key} {value!r} is too long",
                f"use at most {MAX_CATEGORY_BYTES} bytes (about as many letters)",
            )
    if category_sw and not category:
        raise CatalogError(
            where, f"product {sku!r} has category_sw but no category", "set category too"
        )
    return ProductSpec(
        sku=sku,
        name=name.strip(),
        price=price,
        category=category,
        description=_text(entry, "description", where),
        name_sw=name_sw,
        category_sw=category_sw,
        description_sw=_text(entry, "description_sw", where),
        stock=_count(entry, "stock", where),
        low_stock=_count(entry, "low_stock", where),
    )


def _count(entry: Mapping[str, Any], key: str, where: str) -> int | None:
    value = entry.get(key)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= MAX_STOCK:
        raise CatalogError(
            where,
            f"{key} of {entry.get('sku')!r} is {value!r}, not a whole number",
            f"use a whole number from 0 to {MAX_STOCK:,}, or leave {key} out",
        )
    return value


def _text(entry: Mapping[str, Any], key: str, where: str) -> str:
    value = entry.get(key, "")
    if not isinstance(value, str):
        raise CatalogError(where, f"{key} must be text", f'write {key} = "..."')
    return value.strip()


def sync_catalog(
    conn: Connection, specs: Sequence[ProductSpec], *, keep: Collection[str] = ()
) -> None:
    """Upsert the listed products (active) and hide the rest, except those in ``keep``
    (an import leaves the products of its bad entries as they are)."""
    if specs:
        insert_for = pg_insert if conn.dialect.name == "postgresql" else sqlite_insert
        statement = insert_for(products)
        statement = statement.on_conflict_do_update(
            index_elements=["sku"],
            set_={
                "name": statement.excluded.name,
                "price": statement.excluded.price,
                "category": statement.excluded.category,
                "description": statement.excluded.description,
                "active": True,
                # The configured stock is a starting count: once counted, the count is
                # the shop's (sales, /stock), and a restart must not reset it.
                "stock": func.coalesce(products.c.stock, statement.excluded.stock),
                "low_stock": statement.excluded.low_stock,
            },
        )
        conn.execute(
            statement,
            [
                {
                    "sku": s.sku,
                    "name": s.name,
                    "price": s.price,
                    "category": s.category,
                    "description": s.description,
                    "active": True,
                    "stock": s.stock,
                    "low_stock": s.low_stock,
                }
                for s in specs
            ],
        )
    listed = [s.sku for s in specs] + list(keep)
    conn.execute(update(products).where(products.c.sku.not_in(listed)).values(active=False))


def active_products(conn: Connection) -> list[ProductSpec]:
    rows = conn.execute(
        select(
            products.c.sku,
            products.c.name,
            products.c.price,
            products.c.category,
            products.c.description,
            products.c.stock,
            products.c.low_stock,
        )
        .where(products.c.active.is_(True))
        .order_by(products.c.id)
    )
    return [
        ProductSpec(
            r.sku,
            r.name,
            r.price,
            r.category,
            r.description,
            stock=r.stock,
            low_stock=r.low_stock,
        )
        for r in rows
    ]


def with_translations(
    found: Iterable[ProductSpec], configured: Iterable[ProductSpec]
) -> list[ProductSpec]:
    """``found`` (read from the database) with the Swahili texts of ``configured``.

    A Swahili text is taken only while the English one it translates is unchanged: another
    process may have synced the same database from a different catalog.
    """
    by_sku = {spec.sku: spec for spec in configured}
    return [_translated(product, by_sku.get(product.sku)) for product in found]


def _translated(product: ProductSpec, spec: ProductSpec | None) -> ProductSpec:
    if spec is None:
        return product
    return dataclasses.replace(
        product,
        name_sw=spec.name_sw if spec.name == product.name else "",
        category_sw=spec.category_sw if spec.category == product.category else "",
        description_sw=spec.description_sw if spec.description == product.description else "",
    )
