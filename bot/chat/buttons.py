"""Button data: what a button means, encoded and decoded in one place for every channel.

A button's data travels to the platform and comes back when it is pressed, possibly
weeks later (an old message), possibly forged (any string can arrive). So decoding
never trusts it: anything that is not a well-formed action decodes to ``None``.

Version 1, the format of every button sent so far, is ``name`` or ``name:arg[:arg]``
("add:unga-2kg:2", "retry:17"). A later incompatible format must start with "v2~" (a
prefix no version-1 name has), and ``decode`` keeps reading version 1 for the buttons
still sitting in customers' chats.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from bot.handover import Handover

VERSION = 1
MAX_BYTES = 64  # Telegram's callback_data limit (WhatsApp allows 256)
MAX_ID = 2**31  # ids are 32-bit on PostgreSQL: a forged bigger one is no order of ours
NO_ORDER = 0  # the id a forged order button gets: no order has it


@dataclass(frozen=True, slots=True)
class Menu:
    new: bool = False  # send the menu as a new message (keep the one pressed, a receipt)


@dataclass(frozen=True, slots=True)
class Category:
    name: str  # the English category name, whatever the chat's language


@dataclass(frozen=True, slots=True)
class ShowProduct:
    sku: str


@dataclass(frozen=True, slots=True)
class SetQuantity:
    sku: str
    quantity: int


@dataclass(frozen=True, slots=True)
class AddToCart:
    sku: str
    quantity: int


@dataclass(frozen=True, slots=True)
class DropProduct:
    """ "−" at quantity 1: offer to leave the product out."""

    sku: str


@dataclass(frozen=True, slots=True)
class ShowCart:
    pass


CartChange = Literal["inc", "dec", "rm"]


@dataclass(frozen=True, slots=True)
class ChangeCart:
    change: CartChange
    sku: str


@dataclass(frozen=True, slots=True)
class EmptyCart:
    pass


@dataclass(frozen=True, slots=True)
class Checkout:
    pass


@dataclass(frozen=True, slots=True)
class ConfirmOrder:
    pass


PhoneAnswer = Literal["yes", "typed", "other"]


@dataclass(frozen=True, slots=True)
class ChoosePhone:
    answer: PhoneAnswer  # the saved number, the typed one, or another


OrderVerb = Literal["retry", "other", "cancel", "paybill", "pay"]


@dataclass(frozen=True, slots=True)
class OnOrder:
    """A button about one order (after a failed payment, or from /orders)."""

    verb: OrderVerb
    order_id: int


@dataclass(frozen=True, slots=True)
class ChooseHandover:
    """Delivery or pickup, asked when the cart is confirmed."""

    way: Handover


@dataclass(frozen=True, slots=True)
class ChooseZone:
    """A delivery zone, by its place in the shop's list (a name may be too long for the
    button's data; a place that no longer exists asks again)."""

    index: int


@dataclass(frozen=True, slots=True)
class ChooseLanguage:
    language: Literal["en", "sw"]


Action = (
    Menu
    | Category
    | ShowProduct
    | SetQuantity
    | AddToCart
    | DropProduct
    | ShowCart
    | ChangeCart
    | EmptyCart
    | Checkout
    | ConfirmOrder
    | ChoosePhone
    | OnOrder
    | ChooseHandover
    | ChooseZone
    | ChooseLanguage
)


def encode(action: Action) -> str:
    data = _encode(action)
    if len(data.encode()) > MAX_BYTES:
        # Skus and category names are checked when the catalog loads: this is a bug.
        raise ValueError(f"button data over {MAX_BYTES} bytes: {data!r}")
    return data


def _encode(action: Action) -> str:
    match action:
        case Menu(new=new):
            return "menu:new" if new else "menu"
        case Category(name=name):
            return f"cat:{name}"
        case ShowProduct(sku=sku):
            return f"prod:{sku}"
        case SetQuantity(sku=sku, quantity=quantity):
            return f"qty:{sku}:{quantity}"
        case AddToCart(sku=sku, quantity=quantity):
            return f"add:{sku}:{quantity}"
        case DropProduct(sku=sku):
            return f"drop:{sku}"
        case ShowCart():
            return "cart"
        case ChangeCart(change=change, sku=sku):
            return f"{change}:{sku}"
        case EmptyCart():
            return "empty"
        case Checkout():
            return "checkout"
        case ConfirmOrder():
            return "confirm"
        case ChoosePhone(answer=answer):
            return f"phone:{answer}"
        case OnOrder(verb=verb, order_id=order_id):
            return f"{verb}:{order_id}"
        case ChooseHandover(way=way):
            return f"way:{way}"
        case ChooseZone(index=index):
            return f"zone:{index}"
        case ChooseLanguage(language=language):
            return f"lang:{language}"


_BARE: dict[str, Action] = {
    "cart": ShowCart(),
    "empty": EmptyCart(),
    "checkout": Checkout(),
    "confirm": ConfirmOrder(),
}


_CHANGES: dict[str, CartChange] = {"inc": "inc", "dec": "dec", "rm": "rm"}
_PHONE_ANSWERS: dict[str, PhoneAnswer] = {"yes": "yes", "typed": "typed", "other": "other"}
_ORDER_VERBS: dict[str, OrderVerb] = {
    "retry": "retry",
    "other": "other",
    "cancel": "cancel",
    "paybill": "paybill",
    "pay": "pay",
}
_LANGUAGES: dict[str, Literal["en", "sw"]] = {"en": "en", "sw": "sw"}


def decode(data: str) -> Action | None:
    """The action ``data`` names, or None for anything else (unknown, stale or forged)."""
    if data in _BARE:
        return _BARE[data]
    name, _, arg = data.partition(":")
    if name == "menu":
        return Menu(new=arg == "new")
    if name == "cat":
        return Category(arg)  # "" is the products listed under no category
    if not arg and name not in _ORDER_VERBS:
        return None
    if name == "prod":
        return ShowProduct(arg.partition(":")[0])  # older product buttons had ":1"
    if name == "drop":
        return DropProduct(arg)
    if name in _CHANGES:
        return ChangeCart(_CHANGES[name], arg)
    if name in {"qty", "add"}:
        sku, _, quantity_text = arg.partition(":")
        # A quantity that is not a positive count means one: the tap still does something.
        quantity = count(quantity_text) or 1
        return SetQuantity(sku, quantity) if name == "qty" else AddToCart(sku, quantity)
    if name == "phone" and arg in _PHONE_ANSWERS:
        return ChoosePhone(_PHONE_ANSWERS[arg])
    if name in _ORDER_VERBS:
        order_id = count(arg)
        if order_id is None or not 0 < order_id < MAX_ID:
            order_id = NO_ORDER  # answered "not one of yours", like another's order
        return OnOrder(_ORDER_VERBS[name], order_id)
    if name == "way" and arg in set(Handover):
        return ChooseHandover(Handover(arg))
    if name == "zone" and (index := count(arg)) is not None:
        return ChooseZone(index)
    if name == "lang" and arg in _LANGUAGES:
        return ChooseLanguage(_LANGUAGES[arg])
    return None


def count(text: str) -> int | None:
    """A whole number written in ASCII digits ("²" is a digit to ``str.isdigit``, not to
    int), short enough to be a quantity or an id."""
    return int(text) if text.isascii() and text.isdigit() and len(text) < 12 else None
