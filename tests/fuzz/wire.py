"""Raw HTTP/1.1 on 127.0.0.1, and Hypothesis strategies for everything around a body.

Requests go over a plain socket rather than through an HTTP client, so that a test can send
what no client would: a wrong Content-Length, header bytes that are not UTF-8, a body cut
short, a Content-Encoding the body does not have.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

from hypothesis import strategies as st

KEPT_BYTES = 64 * 1024  # a refused callback is kept up to this many bytes (webhook.py)
ANSWER_SECONDS = 10.0  # a webhook that has not answered by then hangs


def stored_text(body: bytes) -> str:
    """What the audit row must hold for ``body``: its first 64 KiB as UTF-8, bytes that are not
    UTF-8 as backslash escapes, NUL as the four characters ``\\x00``."""
    return body[:KEPT_BYTES].decode("utf-8", "backslashreplace").replace("\x00", "\\x00")


def preview(data: bytes, limit: int = 160) -> str:
    shown = repr(data[:limit])
    return shown if len(data) <= limit else f"{shown}... ({len(data)} bytes)"


# --- raw HTTP/1.1 -----------------------------------------------------------------------------

FramingKind = Literal["length", "chunked", "short", "truncated"]


@dataclass(frozen=True, slots=True)
class Framing:
    """How the body is framed: ``length`` (a true Content-Length), ``chunked``, ``short`` (a
    Content-Length below the body's size, the rest sent anyway) or ``truncated`` (a
    Content-Length above it; the client then closes its side)."""

    kind: FramingKind = "length"
    size: int = 0  # chunked: chunk size; short: declared length; truncated: bytes missing


@dataclass(frozen=True, slots=True)
class Wire:
    """One request exactly as written to the socket, and the body a server honouring its
    framing reads from it."""

    data: bytes
    delivered: bytes
    half_close: bool = False

    def __repr__(self) -> str:
        closed = ", then half-closed" if self.half_close else ""
        return f"Wire({preview(self.data, 400)}{closed})"


def http_request(
    method: str,
    target: str,
    headers: Sequence[tuple[bytes, bytes]],
    body: bytes,
    framing: Framing = Framing(),
) -> Wire:
    """The request, ``Connection: close`` (one request per connection, answer until EOF)."""
    head = [f"{method} {target} HTTP/1.1".encode("ascii"), b"Host: 127.0.0.1"]
    head += [b"Connection: close", *(name + b": " + value for name, value in headers)]
    payload, delivered, half_close = body, body, False
    if framing.kind == "length":
        head.append(b"Content-Length: %d" % len(body))
    elif framing.kind == "chunked":
        head.append(b"Transfer-Encoding: chunked")
        size = max(framing.size, 1)
        parts = [body[i : i + size] for i in range(0, len(body), size)]
        payload = b"".join(b"%x\r\n%s\r\n" % (len(part), part) for part in parts) + b"0\r\n\r\n"
    elif framing.kind == "short":
        declared = min(framing.size, max(len(body) - 1, 0))
        head.append(b"Content-Length: %d" % declared)
        delivered = body[:declared]
    else:
        head.append(b"Content-Length: %d" % (len(body) + max(framing.size, 1)))
        half_close = True
    return Wire(b"\r\n".join(head) + b"\r\n\r\n" + payload, delivered, half_close)


@dataclass(frozen=True, slots=True)
class Answer:
    status: int  # 0: the connection closed without an answer
    headers: dict[str, str]
    body: bytes

    @property
    def from_app(self) -> bool:
        """Our handlers answer JSON; aiohttp's own refusals of a request it cannot parse (and
        its 404 for an unknown path) are plain text."""
        return self.headers.get("content-type", "").startswith("application/json")

    def __str__(self) -> str:
        return f"HTTP {self.status} {preview(self.body, 300)}"


def parse_answer(raw: bytes) -> Answer:
    if not raw:
        return Answer(0, {}, b"")
    head, _, body = raw.partition(b"\r\n\r\n")
    status_line, *lines = head.decode("latin-1").split("\r\n")
    headers = {}
    for line in lines:
        name, _, value = line.partition(":")
        headers[name.strip().lower()] = value.strip()
    if "content-length" in headers:
        body = body[: int(headers["content-length"])]
    return Answer(int(status_line.split()[1]), headers, body)


async def exchange(port: int, wire: Wire) -> Answer:
    """Send ``wire`` on a fresh connection and read the answer until the server closes."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    received = bytearray()
    try:
        async with asyncio.timeout(ANSWER_SECONDS):
            # The server may answer (413) and close before it has read everything we send.
            with contextlib.suppress(ConnectionError):
                writer.write(wire.data)
                await writer.drain()
                if wire.half_close:
                    writer.write_eof()
            with contextlib.suppress(ConnectionError):
                while chunk := await reader.read(65536):
                    received += chunk
    except TimeoutError:
        raise AssertionError(
            f"no answer within {ANSWER_SECONDS:g} s (the server hangs) to {wire!r}"
        ) from None
    finally:
        writer.close()
        with contextlib.suppress(ConnectionError):
            await writer.wait_closed()
    return parse_answer(bytes(received))


# --- headers ---------------------------------------------------------------------------------


RESERVED = {
    "host",
    "connection",
    "content-length",
    "transfer-encoding",
    "content-type",
    "content-encoding",
    "expect",
    "upgrade",
    "x-telegram-bot-api-secret-token",
    "x-hub-signature-256",
}
PRINTABLE = st.characters(min_codepoint=0x20, max_codepoint=0x7E)
CONTENT_TYPES = st.one_of(
    st.sampled_from(
        (
            None,
            "application/json",
            "application/json",
            "application/json; charset=utf-8",
            "application/json; charset=UTF-16",
            "application/json; charset=latin-1",
            "application/json; charset=bogus-8",
            "text/plain",
            "application/x-www-form-urlencoded",
            "multipart/form-data; boundary=zz",
            "",
        )
    ),
    st.text(PRINTABLE, max_size=30),
)
HEADER_VALUES = st.one_of(
    st.text(PRINTABLE, max_size=40).map(str.encode),
    # Bytes that are not UTF-8 (HTTP allows obs-text in values).
    st.sampled_from((b"\xff", b"\xc3\x28", b"caf\xc3\xa9", b"\xed\xa0\x80", b"\x80abc")),
    st.binary(max_size=40).map(lambda b: bytes(c for c in b if c >= 0x20 and c != 0x7F)),
)
# Control characters, which aiohttp refuses before any handler: now and then.
CONTROL_VALUES = st.binary(min_size=1, max_size=20).map(
    lambda b: b.replace(b"\r", b"").replace(b"\n", b"") + b"\x01"
)
EXTRA_HEADERS = st.lists(
    st.tuples(
        st.from_regex(r"[A-Za-z][A-Za-z0-9-]{0,15}", fullmatch=True)
        .filter(lambda name: name.lower() not in RESERVED)
        .map(str.encode),
        st.one_of(HEADER_VALUES, CONTROL_VALUES),
    ),
    max_size=2,
)
# A Content-Encoding the body does not have (aiohttp decodes bodies on its own): one request
# in seven or so, since every one of them meets the same code.
LYING_ENCODINGS = st.sampled_from((None,) * 15 + (b"gzip", b"deflate", b"br"))


@dataclass(frozen=True, slots=True)
class Headers:
    fields: tuple[tuple[bytes, bytes], ...]
    content_encoding: bytes | None  # a Content-Encoding the body does not really have


@st.composite
def headers(draw: st.DrawFn, *auth: tuple[bytes, bytes]) -> Headers:
    """``auth`` first, in its order (a repeated header counts by its first copy), then the
    others in any order."""
    fields: list[tuple[bytes, bytes]] = []
    content_type = draw(CONTENT_TYPES)
    if content_type is not None:
        fields.append((b"Content-Type", content_type.encode()))
    encoding = draw(LYING_ENCODINGS)
    if encoding is not None:
        fields.append((b"Content-Encoding", encoding))
    fields += draw(EXTRA_HEADERS)
    return Headers((*auth, *draw(st.permutations(fields))), encoding)


# Mostly a true Content-Length; one in four chunked (of any size, so also in one piece).
FRAMINGS = st.one_of(
    st.just(Framing()), st.builds(Framing, st.just("chunked"), st.integers(1, 5000))
)
BROKEN_FRAMINGS = st.one_of(
    st.builds(Framing, st.just("chunked"), st.integers(1, 64)),
    st.builds(Framing, st.just("short"), st.integers(0, 200)),
    st.builds(Framing, st.just("truncated"), st.integers(1, 100)),
)
