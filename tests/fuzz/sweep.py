"""A deterministic sweep next to the random search: every field of each real shape, in turn,
set to each hostile value (or removed), sent with the right credential and checked with the
same properties (``checks``).

Hypothesis draws combinations at random and finds a rare single field only by luck; this
tries every named case (1e400, past 64 bits, 5000 digits, NaN, NUL, a lone surrogate, a text
where an object belongs, a missing field, deep nesting) on every run, and reports each way
things broke once, with the first body that broke it.
"""

from __future__ import annotations

import contextlib
import copy
import itertools
import traceback
from collections.abc import Callable, Iterable, Iterator, Sequence
from typing import Any

from tests.c2b_support import confirmation_body
from tests.every_channel import TELEGRAM_PATH
from tests.fuzz.callbacks import FAILURE_CODES, c2b_must, stk_failure, stk_must, stk_success
from tests.fuzz.channels import sign, telegram_shapes, whatsapp_shapes
from tests.fuzz.checks import Tally, run_example
from tests.fuzz.documents import (
    Body,
    Must,
    Raw,
    contains,
    encode,
    field_paths,
    nested,
    show_path,
    too_big_to_read,
    value_at,
)
from tests.fuzz.example import Example, Route
from tests.fuzz.harness import TELEGRAM_SECRET, WHATSAPP_PATH, FuzzDuka
from tests.fuzz.wire import http_request

REMOVED = object()
HOSTILE: tuple[tuple[str, Any], ...] = (
    ("1e400", Raw("1e400")),
    ("2**64", 2**64),
    ("a 5000-digit integer", Raw("9" * 5000)),
    ("NaN", Raw("NaN")),
    ("a text with NUL", "a\x00b"),
    ("a lone surrogate", Raw('"\\ud800"')),
    ("a text", "x"),
    ("removed", REMOVED),
)
# What only a database can object to: PostgreSQL refuses NUL in text, checks column widths.
TEXT_HOSTILE: tuple[tuple[str, Any], ...] = (
    ("a text with NUL", "a\x00b"),
    ("a lone surrogate", Raw('"\\ud800"')),
    ("a 200-character text", "x" * 200),
)


def hostile_variants(
    shape: dict[str, Any], values: Sequence[tuple[str, Any]] = HOSTILE
) -> Iterator[tuple[str, dict[str, Any]]]:
    """(what was done, the document) for every field and hostile value, then deep nesting."""
    for path, (name, value) in itertools.product(field_paths(shape), values):
        doc = copy.deepcopy(shape)
        parent = value_at(doc, path[:-1])
        if value is REMOVED:
            del parent[path[-1]]
        else:
            parent[path[-1]] = value
        yield f"{show_path(path)}: {name}", doc
    yield "an extra field nested 5000 deep", {**shape, "deep": nested(5000, "list")}


def examples(
    route: Route,
    target: str,
    shapes: Iterable[dict[str, Any]],
    must: Callable[[Body], Must],
    auth: Callable[[bytes], list[tuple[bytes, bytes]]] = lambda body: [],
    fresh: Callable[[dict[str, Any], int], dict[str, Any]] = lambda doc, n: doc,
    values: Sequence[tuple[str, Any]] = HOSTILE,
) -> list[Example]:
    """The sweep for one route; ``fresh`` gives each document new ids (a TransID, a wamid),
    so that it is applied rather than skipped as a duplicate."""
    found = []
    variants = itertools.chain.from_iterable(hostile_variants(s, values) for s in shapes)
    for number, (what, doc) in enumerate(variants):
        doc = fresh(doc, number)
        body = Body(encode(doc, "utf-8"), what, doc)
        fields = [*auth(body.data), (b"Content-Type", b"application/json")]
        wire = http_request("POST", target, fields, body.data)
        found.append(Example(route, target, wire, body, "right", must(body)))
    return found


def signed(body: bytes) -> list[tuple[bytes, bytes]]:
    return [(b"X-Hub-Signature-256", sign(body))]


async def sweep(fz: FuzzDuka, tally: Tally, cases: Iterable[Example]) -> None:
    """Run every case; fail once at the end, one line per distinct way things broke."""
    broken: dict[str, list[str]] = {}
    total = 0
    for example in cases:
        total += 1
        try:
            await run_example(fz, tally, example)
        except AssertionError as exc:
            broken.setdefault(_cause(exc), []).append(f"{example.body.what}: {exc}")
    count = sum(len(seen) for seen in broken.values())
    report = "\n".join(
        f"- {cause}: {len(seen)} bodies, e.g. {seen[0][:1500]}" for cause, seen in broken.items()
    )
    assert not broken, f"{count} of {total} bodies broke:\n{report}"


def _cause(exc: AssertionError) -> str:
    """The server's exception and where it was raised, else what the check said (and the
    status it saw)."""
    server = exc.__cause__
    if server is not None:
        frame = traceback.extract_tb(server.__traceback__)[-1]
        return f"500 from {type(server).__name__} at {frame.filename}:{frame.lineno}"
    lines = str(exc).splitlines()
    answer = next((line.strip()[:90] for line in lines if line.strip().startswith("answer")), "")
    return f"{lines[0]} ({answer})"


def cases_for(
    fz: FuzzDuka, route: Route, values: Sequence[tuple[str, Any]] = HOSTILE
) -> list[Example]:
    """The sweep of one webhook, from its real shapes (unknown ids: nothing to settle)."""
    if route == "stk":
        shapes = [
            stk_success("ws_CO_191220191020363925", "NLJ7RT61SV", Raw("1.00"), True),
            stk_failure("ws_CO_21072024125243250722943992", FAILURE_CODES[0]),
        ]
        return examples("stk", fz.stk_path, shapes, stk_must, values=values)
    if route == "c2b":
        shapes = [confirmation_body(TRANS_ID, "DK-YYYYYY", "5.00")]
        return [
            *examples("c2b", fz.c2b_path, shapes, c2b_must, fresh=_new_trans_id, values=values),
            *examples("c2b-validation", fz.c2b_validation_path, shapes, c2b_must, values=values),
        ]
    if route == "telegram":
        telegram = telegram_shapes(fz.telegram, 1001)
        text, press = telegram["text"], telegram["button press"]
        secret = [(b"X-Telegram-Bot-Api-Secret-Token", TELEGRAM_SECRET.encode())]
        return examples(
            "telegram", TELEGRAM_PATH, [text, press], _either, lambda body: secret, values=values
        )
    whatsapp = whatsapp_shapes(fz.graph)
    return examples(
        "whatsapp",
        WHATSAPP_PATH,
        [whatsapp["text"], whatsapp["button reply"]],
        _acknowledged,
        signed,
        _new_wamids,
        values,
    )


TRANS_ID = "RKL51ZDR4F"


def _new_trans_id(doc: dict[str, Any], number: int) -> dict[str, Any]:
    if doc.get("TransID") == TRANS_ID:
        return {**doc, "TransID": f"SWEEP{number:05d}"}
    return doc


def _new_wamids(doc: dict[str, Any], number: int) -> dict[str, Any]:
    doc = copy.deepcopy(doc)
    with contextlib.suppress(KeyError, TypeError, AttributeError, IndexError):
        for index, message in enumerate(doc["entry"][0]["changes"][0]["value"]["messages"]):
            if isinstance(message.get("id"), str):
                message["id"] = f"wamid.sweep{number}.{index}"
    return doc


def _either(body: Body) -> Must:
    return "either"


def _acknowledged(body: Body) -> Must:
    """Any signed JSON is acknowledged (whatsapp_inbound.py skips what it cannot read)."""
    return "either" if contains(body.doc, too_big_to_read) else "accept"
