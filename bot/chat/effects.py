"""What a step asks to be done: typed commands, carried out by ``bot.chat.turn`` in the
event's one transaction (and, for a payment, the push after it)."""

from __future__ import annotations

from dataclasses import dataclass

from bot.chat.model import ChatState, Reply
from storage.orders import NewOrderItem, OrderHandover


@dataclass(frozen=True, slots=True)
class CreateOrder:
    """Create the order; its id becomes the chat state's ``order_id``."""

    items: tuple[NewOrderItem, ...]
    handover: OrderHandover | None = None  # how it reaches the customer, when asked


@dataclass(frozen=True, slots=True)
class CancelOrder:
    """Cancel an order the facts showed cancellable (if it no longer is, the event is
    decided again on fresh facts)."""

    order_id: int


@dataclass(frozen=True, slots=True)
class SetLanguage:
    language: str


@dataclass(frozen=True, slots=True)
class StartPayment:
    """Save the number, open the payment attempt, and after the transaction push the
    M-Pesa prompt (the chat is not held while Daraja answers)."""

    order_id: int
    msisdn: str
    warn_network: bool = True  # say when the number looks like another network's


Effect = CreateOrder | CancelOrder | SetLanguage | StartPayment


@dataclass(frozen=True, slots=True)
class Outcome:
    """What a step decided: the chat's next state, what to say, what to do."""

    state: ChatState
    replies: tuple[Reply, ...] = ()
    effects: tuple[Effect, ...] = ()
