"""WhatsApp's pure parts: reading webhooks, Meta's limits, list pages, settings."""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Mapping, Sequence

import pytest

from bot.channels.whatsapp import MORE, _chunks, _pages, _split_body
from bot.channels.whatsapp_api import (
    ListRow,
    WhatsAppLimitError,
    buttons_message,
    list_message,
    text_message,
)
from bot.channels.whatsapp_inbound import read_webhook, signature_matches
from bot.config import ConfigError, load_config


def envelope(
    *messages: Mapping[str, object],
    contacts: Sequence[Mapping[str, object]] | None = None,
    statuses: Sequence[Mapping[str, object]] | None = None,
) -> dict[str, object]:
    value: dict[str, object] = {
        "messaging_product": "whatsapp",
        "contacts": contacts or [],
        "messages": list(messages),
    }
    if statuses:
        value["statuses"] = statuses
    return {
        "object": "whatsapp_business_account",
        "entry": [{"id": "1", "changes": [{"field": "messages", "value": value}]}],
    }


def test_signature_is_checked_over_the_raw_bytes() -> None:
    body = b'{"a":"\\u00e9"}'
    good = "sha256=" + hmac.new(b"s3cret", body, hashlib.sha256).hexdigest()
    assert signature_matches("s3cret", body, good)
    assert not signature_matches("s3cret", body + b" ", good)
    assert not signature_matches("other", body, good)


def test_customers_are_keyed_on_the_business_scoped_id_when_present() -> None:
    payload = envelope(
        {
            "from": "254712345678",
            "from_user_id": "KE.1",
            "id": "wamid.1",
            "timestamp": "1",
            "type": "text",
            "text": {"body": "hi"},
        },
        contacts=[{"profile": {"name": "Wanjiru"}, "wa_id": "254712345678", "user_id": "KE.1"}],
    )
    [message], _ = read_webhook(payload)
    assert (message.chat_id, message.wa_id, message.name, message.text) == (
        "KE.1",
        "254712345678",
        "Wanjiru",
        "hi",
    )


def test_without_a_business_scoped_id_the_wa_id_is_the_key() -> None:
    payload = envelope(
        {"from": "254712345678", "id": "wamid.2", "type": "text", "text": {"body": "hi"}},
        contacts=[{"profile": {"name": "Otieno"}, "wa_id": "254712345678"}],
    )
    [message], _ = read_webhook(payload)
    assert message.chat_id == "254712345678"


def test_every_message_of_every_change_and_entry_is_read() -> None:
    one = envelope({"from": "1", "id": "wamid.a", "type": "text", "text": {"body": "x"}})
    two = envelope(
        {
            "from": "2",
            "id": "wamid.b",
            "type": "interactive",
            "interactive": {"type": "list_reply", "list_reply": {"id": "cart"}},
        }
    )
    merged = {"object": "whatsapp_business_account", "entry": one["entry"] + two["entry"]}  # type: ignore[operator]
    messages, _ = read_webhook(merged)
    assert [(m.id, m.kind, m.button) for m in messages] == [
        ("wamid.a", "text", None),
        ("wamid.b", "button", "cart"),
    ]


@pytest.mark.parametrize(
    ("message", "kind", "button"),
    [
        (
            {
                "type": "interactive",
                "interactive": {
                    "type": "button_reply",
                    "button_reply": {"id": "checkout", "title": "Checkout"},
                },
            },
            "button",
            "checkout",
        ),
        (
            {"type": "button", "button": {"payload": "retry:4", "text": "Try again"}},
            "button",
            "retry:4",
        ),
        ({"type": "sticker", "sticker": {"id": "9"}}, "unsupported", None),
        ({"type": "interactive", "interactive": {"type": "nfm_reply"}}, "unsupported", None),
    ],
)
def test_message_kinds(message: dict[str, object], kind: str, button: str | None) -> None:
    [parsed], _ = read_webhook(envelope({"from": "1", "id": "wamid.k", **message}))
    assert (parsed.kind, parsed.button) == (kind, button)


@pytest.mark.parametrize(
    ("card", "own"),
    [
        (
            {
                "phones": [{"phone": "+254 712 345 678", "wa_id": "254799"}],
                "origin": "contact_request",
            },
            True,
        ),
        (
            {"phones": [{"phone": "+254712345678", "wa_id": "254712345678"}], "origin": "other"},
            True,
        ),
        (
            {"phones": [{"phone": "+254799999999", "wa_id": "254799999999"}], "origin": "other"},
            False,
        ),
        ({"phones": [{"phone": "+254799999999"}]}, False),
    ],
)
def test_a_contact_is_own_only_when_requested_or_the_senders(
    card: dict[str, object], own: bool
) -> None:
    [message], _ = read_webhook(
        envelope({"from": "254712345678", "id": "wamid.c", "type": "contacts", "contacts": [card]})
    )
    assert message.kind == "contact"
    assert message.contact_is_own is own


def test_statuses_and_garbage_are_read_without_failing() -> None:
    payload = envelope(
        statuses=[
            {
                "id": "wamid.s",
                "status": "failed",
                "errors": [{"code": 131047, "title": "Re-engagement"}],
            }
        ]
    )
    messages, statuses = read_webhook(payload)
    assert messages == []
    assert [(s.message_id, s.status, s.error_codes) for s in statuses] == [
        ("wamid.s", "failed", (131047,))
    ]
    assert read_webhook([1, 2]) == ([], [])
    assert read_webhook({"entry": [{"changes": [{"value": "x"}]}]}) == ([], [])


def test_limits_are_checked_before_sending() -> None:
    with pytest.raises(WhatsAppLimitError, match="4 reply buttons"):
        buttons_message("Pick", [(str(i), f"B{i}") for i in range(4)])
    with pytest.raises(WhatsAppLimitError, match="button title is 21 characters"):
        buttons_message("Pick", [("a", "x" * 21)])
    with pytest.raises(WhatsAppLimitError, match="must differ"):
        buttons_message("Pick", [("a", "Same"), ("b", "Same")])
    with pytest.raises(WhatsAppLimitError, match="11 list rows"):
        list_message("Pick", "Choose", [ListRow(str(i), "r") for i in range(11)])
    with pytest.raises(WhatsAppLimitError, match="row title is 25"):
        list_message("Pick", "Choose", [ListRow("a", "y" * 25)])
    with pytest.raises(WhatsAppLimitError, match="text is 4097"):
        text_message("z" * 4097)


def test_long_lists_are_paged_with_the_pinned_rows_and_a_more_row_on_every_page() -> None:
    rows = [ListRow(str(i), f"Row {i}") for i in range(15)]
    pinned = [ListRow("checkout", "Checkout"), ListRow("menu", "Menu")]
    pages = _pages(rows, pinned, seq=3)
    assert [len(p) for p in pages] == [10, 10, 3]
    assert [r.id for r in pages[0][-3:]] == ["checkout", "menu", f"{MORE}:3:1"]
    assert [r.id for r in pages[1][-3:]] == ["checkout", "menu", f"{MORE}:3:2"]
    assert [r.id for r in pages[2]] == ["14", "checkout", "menu"]
    shown = [r.id for p in pages for r in p if r.id.isdigit()]
    assert shown == [str(i) for i in range(15)]
    assert _pages(rows[:8], pinned, seq=1) == [rows[:8] + pinned]


def test_long_texts_are_split_at_line_ends() -> None:
    text = "\n".join(f"line {i:04d} " + "x" * 90 for i in range(100))  # about 10,000 chars
    chunks = _chunks(text, 4096)
    assert all(len(c) <= 4096 for c in chunks)
    assert "\n".join(chunks) == text
    assert _chunks("short", 4096) == ["short"]


def test_a_long_interactive_body_sends_its_head_first() -> None:
    text = "\n".join("• a line of the cart " + "y" * 40 for _ in range(30)) + "\n\nTotal: KES 9"
    head, body = _split_body(text)
    assert body == "Total: KES 9"
    assert head.endswith("y" * 40)
    assert _split_body("short") == ("", "short")


def test_whatsapp_settings_are_all_or_nothing() -> None:
    assert load_config(env={}).whatsapp is None
    with pytest.raises(ConfigError, match="WHATSAPP_APP_SECRET"):
        load_config(
            env={
                "WHATSAPP_ACCESS_TOKEN": "t",
                "WHATSAPP_PHONE_NUMBER_ID": "1",
                "WHATSAPP_VERIFY_TOKEN": "v",
            }
        )
    settings = load_config(
        env={
            "WHATSAPP_ACCESS_TOKEN": "t",
            "WHATSAPP_PHONE_NUMBER_ID": "1",
            "WHATSAPP_APP_SECRET": "s",
            "WHATSAPP_VERIFY_TOKEN": "v",
        }
    ).whatsapp
    assert settings is not None
    assert settings.api_base_url == "https://graph.facebook.com/v26.0"
    assert settings.template_for("payment_paid") == "duka_payment_paid"
    assert "access_token" not in repr(settings)  # secrets stay out of reprs


def test_merchant_whatsapp_numbers_are_normalized() -> None:
    config = load_config(env={"DUKA_MERCHANT_WHATSAPP_NUMBERS": "0722 000 999, +254711000111"})
    assert config.merchant_whatsapp_numbers == ("254722000999", "254711000111")
    with pytest.raises(ConfigError, match="DUKA_MERCHANT_WHATSAPP_NUMBERS"):
        load_config(env={"DUKA_MERCHANT_WHATSAPP_NUMBERS": "12345"})


def test_the_senders_own_phone_is_taken_from_a_card_that_lists_a_landline_first() -> None:
    card = {
        "phones": [
            {"phone": "+254 20 1234567"},
            {"phone": "+254712345678", "wa_id": "254712345678"},
        ],
        "origin": "contact_request",
    }
    [message], _ = read_webhook(
        envelope({"from": "254712345678", "id": "wamid.l", "type": "contacts", "contacts": [card]})
    )
    assert (message.contact_phone, message.contact_is_own) == ("+254712345678", True)


def test_reactions_are_not_answered_and_a_stranger_contact_is_not_the_sender() -> None:
    reaction = {
        "from": "1",
        "id": "wamid.r",
        "type": "reaction",
        "reaction": {"message_id": "wamid.x", "emoji": "👍"},
    }
    assert read_webhook(envelope(reaction)) == ([], [])
    hidden = {"id": "wamid.h", "type": "text", "text": {"body": "hi"}}
    two = [
        {"wa_id": "254700000001", "user_id": "KE.A"},
        {"wa_id": "254700000002"},
    ]
    assert read_webhook(envelope(hidden, contacts=two)) == ([], [])
