"""Sealing free text: every phone number and CheckoutRequestID gone, the text restored
byte for byte, JSON kept JSON (storage/sealing.py)."""

from __future__ import annotations

import json
import re

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from storage.sealing import CannotUnseal, Sealer, generate_key, parse_key

SEALER = Sealer(parse_key(generate_key()))
CALLBACK = (
    '{"Body":{"stkCallback":{"MerchantRequestID":"29115-34620561-1",'
    '"CheckoutRequestID":"ws_CO_02122026092730890712345678","ResultCode":0,'
    '"CallbackMetadata":{"Item":[{"Name":"Amount","Value":1.00},'
    '{"Name":"TransactionDate","Value":20261126102115},'
    '{"Name":"PhoneNumber","Value":254712345678}]}}}}'
)


def test_a_callback_body_keeps_its_structure_and_loses_its_phone_numbers() -> None:
    sealed = SEALER.seal_text(CALLBACK)
    assert "712345678" not in sealed
    document = json.loads(sealed)  # still JSON: the number became a string token
    items = document["Body"]["stkCallback"]["CallbackMetadata"]["Item"]
    assert items[0]["Value"] == 1  # amounts and dates are not phone numbers
    assert items[1]["Value"] == 20261126102115
    assert str(items[2]["Value"]).startswith("enc.")
    assert SEALER.open_text(sealed) == CALLBACK


@pytest.mark.parametrize(
    ("text", "sealed"),
    [
        ("call 0712345678 now", True),
        ("+254712345678", True),
        ("254112345678", True),
        ("712345678", True),
        ("x-0712345678-y", True),
        ("abc0712345678", False),  # part of a word: an id, not a number to dial
        ("0712345678abc", False),
        ("v1.0712345678", False),
        ("2547123456789", False),  # thirteen digits: not a Kenyan mobile number
        ("0812345678", False),
        ("amount 10000000", False),  # the largest amount Daraja takes: 8 digits
    ],
)
def test_what_counts_as_a_phone_number(text: str, sealed: bool) -> None:
    assert (SEALER.seal_text(text) != text) is sealed
    assert SEALER.open_text(SEALER.seal_text(text)) == text


def test_text_that_looks_like_a_token_is_sealed_too_and_comes_back() -> None:
    text = 'a user typed "enc.AAAA." and enc.BBBB.'
    assert SEALER.open_text(SEALER.seal_text(text)) == text


def test_another_key_cannot_open_it() -> None:
    sealed = SEALER.seal_value("254712345678")
    with pytest.raises(CannotUnseal):
        Sealer(parse_key(generate_key())).open_value(sealed)


PHONE = st.from_regex(r"\A(\+?254|0)?[17][0-9]{8}\Z")
TEXT = st.lists(st.one_of(st.text(max_size=20), PHONE, st.just("ws_CO_123"), st.just("enc.")))


@settings(max_examples=300, deadline=None)
@given(TEXT.map("".join))
def test_any_text_comes_back_byte_for_byte(text: str) -> None:
    sealed = SEALER.seal_text(text)
    assert SEALER.open_text(sealed) == text
    assert not re.search(r"ws_CO_", sealed)
