"""One fuzzed request and what the contract says about it, and the pieces every route's
strategy shares: headers and framing around a body, wrong secrets, undecided fields."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal

from hypothesis import strategies as st

from tests.fuzz.documents import Body, Must, Raw
from tests.fuzz.wire import Framing, Headers, Wire, headers, http_request

Route = Literal["stk", "c2b", "c2b-validation", "telegram", "whatsapp"]
# right: the route's credential is right; wrong: it is not; stranger: not even the URL's
# base secret (for the callback URLs, whose per-attempt tokens sit behind the base secret);
# unclear: a form a server may take either way (the secret twice, a digest in capitals).
Credential = Literal["right", "wrong", "stranger", "unclear"]


@dataclass(frozen=True, slots=True)
class Example:
    """One request, and what the contract says about it."""

    route: Route
    target: str
    wire: Wire
    body: Body
    credential: Credential
    must: Must
    lying_encoding: bool = False  # a Content-Encoding the body does not have

    def __repr__(self) -> str:
        return (
            f"Example({self.route} {self.target[:60]}, credential {self.credential}, "
            f"must {self.must}, {self.body!r}, {self.wire!r})"
        )


@dataclass(frozen=True, slots=True)
class Sent:
    wire: Wire
    fields: Headers
    framing: Framing

    @property
    def plain(self) -> bool:
        """The body arrives whole and as it is (no broken framing, no false Content-Encoding)."""
        whole = self.framing.kind in ("length", "chunked")
        return whole and self.fields.content_encoding is None

    @property
    def lying_encoding(self) -> bool:
        return self.fields.content_encoding is not None


def request_around(
    draw: st.DrawFn,
    target: str,
    auth: Sequence[tuple[bytes, bytes]],
    body: Body,
    framings: st.SearchStrategy[Framing],
) -> Sent:
    fields = draw(headers(*auth))
    framing = draw(framings)
    return Sent(http_request("POST", target, fields.fields, body.data, framing), fields, framing)


class Undecided(Exception):
    """A field holds a token (a huge number, a lone surrogate) whose meaning we do not judge."""


def decided(value: Any) -> Any:
    if isinstance(value, Raw):
        raise Undecided
    return value


def blank(value: Any) -> bool:
    return value is None or (isinstance(value, str) and not value.strip())


def wrong_secret(draw: st.DrawFn, path: str) -> str:
    head, _, secret = path.rpartition("/")
    return f"{head}/{flipped(draw, secret)}"


def flipped(draw: st.DrawFn, token: str) -> str:
    """A token that is not ``token``: one character changed, cut, extended or random."""
    how = draw(st.sampled_from(("change", "cut", "extend", "random", "case")))
    if how == "random":
        other = draw(st.from_regex(r"[A-Za-z0-9_.~-]{0,70}", fullmatch=True))
    elif how == "cut":
        other = token[: draw(st.integers(0, len(token) - 1))]
    elif how == "extend":
        other = token + draw(st.from_regex(r"[A-Za-z0-9_%-]{1,3}", fullmatch=True))
    elif how == "case":
        other = token.swapcase()
    else:
        at = draw(st.integers(0, len(token) - 1))
        other = token[:at] + ("0" if token[at] != "0" else "1") + token[at + 1 :]
    return other if other != token and other else token + "0"
