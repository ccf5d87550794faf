"""One customer event, handled the same on every channel: a merchant's command goes to the
desk, the rest to the conversation, and a failure ends in an apology, never in silence."""

from __future__ import annotations

import pytest

from bot.channels.base import Channel, DeliveryError, Notice, handle_inbound
from bot.chat.model import Inbound, Reply
from bot.texts import say

MERCHANT = "shop:merchant-chat"
SORRY = f"{say('en', 'sorry')}\n{say('sw', 'sorry')}"


class RecordingChannel:
    name = "shop"

    def __init__(self, *, broken: bool = False) -> None:
        self.sent: list[tuple[str, str]] = []
        self._broken = broken

    async def send(self, chat_id: str, reply: Reply, *, replace: str | None = None) -> str:
        if self._broken:
            raise DeliveryError("network down")
        self.sent.append((chat_id, reply.text))
        return str(len(self.sent))

    async def notify(self, chat_id: str, notice: Notice, *, replace: str | None = None) -> str:
        return await self.send(chat_id, notice.reply, replace=replace)


class RecordingConversation:
    def __init__(self, *, fails: bool = False) -> None:
        self.events: list[tuple[Inbound, str | None]] = []
        self._fails = fails

    async def reply_through(
        self, channel: Channel, event: Inbound, pressed_message: str | None = None
    ) -> None:
        self.events.append((event, pressed_message))
        if self._fails:
            raise RuntimeError("the conversation broke")


class Desk:
    """Answers "/today" for MERCHANT; anything else is not a command."""

    async def handle(self, who: str, text: str) -> Reply | None:
        if who == MERCHANT and text == "/today":
            return Reply("0 orders today")
        return None

    def is_merchant(self, who: str) -> bool:
        return who == MERCHANT


class Steps:
    """A channel's own steps, recorded; ``answers`` makes the channel answer by itself."""

    def __init__(self, *, answers: bool = False) -> None:
        self.ran: list[str] = []
        self._answers = answers

    async def on_merchant(self) -> None:
        self.ran.append("on_merchant")

    async def before_conversation(self) -> bool:
        self.ran.append("before_conversation")
        return self._answers


def text(body: str, chat_id: str = "merchant-chat") -> Inbound:
    return Inbound("shop", chat_id, "Wanjiru", text=body)


async def test_a_merchants_command_is_answered_by_the_desk_alone() -> None:
    channel, conversation, steps = RecordingChannel(), RecordingConversation(), Steps()
    await handle_inbound(
        channel,
        text("/today"),
        conversation,
        merchant=Desk(),
        who=MERCHANT,
        on_merchant=steps.on_merchant,
        before_conversation=steps.before_conversation,
    )
    assert channel.sent == [("merchant-chat", "0 orders today")]
    assert conversation.events == []
    assert steps.ran == ["on_merchant"]


async def test_a_merchants_other_text_goes_to_the_conversation() -> None:
    channel, conversation, steps = RecordingChannel(), RecordingConversation(), Steps()
    event = text("habari")
    await handle_inbound(
        channel,
        event,
        conversation,
        merchant=Desk(),
        who=MERCHANT,
        on_merchant=steps.on_merchant,
        before_conversation=steps.before_conversation,
    )
    assert conversation.events == [(event, None)]
    assert steps.ran == ["on_merchant", "before_conversation"]


@pytest.mark.parametrize(
    ("event", "who"),
    [
        pytest.param(text("/today", "customer"), "shop:customer", id="a-customer"),
        pytest.param(text("/today"), None, id="sender-unknown"),
        pytest.param(Inbound("shop", "merchant-chat", button="menu"), MERCHANT, id="a-button"),
    ],
)
async def test_only_a_merchants_text_reaches_the_desk(event: Inbound, who: str | None) -> None:
    channel, conversation, steps = RecordingChannel(), RecordingConversation(), Steps()
    await handle_inbound(
        channel,
        event,
        conversation,
        merchant=Desk(),
        who=who,
        pressed_message="41",
        on_merchant=steps.on_merchant,
    )
    assert conversation.events == [(event, "41")]
    assert channel.sent == []
    assert steps.ran == []


async def test_without_a_desk_everything_goes_to_the_conversation() -> None:
    conversation = RecordingConversation()
    await handle_inbound(RecordingChannel(), text("/today"), conversation, who=MERCHANT)
    assert [event.text for event, _ in conversation.events] == ["/today"]


async def test_the_channel_may_answer_before_the_conversation() -> None:
    conversation, steps = RecordingConversation(), Steps(answers=True)
    await handle_inbound(
        RecordingChannel(),
        Inbound("shop", "c1", button="more:1:2"),
        conversation,
        before_conversation=steps.before_conversation,
    )
    assert steps.ran == ["before_conversation"]
    assert conversation.events == []


async def test_a_failure_is_logged_and_apologised_for_in_both_languages(
    caplog: pytest.LogCaptureFixture,
) -> None:
    channel = RecordingChannel()
    await handle_inbound(channel, text("hi", "c1"), RecordingConversation(fails=True))
    assert channel.sent == [("c1", SORRY)]
    [record] = [r for r in caplog.records if r.levelname == "ERROR"]
    assert record.getMessage().startswith("shop:")
    assert record.exc_info is not None


async def test_a_failing_desk_is_apologised_for_too() -> None:
    class BrokenDesk(Desk):
        async def handle(self, who: str, text: str) -> Reply | None:
            raise RuntimeError("database down")

    channel, conversation = RecordingChannel(), RecordingConversation()
    await handle_inbound(channel, text("/today"), conversation, merchant=BrokenDesk(), who=MERCHANT)
    assert channel.sent == [("merchant-chat", SORRY)]
    assert conversation.events == []


async def test_an_apology_that_cannot_be_sent_does_not_raise(
    caplog: pytest.LogCaptureFixture,
) -> None:
    channel = RecordingChannel(broken=True)
    await handle_inbound(channel, text("hi", "c1"), RecordingConversation(fails=True))
    assert any(r.levelname == "ERROR" for r in caplog.records)
