"""Hypothesis strategies for webhook bodies, and what the contract makes of a document.

Three kinds of body: arbitrary bytes; arbitrary JSON; and the real payload shapes (an STK
callback and a C2B confirmation as in daraja.md §3 and §8, the fakes' Telegram updates and
WhatsApp webhooks) with one to three fields mutated: a wrong type, a huge number (``1e400``,
a 5000-digit integer), NaN or Infinity, deep nesting, NUL, a lone surrogate, other unicode,
a field removed or one added. Documents are written by ``dumps``, so that they can hold
tokens Python's json never writes (``Raw``), in UTF-8, ASCII escapes, UTF-16 or UTF-32.
"""

from __future__ import annotations

import copy
import json
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any, Literal

from hypothesis import strategies as st

from tests.fuzz.wire import KEPT_BYTES, preview

Must = Literal["refuse", "accept", "either"]


@dataclass(frozen=True, slots=True)
class Raw:
    """JSON text written as it is: numbers Python would not write, nesting too deep to build."""

    token: str


def dumps(doc: Any, *, ascii_only: bool = True) -> str:
    if isinstance(doc, Raw):
        return doc.token
    if isinstance(doc, dict):
        members = (
            f"{json.dumps(key, ensure_ascii=ascii_only)}:{dumps(value, ascii_only=ascii_only)}"
            for key, value in doc.items()
        )
        return "{" + ",".join(members) + "}"
    if isinstance(doc, list):
        return "[" + ",".join(dumps(value, ascii_only=ascii_only) for value in doc) + "]"
    return json.dumps(doc, ensure_ascii=ascii_only)  # a float NaN becomes NaN, as Python does


NONFINITE = frozenset({"NaN", "Infinity", "-Infinity"})
HUGE_NUMBERS = (
    Raw("1e400"),
    Raw("-1e400"),
    Raw("1E999999999"),
    Raw("1e-400"),
    Raw("9" * 5000),
    Raw("-" + "1" * 5000),
    Raw("NaN"),
    Raw("Infinity"),
    Raw("-Infinity"),
    Raw("-0"),
    Raw("0.0000000000000000000001"),
    Raw("123456789012345678901234567890"),
    Raw("1e20"),
    2**63,  # just past a signed 64-bit integer
    -(2**63) - 1,
    2**64,
    10**19,
)
ODD_TEXTS: tuple[str | Raw, ...] = (
    "",
    " ",
    "\x00",
    "ws_CO_\x00",
    Raw('"\\u0000"'),
    Raw('"\\ud800"'),  # a lone surrogate: valid JSON, not encodable as UTF-8
    Raw('"ws_CO_\\udfff1"'),
    Raw('"\\udbff\\udbff"'),
    "\x00" * 3,
    "\u202eevil",
    "ñandú 😀",
    "\ufeff0",
    "0",
    " 0 ",
    "SFC_IC0003",
    "null",
    "\r\n",
    "x" * 65,
    "9" * 40,
)
DEPTHS = (50, 999, 1001, 3000, 20_000)


def nested(depth: int, kind: str) -> Raw:
    if kind == "list":
        return Raw("[" * depth + "]" * depth)
    return Raw('{"a":' * depth + "0" + "}" * depth)


def is_deep(value: object) -> bool:
    return isinstance(value, Raw) and value.token.startswith(("[[", '{"a":{'))


SCALARS = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-(10**20), 10**20),
    st.floats(),
    st.text(max_size=24),
)
HUGE = st.sampled_from(HUGE_NUMBERS)
ODD = st.sampled_from(ODD_TEXTS)
DEEP = st.builds(nested, st.sampled_from(DEPTHS), st.sampled_from(("list", "object")))
WEIRD_VALUES: st.SearchStrategy[Any] = st.one_of(
    SCALARS,
    HUGE,
    ODD,
    DEEP,
    st.lists(SCALARS, max_size=3),
    st.dictionaries(st.text(max_size=6), SCALARS, max_size=3),
)
ANY_JSON: st.SearchStrategy[Any] = st.recursive(
    st.one_of(SCALARS, st.sampled_from(HUGE_NUMBERS), st.sampled_from(ODD_TEXTS)),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner),
    max_leaves=12,
)


# --- mutating a real shape -------------------------------------------------------------------

Path = tuple[str | int, ...]


def field_paths(doc: Any, at: Path = ()) -> list[Path]:
    items: list[tuple[str | int, Any]]
    if isinstance(doc, dict):
        items = list(doc.items())
    elif isinstance(doc, list):
        items = list(enumerate(doc))
    else:
        return []
    found: list[Path] = []
    for key, value in items:
        found += [(*at, key), *field_paths(value, (*at, key))]
    return found


def _objects(doc: Any) -> list[Path]:
    top: list[Path] = [()] if isinstance(doc, dict) else []
    return top + [path for path in field_paths(doc) if isinstance(value_at(doc, path), dict)]


def value_at(doc: Any, path: Path) -> Any:
    for key in path:
        doc = doc[key]
    return doc


def _retyped(value: Any) -> list[Any]:
    """The same information in another JSON type, the way a sender's bug would change it."""
    if isinstance(value, bool) or value is None:
        return [str(value).lower(), int(bool(value)), [value]]
    if isinstance(value, int | float):
        return [str(value), float(value), -value, [value], {"value": value}, True]
    if isinstance(value, str):
        digits = value.strip().isdigit() and len(value.strip()) < 30
        return [int(value) if digits else 0, [value], {"text": value}, value.upper(), None]
    if isinstance(value, list):
        return [{}, "", value[:1] or None, {str(i): item for i, item in enumerate(value)}]
    if isinstance(value, dict):
        return [[value], list(value), json.dumps(value, default=str), None]
    return [None]


def show_path(path: Path) -> str:
    return ".".join(str(key) for key in path) or "(top)"


def _brief(value: Any) -> str:
    text = dumps(value) if not isinstance(value, Raw) else value.token
    return text if len(text) <= 40 else f"{text[:30]}...({len(text)} chars)"


def _is_number(value: object) -> bool:
    if isinstance(value, Raw):
        return value.token[:1] in "-0123456789NI"
    return isinstance(value, int | float) and not isinstance(value, bool)


def _is_text(value: object) -> bool:
    return isinstance(value, str) or (isinstance(value, Raw) and value.token.startswith('"'))


# Truthy first: ``(x or {}).get(...)`` survives None, 0 and "", not "x" or [1].
FLAT = st.one_of(st.sampled_from(("x", 1, True, [1], "{}", 0.5)), SCALARS, ODD)

# What to do to a field, weighted toward what breaks readers: a number made huge, a text made
# odd, an object or list flattened into a scalar (code that calls .get() on it), nesting.
Action = tuple[str, Callable[[Any], bool] | None, st.SearchStrategy[Any] | None]
ACTIONS: tuple[Action, ...] = (
    ("inflate", _is_number, HUGE),
    ("inflate", _is_number, HUGE),
    ("garble", _is_text, ODD),
    ("garble", _is_text, ODD),
    ("garble", _is_text, ODD),
    ("flatten", lambda v: isinstance(v, dict | list), FLAT),
    ("flatten", lambda v: isinstance(v, dict | list), FLAT),
    ("deepen", lambda v: True, DEEP),
    ("replace", lambda v: True, WEIRD_VALUES),
    ("replace", lambda v: True, WEIRD_VALUES),
    ("retype", lambda v: True, None),
    ("delete", lambda v: True, None),
    ("add", None, WEIRD_VALUES),
)


@st.composite
def mutated(draw: st.DrawFn, base: Any) -> tuple[Any, str]:
    """``base`` (a JSON document) with one to three fields changed; and what was changed."""
    doc = copy.deepcopy(base)
    notes: list[str] = []
    for _ in range(draw(st.integers(1, 3))):
        action, fits, values = draw(st.sampled_from(ACTIONS))
        paths = field_paths(doc)
        objects = _objects(doc)
        if (fits is None or not paths) and objects:
            where = draw(st.sampled_from(objects))
            name = draw(st.text(max_size=12) | st.sampled_from(("Value", "Name", "id", "type")))
            value_at(doc, where)[name] = draw(WEIRD_VALUES)
            notes.append(
                f"added {show_path((*where, name))} = {_brief(value_at(doc, where)[name])}"
            )
            continue
        if fits is None or not paths:
            break
        path = draw(st.sampled_from([p for p in paths if fits(value_at(doc, p))] or paths))
        parent, key = value_at(doc, path[:-1]), path[-1]
        if action == "delete":
            del parent[key]
            notes.append(f"removed {show_path(path)}")
            continue
        if values is None:
            parent[key] = draw(st.sampled_from(_retyped(parent[key])))
        else:
            parent[key] = draw(values)
        notes.append(f"{show_path(path)} = {_brief(parent[key])}")
    return doc, "; ".join(notes)


# --- bodies ----------------------------------------------------------------------------------

NOT_JSON = object()  # Body.doc of a body that was not built from a document

Encoding = Literal["utf-8", "ascii", "utf-16", "utf-8-sig", "utf-32"]
ENCODINGS: st.SearchStrategy[Encoding] = st.sampled_from(
    ("utf-8", "utf-8", "utf-8", "ascii", "ascii", "utf-16", "utf-8-sig", "utf-32")
)


def encode(doc: Any, encoding: Encoding) -> bytes:
    if encoding == "ascii":
        return dumps(doc).encode("ascii")
    return dumps(doc, ascii_only=False).encode(encoding, "surrogatepass")


@dataclass(frozen=True, slots=True)
class Body:
    data: bytes
    what: str  # how it was made, for the report of a failing example
    doc: Any = NOT_JSON  # the JSON document it encodes, if any
    pristine: bool = False  # a real shape, unchanged, in UTF-8

    def __repr__(self) -> str:
        return f"Body({self.what}: {preview(self.data, 300)})"


ARBITRARY_BYTES = st.one_of(
    st.binary(max_size=300),
    st.text(max_size=100).map(lambda text: text.encode("utf-8", "surrogatepass")),
).map(lambda data: Body(data, "arbitrary bytes"))


@st.composite
def arbitrary_json(draw: st.DrawFn) -> Body:
    doc = draw(ANY_JSON)
    encoding = draw(ENCODINGS)
    return Body(encode(doc, encoding), f"arbitrary JSON ({encoding})", doc)


@st.composite
def near_valid(draw: st.DrawFn, shapes: st.SearchStrategy[Any]) -> Body:
    doc, changes = draw(mutated(draw(shapes)))
    encoding = draw(ENCODINGS)
    return Body(encode(doc, encoding), f"real shape with {changes} ({encoding})", doc)


@st.composite
def pristine(draw: st.DrawFn, shapes: st.SearchStrategy[Any]) -> Body:
    doc = draw(shapes)
    return Body(encode(doc, "utf-8"), "real shape", doc, pristine=True)


@st.composite
def oversized(draw: st.DrawFn, shapes: st.SearchStrategy[Any]) -> Body:
    """Around the 64 KiB limit: a real shape padded with whitespace, or a repeated pattern
    (multi-byte characters cut at the limit included)."""
    size = draw(
        st.sampled_from((KEPT_BYTES, KEPT_BYTES + 1))
        | st.integers(KEPT_BYTES - 8, KEPT_BYTES + 3000)
    )
    if draw(st.booleans()):
        doc = draw(shapes)
        text = dumps(doc)
        padding = max(size - len(text.encode()) - 1, 0)
        data = (text[:-1] + " " * padding + text[-1]).encode()
        return Body(data, f"real shape padded to {len(data)} bytes", doc)
    pattern = draw(st.sampled_from((b"\x00", b"\xff", "é".encode(), "😀".encode(), b'{"a":')))
    data = (pattern * (size // len(pattern) + 1))[:size]
    return Body(data, f"{pattern!r} repeated to {size} bytes")


def bodies(shapes: st.SearchStrategy[Any], *, big: bool = True) -> st.SearchStrategy[Body]:
    """Every kind of body, most of them near-valid."""
    kinds = [ARBITRARY_BYTES, arbitrary_json(), pristine(shapes)]
    kinds += [near_valid(shapes) for _ in range(5)]  # distinct objects: one_of weighs each
    if big:
        kinds.append(oversized(shapes))
    return st.one_of(kinds)


def contains(doc: Any, test: Any) -> bool:
    """Whether ``test`` holds for any value in ``doc`` (its leaves and containers)."""
    stack = [doc]
    while stack:
        value = stack.pop()
        if test(value):
            return True
        if isinstance(value, dict):
            stack += value.values()
        elif isinstance(value, list):
            stack += value
    return False


def nonfinite(value: object) -> bool:
    """NaN or Infinity: not JSON (RFC 8259), though Python writes and reads it."""
    if isinstance(value, float):
        return value != value or value in (float("inf"), float("-inf"))
    return isinstance(value, Raw) and value.token in NONFINITE


def too_big_to_read(value: object) -> bool:
    """JSON a reader may refuse: an integer of more than 4300 digits (Python's limit), or
    nesting near the interpreter's recursion limit."""
    if not isinstance(value, Raw):
        return False
    digits = value.token.lstrip("-")
    if digits.isdigit():
        return len(digits) > 4300
    return is_deep(value) and value.token.count("[") + value.token.count("{") >= 900


def sample(values: Iterable[Any]) -> st.SearchStrategy[Any]:
    return st.sampled_from(list(values))
