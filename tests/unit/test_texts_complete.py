"""Every sentence a customer can see exists in Kiswahili, is really translated, and takes
the same values as its English one."""

from __future__ import annotations

import re
import string
from typing import Any

import pytest

from bot.texts import (
    MERCHANT_PREFIXES,
    kes,
    minutes,
    reason_text,
    say,
    status_text,
    templates,
)
from payments.phone import mask_msisdn
from payments.result_codes import FailureReason

# Layout only (symbols and values): the same in both languages, so kept in English only.
SAME_IN_BOTH_KEYS = frozenset({"cart_line", "order_line"})
# Names a Kenyan reads the same in either language; longest first (a phrase before its words).
# "sukari" is the product in an example of typing an order, in both languages.
SAME_WORDS = (
    "Lipa na M-Pesa",
    "M-Pesa",
    "Safaricom",
    "Paybill",
    "PIN",
    "SMS",
    "Karibu",
    "sukari",
)

ENGLISH = templates("en")
SWAHILI = templates("sw")
CUSTOMER_KEYS = [key for key in ENGLISH if not key.startswith(MERCHANT_PREFIXES)]
WHATSAPP_BUTTON_LIMIT = 20


def values(language: str) -> dict[str, Any]:
    """A representative value for every placeholder, as the code fills it in ``language``."""
    return {
        "shop": "Mama Njeri's Duka",
        "category": "Vegetables",
        "name": "Sukuma wiki",
        "description": "Fresh from Limuru.",
        "price": kes(30),
        "quantity": 2,
        "line_total": kes(60),
        "total": kes(1_250),
        "amount": kes(1_250),
        "limit": kes(250_000),
        "lines": "2 × Sukuma wiki = KES 60",
        "phone": mask_msisdn("254712345678"),
        "network": "Airtel",
        "reference": "DK-7KX3M9",
        "receipt": "QKX1A2B3C4",
        "paybill": "174379",
        "status": status_text(language, "paid"),
        "reason": reason_text(language, FailureReason.WRONG_PIN),
        "wait": minutes(language, 8),
        "outcome": say(language, "resolved_paid"),
        "note": "Tumekurudishia pesa.",
        "typed": "sukari",
        "period": "2026-12-01 to 2026-12-07",
        "products": "• Unga 2kg: 3 sold, KES 630",
        "progress": "2 not moved on yet",
        "left": 3,
        "sku": "unga",
        "stock": 12,
        "low": 5,
        "zone": "CBD",
        "fee": kes(100),
        "address": "Moi Avenue",
        "point": "Shop 12, Kenyatta Market",
        "hours": " (8:00-19:00)",
        "link": "https://maps.google.com/?q=-1.28412,36.82331",
        # The merchant's (English-only) sentences.
        "account": "DK-7KX3M9",
        "answer": "no such transaction",
        "attempts": "• 10:02 07XX XXX 678 failed",
        "count": 3,
        "customer": "Wanjiru",
        "detail": "wrong PIN",
        "filename": "duka-paid-2026-12-01.csv",
        "what": "order DK-7KX3M9 paid",
        "when": "10:02",
        "why": "the amount paid differs from the total",
    }


def placeholders(template: str) -> set[str]:
    return {field for _, field, _, _ in string.Formatter().parse(template) if field}


def words(template: str) -> set[str]:
    """The words written in a sentence: not its values, commands, or SAME_WORDS."""
    text = re.sub(r"\{\w+\}|/\w+", " ", template)
    for shared in SAME_WORDS:
        text = text.replace(shared, " ")
    return set(re.findall(r"[A-Za-z][A-Za-z'-]*", text))


def test_every_customer_sentence_has_a_swahili_one() -> None:
    """At run time a missing Swahili sentence falls back to English; here it fails."""
    missing = [k for k in CUSTOMER_KEYS if k not in SWAHILI and k not in SAME_IN_BOTH_KEYS]
    assert missing == []


def test_swahili_has_no_sentence_that_english_lacks() -> None:
    """A Swahili key without its English one is a typo: ``say`` would never find it."""
    assert [key for key in SWAHILI if key not in ENGLISH] == []


@pytest.mark.parametrize("key", list(ENGLISH))
def test_every_sentence_renders_in_both_languages(key: str) -> None:
    """Each key, merchant ones included, fills in with the values the code passes."""
    assert say("en", key, **values("en")).strip()
    assert say("sw", key, **values("sw")).strip()


@pytest.mark.parametrize("key", [k for k in CUSTOMER_KEYS if k not in SAME_IN_BOTH_KEYS])
def test_no_swahili_sentence_is_the_english_one(key: str) -> None:
    """Filled with the same values, the Swahili sentence is not the English one."""
    assert say("sw", key, **values("en")) != say("en", key, **values("en"))


@pytest.mark.parametrize("key", sorted(set(ENGLISH) & set(SWAHILI)))
def test_both_languages_take_the_same_placeholders(key: str) -> None:
    """A value the English sentence shows is shown in Swahili too, and no other."""
    assert placeholders(SWAHILI[key]) == placeholders(ENGLISH[key])


def test_no_english_word_is_left_in_a_swahili_sentence() -> None:
    """Besides SAME_WORDS, no word of any English sentence appears in a Swahili one."""
    english_words = set().union(*(words(t) for t in ENGLISH.values()))
    leftovers = {
        key: sorted(words(template) & english_words)
        for key, template in SWAHILI.items()
        if words(template) & english_words
    }
    assert leftovers == {}


def test_the_same_in_both_keys_are_layout_only() -> None:
    """Keys said alike in both languages carry no words, so nothing in them needs translating."""
    for key in SAME_IN_BOTH_KEYS:
        assert words(ENGLISH[key]) == set(), key
        assert SWAHILI.get(key, ENGLISH[key]) == ENGLISH[key], key


@pytest.mark.parametrize("language", ["en", "sw"])
def test_button_labels_fit_on_a_whatsapp_button(language: str) -> None:
    """WhatsApp cuts reply-button titles at 20 characters."""
    table = templates(language)
    too_long = {
        k: v for k, v in table.items() if k.startswith("btn_") and len(v) > WHATSAPP_BUTTON_LIMIT
    }
    assert too_long == {}


def test_order_statuses_agree_with_agizo() -> None:
    """Every status takes li-, the prefix of its noun agizo: "Agizo DK-1 limelipwa"."""
    statuses = [key for key in SWAHILI if key.startswith("status_")]
    assert statuses
    assert all(SWAHILI[key].startswith("li") for key in statuses)
    sentence = say("sw", "order_not_payable", reference="DK-1", status=status_text("sw", "paid"))
    assert sentence == "Agizo DK-1 limelipwa; haliwezi kulipwa sasa."
