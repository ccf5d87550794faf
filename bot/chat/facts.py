"""What a step may read: loaded before the step runs, in the same transaction as its
effects, so that what the step decided on is still true when the effects are written."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from bot.catalog import ProductSpec
from bot.handover import HandoverOptions
from payments.states import OrderStatus
from storage.orders import OrderItemRecord, OrderRecord


@dataclass(frozen=True, slots=True)
class Shop:
    """The shop's settings that the conversation speaks of."""

    name: str
    name_sw: str = ""  # the shop's own Swahili name, when it has one
    paybill: str | None = None  # the Paybill number, when paying by hand is offered
    handover: HandoverOptions = field(
        default_factory=HandoverOptions
    )  # delivery, pickup: what checkout asks

    def name_in(self, lang: str) -> str:
        return (self.name_sw if lang == "sw" else "") or self.name


@dataclass(frozen=True, slots=True)
class OrderView:
    """One of the customer's own orders, as a step needs it."""

    id: int
    reference: str
    total: int
    status: OrderStatus
    paying: bool = False  # an M-Pesa prompt for it is open (it cannot be cancelled now)
    items: tuple[OrderItemRecord, ...] = ()  # loaded where the order may be cancelled

    @property
    def payable(self) -> bool:
        return self.status is OrderStatus.AWAITING_PAYMENT

    @property
    def cancellable(self) -> bool:
        return self.payable and not self.paying


@dataclass(frozen=True, slots=True)
class Facts:
    shop: Shop
    lang: str
    saved_msisdn: str | None  # the number the customer last paid from
    catalog: Mapping[str, ProductSpec]  # active products by sku, in catalog order
    # The customer's own orders this event may touch (the state's, a button's), by id;
    # an id that is not there is not the customer's, or does not exist.
    orders: Mapping[int, OrderView] = field(default_factory=dict)
    waiting_for_pin: str | None = None  # reference of an order whose prompt is open
    order_list: Sequence[OrderRecord] = ()  # for /orders: unpaid ones, then recent ones

    @property
    def products(self) -> list[ProductSpec]:
        return list(self.catalog.values())
