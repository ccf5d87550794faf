"""The chat webhooks as fuzz targets: Telegram's and WhatsApp's, their real shapes (from the
fake Bot API's and fake Graph API's own user-side builders), their secrets, and strategies
for whole requests."""

from __future__ import annotations

import copy
import hashlib
import hmac
from collections.abc import Callable
from typing import Any

from hypothesis import strategies as st

from tests.fakes.graph_api import DEFAULT_APP_SECRET, FakeGraph, WaUser
from tests.fakes.telegram_api import FakeTelegram
from tests.fuzz.documents import NOT_JSON, Must, bodies, contains, sample, too_big_to_read
from tests.fuzz.example import Credential, Example, flipped, request_around
from tests.fuzz.harness import TELEGRAM_SECRET
from tests.fuzz.wire import FRAMINGS, HEADER_VALUES, Framing

# --- Telegram ----------------------------------------------------------------------------------


def telegram_shapes(fake: FakeTelegram, chat_id: int) -> dict[str, dict[str, Any]]:
    """Updates as the fake Bot API builds them (text, command, contact), and the button press
    and group message it only builds for a button it sent."""
    text = fake.user_sends_text(chat_id, "hello")
    command = fake.user_sends_text(chat_id, "/start")
    contact = fake.user_shares_contact(chat_id, "+254712345678", contact_user_id=chat_id)
    message = copy.deepcopy(text["message"])
    press = {
        "update_id": 1,
        "callback_query": {
            "id": "4242",
            "from": message["from"],
            "chat_instance": f"instance-{chat_id}",
            "data": "menu",
            "message": {**message, "from": fake.bot_user, "text": "Menu"},
        },
    }
    group = copy.deepcopy(text)
    group["message"]["chat"] = {"id": -100123, "type": "group", "title": "Duka test group"}
    edited = {"update_id": 1, "edited_message": copy.deepcopy(text["message"])}
    return {
        "text": text,
        "command": command,
        "contact": contact,
        "button press": press,
        "group message": group,
        "edited message": edited,
    }


def telegram_shape_strategy(
    shapes: dict[str, dict[str, Any]],
) -> st.SearchStrategy[dict[str, Any]]:
    def fresh(shape: dict[str, Any], update_id: int) -> dict[str, Any]:
        return {**copy.deepcopy(shape), "update_id": update_id}

    return st.builds(fresh, sample(shapes.values()), st.integers(1, 2**31))


TELEGRAM_CHARSETS_OK = (None, b"application/json", b"application/json; charset=utf-8")


def telegram_secret_headers(draw: st.DrawFn) -> tuple[list[tuple[bytes, bytes]], Credential]:
    """The secret header: right, missing, or wrong in one of many ways."""
    name = b"X-Telegram-Bot-Api-Secret-Token"
    right = TELEGRAM_SECRET.encode()
    how = draw(st.sampled_from(("right",) * 9 + ("missing", "wrong", "bytes", "spaces", "twice")))
    if how == "missing":
        return [], "wrong"
    if how == "wrong":
        return [(name, flipped(draw, TELEGRAM_SECRET).encode())], "wrong"
    if how == "bytes":
        value = draw(HEADER_VALUES)
        return [(name, value)], "right" if value.strip(b" \t") == right else "wrong"
    if how == "spaces":  # HTTP drops the whitespace around a header value
        return [(name, b" " + right + b"\t")], "right"
    if how == "twice":  # one right, one wrong: which copy counts is the server's choice
        first = draw(st.sampled_from((right, b"nope")))
        return [(name, first), (name, right if first != right else b"nope")], "unclear"
    return [(name, right)], "right"


@st.composite
def telegram_examples(
    draw: st.DrawFn,
    path: str,
    shapes: st.SearchStrategy[dict[str, Any]],
    framings: st.SearchStrategy[Framing] = FRAMINGS,
) -> Example:
    auth, credential = telegram_secret_headers(draw)
    body = draw(bodies(shapes, big=False))
    sent = request_around(draw, path, auth, body, framings)
    must: Must = "either"
    if credential == "right" and sent.plain:
        content_type = {k.lower(): v for k, v in sent.fields.fields}.get(b"content-type")
        if body.doc is not NOT_JSON and not isinstance(body.doc, dict):
            must = "refuse"  # an update is a JSON object
        elif body.pristine and content_type in TELEGRAM_CHARSETS_OK:
            must = "accept"
    return Example("telegram", path, sent.wire, body, credential, must, sent.lying_encoding)


# --- WhatsApp ----------------------------------------------------------------------------------


def whatsapp_shapes(fake: FakeGraph) -> dict[str, dict[str, Any]]:
    """Webhooks as the fake Graph server builds them: text, contact, sticker, location,
    button and list replies, delivered and failed statuses, several in one POST."""
    user = WaUser("254712345678", user_id="KE.1001", name="Wanjiru")
    hidden = WaUser("254700000002", user_id="KE.2002", name="Achieng", phone_hidden=True)
    return {
        "text": fake.text(user, "Hi"),
        "text, phone hidden": fake.text(hidden, "Habari"),
        "contact": fake.contact(user, "+254 712 345 678"),
        "sticker": fake.unsupported(user, "sticker"),
        "location": fake.unsupported(user, "location"),
        "button reply": fake.button_reply(user, "menu", "Menu", context_id="wamid.context"),
        "list reply": fake.list_reply(user, "cat:1", "Vegetables", context_id="wamid.context"),
        "delivered": fake.status(user, "wamid.sent1", "delivered"),
        "failed": fake.status(user, "wamid.sent2", "failed"),
        "two in one": fake.several(fake.text(user, "one"), fake.text(hidden, "two")),
    }


def whatsapp_shape_strategy(
    shapes: dict[str, dict[str, Any]],
) -> st.SearchStrategy[dict[str, Any]]:
    def fresh(shape: dict[str, Any], number: int) -> dict[str, Any]:
        """A new wamid for each message, so that it is handled rather than deduplicated."""
        shape = copy.deepcopy(shape)
        for entry in shape["entry"]:
            for change in entry["changes"]:
                for index, message in enumerate(change["value"].get("messages", [])):
                    message["id"] = f"wamid.fuzz{number}.{index}"
        return shape

    return st.builds(fresh, sample(shapes.values()), st.integers(0, 2**40))


def sign(body: bytes, secret: str = DEFAULT_APP_SECRET) -> bytes:
    return b"sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest().encode()


def whatsapp_signature(
    draw: st.DrawFn, body: bytes
) -> tuple[list[tuple[bytes, bytes]], Credential]:
    name = b"X-Hub-Signature-256"
    right = sign(body)
    how = draw(
        st.sampled_from(
            ("right",) * 10
            + ("missing", "empty", "other-secret", "other-body", "sha1", "bytes")
            + ("upper", "bare-hex")
        )
    )
    forms: dict[str, Callable[[], tuple[list[tuple[bytes, bytes]], Credential]]] = {
        "right": lambda: ([(name, right)], "right"),
        "missing": lambda: ([], "wrong"),
        "empty": lambda: ([(name, b"")], "wrong"),
        "other-secret": lambda: ([(name, sign(body, DEFAULT_APP_SECRET + "x"))], "wrong"),
        "other-body": lambda: ([(name, sign(body + b" "))], "wrong"),
        "sha1": lambda: ([(name, b"sha1=" + right[7:])], "wrong"),
        "bytes": lambda: ([(name, draw(HEADER_VALUES))], "wrong"),
        # Meta sends "sha256=" and lowercase hex; these still prove the secret.
        "upper": lambda: ([(name, b"sha256=" + right[7:].upper())], "unclear"),
        "bare-hex": lambda: ([(name, right[7:])], "unclear"),
    }
    return forms[how]()


@st.composite
def whatsapp_examples(
    draw: st.DrawFn,
    path: str,
    shapes: st.SearchStrategy[dict[str, Any]],
    framings: st.SearchStrategy[Framing] = FRAMINGS,
) -> Example:
    body = draw(bodies(shapes, big=False))
    auth, credential = whatsapp_signature(draw, body.data)
    sent = request_around(draw, path, auth, body, framings)
    must: Must = "either"
    # Parts of a webhook it cannot read are skipped, never fatal (whatsapp_inbound.py): any
    # signed JSON is acknowledged, or Meta redelivers it for days.
    json_doc = body.doc is not NOT_JSON and not contains(body.doc, too_big_to_read)
    if credential == "right" and json_doc and sent.plain:
        must = "accept"
    return Example("whatsapp", path, sent.wire, body, credential, must, sent.lying_encoding)
