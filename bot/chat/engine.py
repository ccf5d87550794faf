"""The conversation: one ``Inbound`` in, the ``Reply`` list out, state kept in the database.

The decisions are pure steps (``bot.chat.steps``); this class runs them: one event per
chat at a time (a lock per chat, so a double tap cannot interleave two steps), one
transaction per event (``bot.chat.turn``), and the M-Pesa push after that transaction,
with the chat no longer held while Daraja answers.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Callable, Sequence
from datetime import datetime, timedelta

from sqlalchemy.exc import IntegrityError

from bot.catalog import ProductSpec
from bot.channels.base import Channel
from bot.chat import checkout
from bot.chat.events import read_event
from bot.chat.facts import Shop
from bot.chat.flood import FloodGate, Verdict
from bot.chat.model import Inbound, Reply
from bot.chat.turn import PushLater, StaleFacts, Turn, take_turn
from bot.handover import HandoverOptions
from bot.texts import say
from payments.daraja_client import InvalidPushRequest
from payments.errors import DarajaError
from payments.metrics import Metrics
from payments.result_codes import FailureReason
from payments.service import PaymentService, utc_now
from storage.engine import Database
from storage.orders import remember_message

log = logging.getLogger(__name__)
# Deciding an event again when its facts changed under it (a callback paid the order,
# another customer took the last item): each retry reads what the winner wrote, so a few
# suffice; then the error stands.
TRIES = 5

# Before the chat's language is read (that costs the database a flood would tax): both.
_TOO_FAST = Reply(f"{say('en', 'too_fast')}\n{say('sw', 'too_fast')}")


class Conversation:
    def __init__(
        self,
        database: Database,
        payments: PaymentService,
        shop_name: str,
        clock: Callable[[], datetime] = utc_now,
        *,
        paybill: str | None = None,
        flood: FloodGate | None = None,
        catalog: Sequence[ProductSpec] = (),
        shop_name_sw: str = "",
        handover: HandoverOptions | None = None,
        hold_stock_for: timedelta = timedelta(minutes=3),
        metrics: Metrics | None = None,
    ) -> None:
        self._flood = flood or FloodGate()
        self._metrics = metrics or Metrics()
        self._db = database
        self._payments = payments
        self._shop = Shop(shop_name, shop_name_sw, paybill, handover or HandoverOptions())
        # The configured products: the database keeps no Swahili names, these do.
        self._configured = tuple(catalog)
        self._clock = clock
        # A confirmed order keeps its stock this long (renewed at each prompt): a payment
        # attempt's life, so an abandoned order gives it back.
        self._hold_for = hold_stock_for
        # chat -> (its lock, how many events hold or await it); dropped at zero, so the
        # table stays as small as the set of chats being served right now.
        self._turns: dict[tuple[str, str], tuple[asyncio.Lock, list[int]]] = {}

    def use_catalog(self, catalog: Sequence[ProductSpec]) -> None:
        """The configured products once the catalog file was applied again (SIGHUP)."""
        self._configured = tuple(catalog)

    @contextlib.asynccontextmanager
    async def _chat_turn(self, event: Inbound) -> AsyncIterator[None]:
        """One event per chat at a time, replies included, so two taps cannot interleave."""
        key = (event.channel, event.chat_id)
        lock, users = self._turns.setdefault(key, (asyncio.Lock(), [0]))
        users[0] += 1
        try:
            async with lock:
                yield
        finally:
            users[0] -= 1
            if users[0] == 0:
                del self._turns[key]

    async def handle(self, event: Inbound) -> list[Reply]:
        verdict = self._flood.admit((event.channel, event.chat_id))
        if verdict is not Verdict.ADMIT:
            return [_TOO_FAST] if verdict is Verdict.WARN else []
        with self._metrics.chat_event(event.channel):
            async with self._chat_turn(event):
                turn = await self._take_turn(event)
        if turn.push is None:
            return list(turn.replies)
        return [*turn.replies, await self._push(turn.push)]

    async def reply_through(
        self, channel: Channel, event: Inbound, pressed_message: str | None = None
    ) -> None:
        """Handle ``event`` and send the replies back through ``channel``; a reply marked
        ``edit`` replaces ``pressed_message`` (the message whose button was pressed)."""
        verdict = self._flood.admit((event.channel, event.chat_id))
        if verdict is not Verdict.ADMIT:
            if verdict is Verdict.WARN:  # once; the rest of the flood is not answered
                await channel.send(event.chat_id, _TOO_FAST)
            return
        # Timed up to the replies sent: Daraja's answer has its own histogram.
        with self._metrics.chat_event(event.channel):
            async with self._chat_turn(event):
                turn = await self._take_turn(event)
                await self._send(channel, event, turn.replies, pressed_message)
        if turn.push is not None:
            # The chat is free while Daraja answers: the answer is sent when it comes.
            answer = await self._push(turn.push)
            await self._send(channel, event, (answer,), pressed_message)

    async def _send(
        self, channel: Channel, event: Inbound, replies: Sequence[Reply], pressed: str | None
    ) -> None:
        for reply in replies:
            replace = pressed if reply.edit else None
            message_id = await channel.send(event.chat_id, reply, replace=replace)
            if reply.tag:
                await self.remember(channel.name, event.chat_id, reply.tag, message_id)

    async def remember(self, channel: str, chat_id: str, tag: str, message_id: str) -> None:
        """Keep a sent message's id under ``tag`` so that it can be edited later."""
        await self._db.transaction(
            remember_message, channel, chat_id, tag, message_id, self._clock()
        )

    async def _take_turn(self, event: Inbound) -> Turn:
        chat_event = read_event(event)
        for attempt in range(1, TRIES + 1):
            try:
                return await self._db.transaction(
                    take_turn,
                    event,
                    chat_event,
                    self._clock(),
                    self._shop,
                    self._configured,
                    self._payments.open_attempt,
                    self._hold_for,
                )
            except (StaleFacts, IntegrityError) as exc:
                # IntegrityError: two processes opened the same attempt or created the
                # same customer at once; the loser decides again and sees the winner's row.
                if attempt == TRIES:
                    raise
                log.info("chat event decided again: %s", type(exc).__name__)
        raise AssertionError("unreachable")

    async def _push(self, push: PushLater) -> Reply:
        try:
            started = await self._payments.push(push.attempt)
        except DarajaError as exc:
            return checkout.after_push(push.facts, push.order_id, exc.reason, warn=False)
        except InvalidPushRequest:
            return checkout.after_push(push.facts, push.order_id, FailureReason.OTHER, warn=False)
        return checkout.after_push(push.facts, push.order_id, started, warn=push.warn_network)
