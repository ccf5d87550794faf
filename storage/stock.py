"""Stock: what is left of each product, and the holds that keep it for an order.

A product with ``stock`` NULL is not counted (unlimited). For a counted product,
confirming an order takes its quantity off ``stock`` at once and records a hold, so two
customers cannot both buy the last one: the taking is one conditional UPDATE, which on
PostgreSQL and SQLite alike succeeds for one of them only.

A hold lives as long as a payment attempt (renewed when a prompt is pushed). Payment
turns it into a sale; cancellation, or expiry while no prompt is open, gives the
quantity back. Money that arrives after a hold was given back still buys the goods: the
quantity is taken again even below zero, because the customer has paid (``/stock`` then
shows the merchant a negative count to sort out).

Products are always updated in sku order, so two transactions cannot deadlock on them.
"""

from __future__ import annotations

from collections.abc import Collection, Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum

from sqlalchemy import Connection, and_, bindparam, exists, select, update

from storage.schema import OPEN_PAYMENT_STATUSES, orders, payments, products, stock_holds


class HoldStatus(StrEnum):
    HELD = "held"  # taken off stock for an order awaiting payment
    SOLD = "sold"  # the order was paid
    RELEASED = "released"  # given back (cancelled, or expired unpaid)


class OutOfStock(Exception):
    """Fewer than asked for are left; nothing was taken (the transaction rolls back)."""

    def __init__(self, sku: str, left: int) -> None:
        super().__init__(f"only {left} of {sku} left")
        self.sku = sku
        self.left = left


@dataclass(frozen=True, slots=True)
class Crossing:
    """A product whose count fell to its low-stock mark (or under) just now."""

    sku: str
    name: str
    left: int
    low: int


@dataclass(frozen=True, slots=True)
class StockLine:
    sku: str
    name: str
    stock: int
    low_stock: int | None
    active: bool


def hold(
    conn: Connection, order_id: int, items: Iterable[tuple[str, int]], until: datetime
) -> list[Crossing]:
    """Take each counted product's quantity off stock for ``order_id``; raises
    ``OutOfStock`` for the first that lacks it (the caller's transaction must roll back).
    The products that fell to their low-stock mark."""
    wanted: dict[str, int] = {}
    for sku, quantity in items:
        wanted[sku] = wanted.get(sku, 0) + quantity
    counted, crossings = _take(conn, wanted, allow_negative=False)
    if counted:
        conn.execute(
            stock_holds.insert(),
            [
                {
                    "order_id": order_id,
                    "sku": sku,
                    "quantity": wanted[sku],
                    "status": HoldStatus.HELD,
                    "expires_at": until,
                }
                for sku in counted
            ],
        )
    return crossings


def renew(conn: Connection, order_id: int, until: datetime) -> list[Crossing]:
    """Before a prompt is pushed: keep the order's holds until ``until``, taking again
    what expired meanwhile (``OutOfStock`` if it is gone)."""
    released = _holds(conn, [order_id], HoldStatus.RELEASED)
    _, crossings = _take(conn, _quantities(released), allow_negative=False)
    conn.execute(
        update(stock_holds)
        .where(stock_holds.c.order_id == order_id)
        .where(stock_holds.c.status.in_([HoldStatus.HELD, HoldStatus.RELEASED]))
        .values(status=HoldStatus.HELD, expires_at=until)
    )
    return crossings


def sell(conn: Connection, order_ids: Collection[int]) -> None:
    """The orders were paid: their holds become sales. A hold given back meanwhile is
    taken again, even below zero: the money came, the goods are the customer's."""
    if not order_ids:
        return
    released = _holds(conn, order_ids, HoldStatus.RELEASED)
    _take(conn, _quantities(released), allow_negative=True)
    conn.execute(
        update(stock_holds)
        .where(stock_holds.c.order_id.in_(sorted(order_ids)))
        .where(stock_holds.c.status.in_([HoldStatus.HELD, HoldStatus.RELEASED]))
        .values(status=HoldStatus.SOLD)
    )


def release(conn: Connection, order_ids: Collection[int]) -> int:
    """The orders will not be paid (cancelled): give their held quantities back; how
    many holds were."""
    if not order_ids:
        return 0
    held = _holds(conn, order_ids, HoldStatus.HELD)
    if not held:
        return 0
    _give_back(conn, _quantities(held))
    conn.execute(
        update(stock_holds)
        .where(stock_holds.c.id.in_([row_id for row_id, _, _ in held]))
        .values(status=HoldStatus.RELEASED)
    )
    return len(held)


def release_expired(conn: Connection, now: datetime, limit: int = 200) -> int:
    """Give back holds past their time whose unpaid order has no prompt open: the
    customer walked away. How many holds were given back."""
    prompt_open = exists().where(
        payments.c.order_id == stock_holds.c.order_id,
        payments.c.status.in_(OPEN_PAYMENT_STATUSES),
    )
    # Only orders still waiting for payment: money under review keeps its goods.
    expired = conn.execute(
        select(stock_holds.c.order_id)
        .join(orders, orders.c.id == stock_holds.c.order_id)
        .where(stock_holds.c.status == HoldStatus.HELD, stock_holds.c.expires_at < now)
        .where(orders.c.status == "awaiting_payment", ~prompt_open)
        .order_by(stock_holds.c.id)
        .limit(limit)
    ).scalars()
    return release(conn, set(expired))


def set_stock(conn: Connection, sku: str, count: int | None) -> bool:
    """Set what is left of ``sku`` (None: stop counting); False if there is no such sku."""
    changed = conn.execute(update(products).where(products.c.sku == sku).values(stock=count))
    return changed.rowcount > 0


def stock_lines(conn: Connection) -> list[StockLine]:
    """Every counted product, fewest left first."""
    rows = conn.execute(
        select(
            products.c.sku,
            products.c.name,
            products.c.stock,
            products.c.low_stock,
            products.c.active,
        )
        .where(products.c.stock.is_not(None))
        .order_by(products.c.stock, products.c.sku)
    )
    return [StockLine(r.sku, r.name, r.stock, r.low_stock, r.active) for r in rows]


# --- helpers -------------------------------------------------------------------------------

_TAKE = (
    update(products)
    .where(products.c.sku == bindparam("the_sku"))
    .where(products.c.stock >= bindparam("quantity"))
    .values(stock=products.c.stock - bindparam("quantity"))
    .returning(products.c.stock)
)
_TAKE_ANYWAY = (
    update(products)
    .where(products.c.sku == bindparam("the_sku"))
    .where(products.c.stock.is_not(None))
    .values(stock=products.c.stock - bindparam("quantity"))
    .returning(products.c.stock)
)
_GIVE_BACK = (
    update(products)
    .where(and_(products.c.sku == bindparam("the_sku"), products.c.stock.is_not(None)))
    .values(stock=products.c.stock + bindparam("quantity"))
)


def _counted(conn: Connection, skus: Collection[str]) -> dict[str, int]:
    """What is left of each of ``skus`` that is counted."""
    return {sku: left for sku, (left, _, _) in _counts(conn, skus).items()}


def _counts(conn: Connection, skus: Collection[str]) -> dict[str, tuple[int, int | None, str]]:
    """(left, low-stock mark, name) of each of ``skus`` that is counted."""
    if not skus:
        return {}
    rows = conn.execute(
        select(products.c.sku, products.c.stock, products.c.low_stock, products.c.name).where(
            products.c.sku.in_(sorted(skus)), products.c.stock.is_not(None)
        )
    )
    return {row.sku: (row.stock, row.low_stock, row.name) for row in rows}


def _take(
    conn: Connection, wanted: dict[str, int], *, allow_negative: bool
) -> tuple[list[str], list[Crossing]]:
    """Take the counted ones of ``wanted``: (their skus, the low-stock marks crossed)."""
    counts = _counts(conn, wanted)
    crossings = []
    for sku in sorted(counts):  # one order for every transaction: no deadlocks
        taking = _TAKE_ANYWAY if allow_negative else _TAKE
        after = conn.execute(taking, {"the_sku": sku, "quantity": wanted[sku]}).scalar()
        if after is None:
            left = _counted(conn, [sku]).get(sku, 0)
            raise OutOfStock(sku, max(0, left))
        # The count this UPDATE left (RETURNING), not the one read before it: a concurrent
        # taker may have come between, and the mark is crossed by exactly one of us.
        _, low, name = counts[sku]
        if low is not None and after + wanted[sku] > low >= after:
            crossings.append(Crossing(sku, name, after, low))
    return sorted(counts), crossings


def _give_back(conn: Connection, quantities: dict[str, int]) -> None:
    for sku in sorted(quantities):
        conn.execute(_GIVE_BACK, {"the_sku": sku, "quantity": quantities[sku]})


def _holds(
    conn: Connection, order_ids: Collection[int], status: HoldStatus
) -> list[tuple[int, str, int]]:
    rows = conn.execute(
        select(stock_holds.c.id, stock_holds.c.sku, stock_holds.c.quantity)
        .where(stock_holds.c.order_id.in_(sorted(order_ids)), stock_holds.c.status == status)
        .order_by(stock_holds.c.id)
    )
    return [(row.id, row.sku, row.quantity) for row in rows]


def _quantities(holds: Sequence[tuple[int, str, int]]) -> dict[str, int]:
    totals: dict[str, int] = {}
    for _, sku, quantity in holds:
        totals[sku] = totals.get(sku, 0) + quantity
    return totals
