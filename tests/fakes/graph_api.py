"""A fake WhatsApp Cloud API (Graph API) server for loopback tests.

``FakeGraph`` is an aiohttp app that speaks the part of the Cloud API wire protocol a WhatsApp
channel uses, pointed at with a Graph base URL of ``f"{fake.base_url}/v26.0"``:

* it answers ``POST /{version}/{phone_number_id}/messages`` like Meta: the bearer token and the
  phone number id are checked, the body is validated against Meta's documented limits (3 reply
  buttons of at most 20 characters, 10 list rows in total, 4096-character texts, ...), and the
  answer is either the success envelope (``contacts`` + ``messages[0].id`` = a fresh wamid) or a
  Graph error (``{"error": {"message": "(#131009) ...", "code": ..., "error_data": {"details":
  ...}}}``) with the matching HTTP status, so the client sees what it would see against Meta;
* it takes uploads at ``POST /{version}/{phone_number_id}/media`` as Meta does (multipart with
  ``messaging_product``, ``type`` and ``file``; Meta's MIME types, so no ``text/csv``; 100 MB for
  documents, 5 MB for images, 16 MB for audio and video), keeps them (``media``, ``uploads``) and
  answers ``{"id": <media id>}``; a media message must name an uploaded id (kept 30 days) or a
  link, and ``documents_to`` gives a user's documents back with their bytes;
* it enforces the 24-hour customer service window: a free-form (non-template) message to a user
  who has not written in the last 24 h is refused with 131047 "Re-engagement message";
* it records every request (``sent``) and answers questions about what a user received
  (``texts_to``, ``last_interactive``, ``templates_to``, ``wait_for``), so tests assert on
  outcomes rather than on mocks;
* it plays the user: ``text``, ``button_reply``, ``list_reply``, ``template_button``,
  ``contact``, ``unsupported`` and ``status`` build real-shaped webhook payloads (and open the
  user's window, as writing to a business does), ``several`` merges them into one delivery, and
  ``post_webhook`` POSTs one with a correct, wrong or missing ``X-Hub-Signature-256``;
  ``verify_webhook`` performs Meta's GET subscription handshake;
* it injects faults: ``fail_next`` (130429 throughput, 131056 pair rate limit, 500/131000, ...)
  and ``set_down`` (every request answers HTTP 500 until it is back up).

It is strict where Meta is strict and a test would otherwise pass for the wrong reason: a
fourth button, a 21-character title, an 11th list row or a free-form message outside the window
all fail as they would in production. A user can only tap a button or list row that the bot
actually sent them. Known simplifications: a media ``link`` is accepted without being fetched,
templates are accepted under any name unless ``approved_templates`` is given, markdown is kept
verbatim, and only one business phone number is served.

See docs/channels.md section 2 (in the shared research notes) for the Cloud API facts this relies
on. Where Meta's documentation gives no exact wording for a validation error, the ``details``
text follows the pattern of the real ones ("Button title length invalid. Min length: 1, Max
length: 20"); build on ``code`` and on the limit named in ``details``, not on exact sentences.
"""

from __future__ import annotations

import asyncio
import base64
import copy
import hashlib
import hmac
import itertools
import json
import re
import secrets
import time
from collections import deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Final, Literal

import aiohttp
from aiohttp import web

__all__ = [
    "DEFAULT_ACCESS_TOKEN",
    "DEFAULT_APP_SECRET",
    "DEFAULT_DISPLAY_PHONE_NUMBER",
    "DEFAULT_PHONE_NUMBER_ID",
    "DEFAULT_VERIFY_TOKEN",
    "DEFAULT_WABA_ID",
    "RE_ENGAGEMENT_DETAILS",
    "ButtonNotFoundError",
    "FakeGraph",
    "MediaUpload",
    "ReceivedDocument",
    "Sent",
    "WaUser",
]

DEFAULT_ACCESS_TOKEN: Final = "EAAFakeAccessTokenForDukaTests"
DEFAULT_APP_SECRET: Final = "fake-app-secret"
DEFAULT_VERIFY_TOKEN: Final = "duka-verify-token"
DEFAULT_PHONE_NUMBER_ID: Final = "1055500000"
DEFAULT_DISPLAY_PHONE_NUMBER: Final = "254700000000"
DEFAULT_WABA_ID: Final = "1099900000"

WINDOW_SECONDS: Final = 24 * 60 * 60

RE_ENGAGEMENT_DETAILS: Final = (
    "Message failed to send because more than 24 hours have passed since the customer last"
    " replied to this number."
)

# Meta's titles for the codes a channel meets; the Graph "message" is "(#<code>) <title>".
# Meta says to build logic on code and error_data.details, so the titles are for humans.
_TITLES: Final[Mapping[int, str]] = {
    4: "Application request limit reached",
    100: "Invalid parameter",
    131000: "Something went wrong",
    131005: "Access denied",
    131008: "Required parameter is missing",
    131009: "Parameter value is not valid",
    131053: "Media upload error",
    131026: "Message undeliverable",
    131047: "Re-engagement message",
    131048: "Spam rate limit hit",
    131056: "(Business Account, Consumer Account) pair rate limit hit",
    130429: "Rate limit hit",
    132000: "Number of parameters does not match the expected number of params",
    132001: "Template name does not exist in the translation",
    133010: "Phone number not registered",
}
_DEFAULT_DETAILS: Final[Mapping[int, str]] = {
    131000: "Message failed to send due to an unknown error.",
    131026: "Message Undeliverable.",
    131047: RE_ENGAGEMENT_DETAILS,
    131048: "Message failed to send because there are restrictions on how many messages can be"
    " sent from this phone number.",
    131056: "Message failed to send because there were too many messages sent from this phone"
    " number to the same phone number in a short period of time.",
    130429: "Message failed to send because there were too many messages sent from this phone"
    " number in a short period of time.",
}

# Meta's documented limits (docs/channels.md 2.4).
TEXT_BODY_MAX: Final = 4096
INTERACTIVE_BODY_MAX: Final = 1024
HEADER_TEXT_MAX: Final = 60
FOOTER_MAX: Final = 60
BUTTONS_MAX: Final = 3
BUTTON_TITLE_MAX: Final = 20
BUTTON_ID_MAX: Final = 256
LIST_BUTTON_MAX: Final = 20
SECTIONS_MAX: Final = 10
ROWS_MAX: Final = 10
ROW_TITLE_MAX: Final = 24
ROW_DESCRIPTION_MAX: Final = 72
ROW_ID_MAX: Final = 200
SECTION_TITLE_MAX: Final = 24

# Uploads (Meta's "supported media types"): the MIME types /media takes, each with its size
# limit in bytes (decimal megabytes: the stricter reading). A CSV is not among them.
MB: Final = 1_000_000
_DOCUMENT_LIMIT: Final = 100 * MB
MEDIA_LIMITS: Final[Mapping[str, int]] = {
    "audio/aac": 16 * MB,
    "audio/mp4": 16 * MB,
    "audio/mpeg": 16 * MB,
    "audio/amr": 16 * MB,
    "audio/ogg": 16 * MB,
    "audio/opus": 16 * MB,
    "application/vnd.ms-powerpoint": _DOCUMENT_LIMIT,
    "application/msword": _DOCUMENT_LIMIT,
    "application/vnd.openxmlformats-officedocument.wordprocessingml.document": _DOCUMENT_LIMIT,
    "application/vnd.openxmlformats-officedocument.presentationml.presentation": _DOCUMENT_LIMIT,
    "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet": _DOCUMENT_LIMIT,
    "application/pdf": _DOCUMENT_LIMIT,
    "text/plain": _DOCUMENT_LIMIT,
    "application/vnd.ms-excel": _DOCUMENT_LIMIT,
    "image/jpeg": 5 * MB,
    "image/png": 5 * MB,
    "image/webp": 500_000,  # stickers (animated; static ones 100 KB)
    "video/mp4": 16 * MB,
    "video/3gpp": 16 * MB,
}
MEDIA_CAPTION_MAX: Final = 1024
MEDIA_KEPT_SECONDS: Final = 30 * 24 * 60 * 60  # uploads persist 30 days
_MEDIA_KINDS: Final = frozenset({"audio", "document", "image", "sticker", "video"})
_CAPTIONED: Final = frozenset({"document", "image", "video"})

_MESSAGE_TYPES: Final = frozenset(
    {
        "audio",
        "contacts",
        "document",
        "image",
        "interactive",
        "location",
        "reaction",
        "sticker",
        "template",
        "text",
        "video",
    }
)
# Interactive kinds the fake validates in depth; the rest are recorded and accepted.
_CHECKED_INTERACTIVE: Final = frozenset(
    {"button", "list", "request_contact_info", "location_request_message"}
)
_OTHER_INTERACTIVE: Final = frozenset(
    {
        "address_message",
        "call_permission_request",
        "catalog_message",
        "cta_url",
        "flow",
        "product",
        "product_list",
    }
)
_STATUSES: Final = frozenset({"sent", "delivered", "read", "failed"})
# Something phone-like: digits with the usual decoration. Anything else (a BSUID such as
# "KE.1234...") is an opaque identifier and is compared verbatim.
_PHONE_RE: Final = re.compile(r"\+?[\d\s().-]+")

Signature = Literal["valid", "bad", "missing"]
Layout = Literal["messages", "changes", "entries"]


@dataclass(frozen=True)
class WaUser:
    """A WhatsApp user as webhooks identify them.

    ``user_id`` is the business-scoped user id (BSUID, e.g. "KE.1234...") that Meta adds since
    2026; with it set, messages carry ``from_user_id`` and contacts carry ``user_id`` besides the
    phone-based ``wa_id``. ``phone_hidden`` plays a user with a username whose number Meta
    withholds: ``from``/``wa_id`` are then left out and only the BSUID identifies them.
    """

    wa_id: str
    user_id: str | None = None
    name: str = "Wanjiru"
    username: str | None = None
    phone_hidden: bool = False

    def __post_init__(self) -> None:
        if self.phone_hidden and self.user_id is None:
            raise ValueError("a user whose phone is hidden needs a user_id (BSUID)")


@dataclass
class Sent:
    """One request to ``/messages`` as the fake received and answered it.

    ``to`` is the ``to`` value, else the ``recipient`` value, as sent ("" when there was none,
    e.g. a read receipt). ``accepted`` is True when Meta would have answered 200; otherwise
    ``error_code``/``status``/``details`` are what the fake answered. ``message_id`` is the wamid
    given to an accepted message.
    """

    to: str
    type: str
    body: dict[str, Any]
    accepted: bool
    error_code: int | None = None
    status: int = 200
    details: str | None = None
    message_id: str | None = None


@dataclass
class MediaUpload:
    """One request to ``/media`` as the fake received and answered it.

    ``mime_type`` is the file part's Content-Type (what Meta checks); ``media_id`` the id given
    to an accepted upload, else ``error_code``/``details`` are what the fake answered.
    """

    filename: str | None
    mime_type: str | None
    content: bytes = field(repr=False)
    accepted: bool = False
    media_id: str | None = None
    error_code: int | None = None
    details: str | None = None
    uploaded_at: float = 0.0


@dataclass(frozen=True)
class ReceivedDocument:
    """A document message a user received, with the uploaded file's bytes."""

    filename: str
    mime_type: str
    content: bytes = field(repr=False)
    caption: str | None
    message_id: str | None


class ButtonNotFoundError(LookupError):
    """The simulated user tapped a button or list row that no message to them carries."""


class _GraphError(Exception):
    """Raised while handling a send to answer with a Graph API error."""

    def __init__(
        self, code: int, details: str, status: int = 400, title: str | None = None
    ) -> None:
        super().__init__(details)
        self.code = code
        self.details = details
        self.status = status
        self.title = title if title is not None else _TITLES.get(code, "Error")


@dataclass
class _Fault:
    status: int
    code: int
    details: str
    title: str
    to: frozenset[str] | None = None  # only sends to these ids (wa_id, BSUID); None: any


def _invalid(details: str) -> _GraphError:
    # Schema-level problems (missing or mistyped parameters, over-long free text): code 100.
    return _GraphError(100, details)


def _not_valid(details: str) -> _GraphError:
    # Meta's semantic checks on buttons, rows and sections: code 131009, as observed in the wild
    # ("Invalid buttons count. Min allowed buttons: 1, Max allowed buttons: 3").
    return _GraphError(131009, details)


def _identifier_key(identifier: str) -> str:
    """The form identifiers are compared in: digits for phone numbers, else verbatim."""
    value = identifier.strip()
    if _PHONE_RE.fullmatch(value):
        return re.sub(r"\D", "", value)
    return value


def _fbtrace_id() -> str:
    return "A" + secrets.token_urlsafe(16)[:22]


def _require_object(parent: Mapping[str, Any], name: str, where: str) -> dict[str, Any]:
    value = parent.get(name)
    if not isinstance(value, dict):
        raise _invalid(f"The parameter {where} is required.")
    return value


def _require_text(value: Any, where: str) -> str:
    if not isinstance(value, str) or value == "":
        raise _invalid(f"The parameter {where} is required.")
    return value


def _check_free_text(value: str, where: str, limit: int) -> None:
    if len(value) > limit:
        raise _invalid(f"Param {where} must be at most {limit} characters long.")


def _check_length(value: Any, what: str, limit: int) -> str:
    if not isinstance(value, str) or not 1 <= len(value) <= limit:
        raise _not_valid(f"{what} length invalid. Min length: 1, Max length: {limit}")
    return value


def _check_header_footer(interactive: Mapping[str, Any], *, text_header_only: bool) -> None:
    header = interactive.get("header")
    if header is not None:
        if not isinstance(header, dict):
            raise _invalid("Param interactive.header must be an object.")
        kind = header.get("type")
        allowed = {"text"} if text_header_only else {"text", "image", "video", "document"}
        if kind not in allowed:
            raise _invalid(f"Param interactive.header.type must be one of {sorted(allowed)}.")
        if kind == "text":
            text = _require_text(header.get("text"), "interactive.header.text")
            _check_free_text(text, "interactive.header.text", HEADER_TEXT_MAX)
    footer = interactive.get("footer")
    if footer is not None:
        if not isinstance(footer, dict):
            raise _invalid("Param interactive.footer must be an object.")
        text = _require_text(footer.get("text"), "interactive.footer.text")
        _check_free_text(text, "interactive.footer.text", FOOTER_MAX)


def _check_body(interactive: Mapping[str, Any]) -> None:
    body = _require_object(interactive, "body", "interactive.body")
    text = _require_text(body.get("text"), "interactive.body.text")
    _check_free_text(text, "interactive.body.text", INTERACTIVE_BODY_MAX)


def _check_reply_buttons(interactive: Mapping[str, Any]) -> None:
    _check_body(interactive)
    _check_header_footer(interactive, text_header_only=False)
    action = _require_object(interactive, "action", "interactive.action")
    buttons = action.get("buttons")
    if not isinstance(buttons, list) or not 1 <= len(buttons) <= BUTTONS_MAX:
        raise _not_valid(
            f"Invalid buttons count. Min allowed buttons: 1, Max allowed buttons: {BUTTONS_MAX}"
        )
    titles: set[str] = set()
    ids: set[str] = set()
    for button in buttons:
        if not isinstance(button, dict) or button.get("type") != "reply":
            raise _invalid('Param interactive.action.buttons[].type must be "reply".')
        reply = _require_object(button, "reply", "interactive.action.buttons[].reply")
        title = _check_length(reply.get("title"), "Button title", BUTTON_TITLE_MAX)
        button_id = _check_length(reply.get("id"), "Button id", BUTTON_ID_MAX)
        # The user's tap comes back with the id and the title only, so both must identify the
        # button: WhatsApp refuses duplicates.
        if title in titles:
            raise _not_valid(f"Button title must be unique. Duplicate title: {title!r}")
        if button_id in ids:
            raise _not_valid(f"Button id must be unique. Duplicate id: {button_id!r}")
        titles.add(title)
        ids.add(button_id)


def _check_list(interactive: Mapping[str, Any]) -> None:
    _check_body(interactive)
    _check_header_footer(interactive, text_header_only=True)
    action = _require_object(interactive, "action", "interactive.action")
    _check_length(action.get("button"), "Button label", LIST_BUTTON_MAX)
    sections = action.get("sections")
    if not isinstance(sections, list) or not 1 <= len(sections) <= SECTIONS_MAX:
        raise _not_valid(
            f"Invalid sections count. Min allowed sections: 1, Max allowed sections: {SECTIONS_MAX}"
        )
    if any(not isinstance(section, dict) for section in sections):
        raise _invalid("Param interactive.action.sections[] must be an object.")
    # The 10-row limit is across all sections, not per section.
    rows_total = sum(
        len(section["rows"]) for section in sections if isinstance(section.get("rows"), list)
    )
    if rows_total > ROWS_MAX:
        raise _not_valid(f"Total row count exceed max allowed count: {ROWS_MAX}")
    row_ids: set[str] = set()
    for section in sections:
        title = section.get("title")
        if title is None:
            if len(sections) > 1:
                raise _not_valid("Section title is required when there is more than 1 section")
        else:
            _check_length(title, "Section title", SECTION_TITLE_MAX)
        rows = section.get("rows")
        if not isinstance(rows, list) or not rows:
            raise _not_valid("Invalid rows count. Min allowed rows per section: 1")
        for row in rows:
            if not isinstance(row, dict):
                raise _invalid("Param interactive.action.sections[].rows[] must be an object.")
            row_id = _check_length(row.get("id"), "Row id", ROW_ID_MAX)
            _check_length(row.get("title"), "Row title", ROW_TITLE_MAX)
            description = row.get("description")
            if description is not None and (
                not isinstance(description, str) or len(description) > ROW_DESCRIPTION_MAX
            ):
                raise _not_valid(
                    "Row description length invalid. Min length: 0,"
                    f" Max length: {ROW_DESCRIPTION_MAX}"
                )
            if row_id in row_ids:
                raise _not_valid(f"Row id must be unique. Duplicate id: {row_id!r}")
            row_ids.add(row_id)


def _check_contact_request(interactive: Mapping[str, Any]) -> None:
    _check_body(interactive)
    _check_header_footer(interactive, text_header_only=True)
    action = _require_object(interactive, "action", "interactive.action")
    if action.get("name") != "request_contact_info":
        raise _invalid('Param interactive.action.name must be "request_contact_info".')


def _check_location_request(interactive: Mapping[str, Any]) -> None:
    _check_body(interactive)
    action = _require_object(interactive, "action", "interactive.action")
    if action.get("name") != "send_location":
        raise _invalid('Param interactive.action.name must be "send_location".')


def _check_interactive(interactive: Mapping[str, Any]) -> None:
    kind = interactive.get("type")
    if kind == "button":
        _check_reply_buttons(interactive)
    elif kind == "list":
        _check_list(interactive)
    elif kind == "request_contact_info":
        _check_contact_request(interactive)
    elif kind == "location_request_message":
        _check_location_request(interactive)
    elif kind in _OTHER_INTERACTIVE:
        # Not modelled in depth; the body limit still applies when there is a body.
        body = interactive.get("body")
        if isinstance(body, dict) and isinstance(body.get("text"), str):
            _check_free_text(body["text"], "interactive.body.text", INTERACTIVE_BODY_MAX)
    else:
        raise _invalid(f"Invalid interactive type: {kind!r}")


def _check_text(text: Mapping[str, Any]) -> None:
    body = _require_text(text.get("body"), "text.body")
    _check_free_text(body, "text.body", TEXT_BODY_MAX)


class FakeGraph:
    """A WhatsApp Cloud API server on loopback that records sends and plays the user.

    Use ``await fake.start()`` / ``await fake.stop()`` (or ``async with FakeGraph() as fake``)
    and point the client at ``f"{fake.base_url}/v26.0"`` (any ``vNN.N`` version is served).
    """

    def __init__(
        self,
        app_secret: str = DEFAULT_APP_SECRET,
        verify_token: str = DEFAULT_VERIFY_TOKEN,
        phone_number_id: str = DEFAULT_PHONE_NUMBER_ID,
        display_phone_number: str = DEFAULT_DISPLAY_PHONE_NUMBER,
        access_token: str = DEFAULT_ACCESS_TOKEN,
        *,
        waba_id: str = DEFAULT_WABA_ID,
        approved_templates: set[str] | frozenset[str] | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.app_secret = app_secret
        self.verify_token = verify_token
        self.phone_number_id = phone_number_id
        self.display_phone_number = display_phone_number
        self.access_token = access_token
        self.waba_id = waba_id
        # None: any template name is "approved"; a set makes unknown names fail with 132001.
        self.approved_templates = approved_templates
        # None: every language is translated; a set makes other language codes fail (132001).
        self.approved_languages: set[str] | None = None
        # Injectable so a test can move time instead of sleeping (window expiry, timestamps).
        self.clock = clock

        self.sent: list[Sent] = []
        # Every message the simulated users sent (the ``messages[]`` items), oldest first.
        self.inbound: list[dict[str, Any]] = []
        self.uploads: list[MediaUpload] = []  # every request to /media, refused ones too
        self.media: dict[str, MediaUpload] = {}  # media id -> the accepted upload

        self._last_inbound: dict[str, float] = {}
        # Both identifiers of every user seen, so a send by phone and one by BSUID reach the
        # same person (and the same window).
        self._aliases: dict[str, frozenset[str]] = {}
        self._faults: deque[_Fault] = deque()
        self._upload_faults: deque[_Fault] = deque()
        self._down = False
        self._counter = itertools.count(1)
        # Every change (a recorded send, a built webhook) sets the current event and replaces
        # it, so waiters wake exactly when something happened instead of sleeping in a loop.
        self._changed = asyncio.Event()
        self._runner: web.AppRunner | None = None
        self._base_url: str | None = None

    # ----------------------------------------------------------------------------- lifecycle

    async def start(self, host: str = "127.0.0.1", port: int = 0) -> None:
        """Listen on ``host:port`` (port 0 picks a free one); see ``base_url``."""
        if self._runner is not None:
            raise RuntimeError("FakeGraph is already running")
        # Room for a 100 MB document and its multipart framing; the limits themselves are
        # checked per file, to answer as Meta does.
        app = web.Application(client_max_size=_DOCUMENT_LIMIT + 1024 * 1024)
        app.router.add_post(r"/{version:v\d+\.\d+}/{phone_number_id}/messages", self._handle)
        app.router.add_post(r"/{version:v\d+\.\d+}/{phone_number_id}/media", self._upload)
        # Anything else gets a Graph error rather than aiohttp's HTML 404, so a client that
        # builds a wrong URL (no version, GET instead of POST) fails with a readable message.
        app.router.add_route("*", "/{tail:.*}", self._unknown_path)
        # A short shutdown_timeout: clients' keep-alive connections must not stall stop().
        runner = web.AppRunner(app, access_log=None, shutdown_timeout=1.0)
        await runner.setup()
        site = web.TCPSite(runner, host, port)
        await site.start()
        self._runner = runner
        bound_host, bound_port = runner.addresses[0][:2]
        self._base_url = f"http://{bound_host}:{bound_port}"

    async def stop(self) -> None:
        """Stop serving."""
        if self._runner is None:
            return
        runner, self._runner = self._runner, None
        await runner.cleanup()

    async def __aenter__(self) -> FakeGraph:
        await self.start()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.stop()

    @property
    def base_url(self) -> str:
        """``http://host:port`` of the running server; the Graph base URL adds ``/v26.0``."""
        if self._base_url is None:
            raise RuntimeError("FakeGraph is not running; await start() first")
        return self._base_url

    @property
    def graph_url(self) -> str:
        """The Graph base URL a client should use: ``base_url`` plus ``/v26.0``."""
        return f"{self.base_url}/v26.0"

    # ------------------------------------------------------------------------ fault injection

    def fail_next(
        self,
        status: int,
        code: int,
        details: str | None = None,
        times: int = 1,
        *,
        title: str | None = None,
        to: WaUser | str | None = None,
    ) -> None:
        """Make the next ``times`` message sends answer HTTP ``status`` with Graph error ``code``.

        ``details`` defaults to Meta's wording for well-known codes (130429, 131056, 131000,
        ...). Faults are used in order, by message sends only: read receipts do not consume
        them, so a bot that marks messages read before replying still gets the fault on its
        reply. Authentication (401) and the phone number id are checked first, as on Meta.
        With ``to``, only sends to that user take the fault (others pass by it): a bot that
        sends to several chats at once cannot make the test depend on which goes first.
        """
        if times < 1:
            raise ValueError("times must be at least 1")
        if details is None:
            details = _DEFAULT_DETAILS.get(code, _TITLES.get(code, f"Error {code}"))
        ids = None
        if isinstance(to, WaUser):
            ids = frozenset(i for i in (to.wa_id, to.user_id) if i)
        elif to is not None:
            ids = frozenset({to})
        fault = _Fault(status, code, details, title or _TITLES.get(code, "Error"), ids)
        self._faults.extend([fault] * times)

    def fail_next_upload(self, status: int, code: int, details: str | None = None) -> None:
        """Make the next upload to ``/media`` answer HTTP ``status`` with Graph error ``code``
        (message sends keep their own faults: ``fail_next``)."""
        details = details or _DEFAULT_DETAILS.get(code, _TITLES.get(code, f"Error {code}"))
        self._upload_faults.append(_Fault(status, code, details, _TITLES.get(code, "Error")))

    def set_down(self, down: bool) -> None:
        """While down, every request to ``/messages`` and ``/media`` answers HTTP 500 (131000)."""
        self._down = down

    # ------------------------------------------------------------------------ 24-hour window

    def open_window(self, user: WaUser | str) -> None:
        """Open the user's window now, as if they had just written (without a webhook)."""
        self._touch(user, self.clock())

    def expire_window(self, user: WaUser | str) -> None:
        """Close the user's window: their last message is now 25 hours old."""
        self._touch(user, self.clock() - 25 * 60 * 60)

    def window_open(self, user: WaUser | str) -> bool:
        """Whether a free-form message to this user would be accepted now."""
        times = [self._last_inbound[k] for k in self._keys(user) if k in self._last_inbound]
        return bool(times) and self.clock() - max(times) < WINDOW_SECONDS

    # ----------------------------------------------------------------------------- recording

    def sent_to(self, user: WaUser | str) -> list[Sent]:
        """Every recorded request addressed to this user (by phone or BSUID), failed included."""
        keys = self._keys(user)
        return [s for s in self.sent if s.to and _identifier_key(s.to) in keys]

    def texts_to(self, user: WaUser | str) -> list[str]:
        """Text bodies and interactive body texts of accepted messages to the user, in order."""
        texts: list[str] = []
        for sent in self.sent_to(user):
            if not sent.accepted:
                continue
            if sent.type == "text":
                texts.append(sent.body["text"]["body"])
            elif sent.type == "interactive":
                body = sent.body["interactive"].get("body")
                if isinstance(body, dict) and isinstance(body.get("text"), str):
                    texts.append(body["text"])
            elif sent.type in _CAPTIONED and sent.body[sent.type].get("caption"):
                texts.append(sent.body[sent.type]["caption"])
        return texts

    def documents_to(self, user: WaUser | str) -> list[ReceivedDocument]:
        """The documents accepted for the user, oldest first, with the uploaded bytes (a
        document sent by ``link`` is not fetched: it has none)."""
        found: list[ReceivedDocument] = []
        for sent in self.sent_to(user):
            if not sent.accepted or sent.type != "document":
                continue
            document = sent.body["document"]
            upload = self.media.get(document.get("id", ""))
            found.append(
                ReceivedDocument(
                    filename=document.get("filename") or (upload and upload.filename) or "",
                    mime_type=(upload and upload.mime_type) or "",
                    content=upload.content if upload else b"",
                    caption=document.get("caption"),
                    message_id=sent.message_id,
                )
            )
        return found

    def last_interactive(self, user: WaUser | str) -> dict[str, Any] | None:
        """The ``interactive`` object of the latest accepted interactive message to the user."""
        for sent in reversed(self.sent_to(user)):
            if sent.accepted and sent.type == "interactive":
                interactive: dict[str, Any] = sent.body["interactive"]
                return interactive
        return None

    def templates_to(self, user: WaUser | str) -> list[dict[str, Any]]:
        """The ``template`` objects (name, language, components) accepted for the user."""
        return [
            sent.body["template"]
            for sent in self.sent_to(user)
            if sent.accepted and sent.type == "template"
        ]

    async def wait_for(
        self,
        predicate: Callable[[FakeGraph], bool],
        timeout: float = 5.0,  # noqa: ASYNC109 - a default keeps a broken test from hanging
    ) -> None:
        """Wait until ``predicate(self)`` holds, re-checking on every recorded send.

        Raises TimeoutError listing the recorded sends if it does not hold within ``timeout``.
        """
        try:
            async with asyncio.timeout(timeout):
                while True:
                    # Take the event before checking: anything that happens after the check
                    # sets this very event, so no change can be missed.
                    changed = self._changed
                    if predicate(self):
                        return
                    await changed.wait()
        except TimeoutError:
            raise TimeoutError(
                f"condition not met within {timeout} s; recorded sends:\n{self.describe_sent()}"
            ) from None

    def describe_sent(self, limit: int = 60) -> str:
        """A readable list of the recorded sends, newest last."""
        lines: list[str] = []
        for sent in self.sent:
            summary = json.dumps(sent.body.get(sent.type, sent.body), ensure_ascii=False)
            if len(summary) > 200:
                summary = summary[:197] + "..."
            if sent.accepted:
                outcome = f"ok {sent.message_id}"
            else:
                outcome = f"FAILED {sent.status} #{sent.error_code}: {sent.details}"
            lines.append(f"  {sent.type or '?'} -> {sent.to or '-'} {summary} [{outcome}]")
        if not lines:
            return "  (none)"
        if len(lines) > limit:
            lines = [f"  ... {len(lines) - limit} earlier sends omitted", *lines[-limit:]]
        return "\n".join(lines)

    # ---------------------------------------------------------------------- playing the user

    def text(self, user: WaUser, body: str) -> dict[str, Any]:
        """The user types ``body``."""
        return self._user_message(user, "text", {"body": body})

    def location(
        self, user: WaUser, latitude: float, longitude: float, name: str = "", address: str = ""
    ) -> dict[str, Any]:
        """The user shares a location: a pin, or a named place (name and address)."""
        content: dict[str, Any] = {"latitude": latitude, "longitude": longitude}
        if name:
            content["name"] = name
        if address:
            content["address"] = address
        return self._user_message(user, "location", content)

    def button_reply(
        self,
        user: WaUser,
        id: str,
        title: str | None = None,
        *,
        context_id: str | None = None,
    ) -> dict[str, Any]:
        """The user taps the reply button ``id`` on the latest message to them that has it.

        ``title`` defaults to the button's title; a different one is an error, since WhatsApp
        reports the title the user saw. ``context.id`` is that message's wamid. Raises
        ButtonNotFoundError when no accepted message to the user carries the button. With
        ``context_id`` given, nothing is looked up (a tap on a message the fake never sent, e.g.
        from before a restart) and ``title`` is required.
        """
        if context_id is None:
            context_id, button = self._find_choice(user, "button", id)
            title = self._same(title, button.get("title"), "title", id)
        elif title is None:
            raise ValueError("title is required with an explicit context_id")
        reply = {"type": "button_reply", "button_reply": {"id": id, "title": title}}
        return self._user_message(user, "interactive", reply, context_id)

    def list_reply(
        self,
        user: WaUser,
        id: str,
        title: str | None = None,
        description: str | None = None,
        *,
        context_id: str | None = None,
    ) -> dict[str, Any]:
        """The user picks the list row ``id`` on the latest list message to them that has it.

        ``title`` and ``description`` default to the row's (a row without a description gives
        none); different values are an error. Otherwise as ``button_reply``.
        """
        if context_id is None:
            context_id, row = self._find_choice(user, "list", id)
            title = self._same(title, row.get("title"), "title", id)
            description = self._same(description, row.get("description"), "description", id)
        elif title is None:
            raise ValueError("title is required with an explicit context_id")
        chosen = {"id": id, "title": title}
        if description:
            chosen["description"] = description
        reply = {"type": "list_reply", "list_reply": chosen}
        return self._user_message(user, "interactive", reply, context_id)

    def template_button(
        self,
        user: WaUser,
        payload: str,
        text: str,
        *,
        context_id: str | None = None,
    ) -> dict[str, Any]:
        """The user taps a quick-reply button of a template (webhook type ``button``).

        ``context.id`` is the latest accepted template to the user (the button's payload and
        text live in the approved template, which the fake does not know, so they are taken as
        given). Raises ButtonNotFoundError if no template was sent, unless ``context_id`` is.
        """
        if context_id is None:
            templates = [s for s in self.sent_to(user) if s.accepted and s.type == "template"]
            if not templates:
                raise ButtonNotFoundError(
                    f"no template was sent to {_label(user)}; sends:\n{self.describe_sent()}"
                )
            context_id = templates[-1].message_id
        return self._user_message(user, "button", {"payload": payload, "text": text}, context_id)

    def contact(
        self,
        user: WaUser,
        phone: str,
        origin: Literal["contact_request", "other"] = "contact_request",
        contact_wa_id: str | None = None,
        *,
        name: str | None = None,
    ) -> dict[str, Any]:
        """The user shares a contact card (webhook type ``contacts``).

        ``origin="contact_request"`` is the answer to a ``request_contact_info`` message (the
        user's own number), ``"other"`` a card the user chose to share, which may be anyone's.
        ``contact_wa_id`` None means the card's number is not on WhatsApp (no ``wa_id``), as a
        typed-in or foreign number would be. ``name`` defaults to the user's name.
        """
        card_name = name if name is not None else user.name
        first_name = card_name.split(maxsplit=1)[0] if card_name.strip() else card_name
        phone_entry: dict[str, Any] = {"phone": phone, "type": "CELL"}
        waid_param = ""
        if contact_wa_id is not None:
            phone_entry["wa_id"] = contact_wa_id
            waid_param = f";waid={contact_wa_id}"
        card = {
            "name": {"formatted_name": card_name, "first_name": first_name},
            "phones": [phone_entry],
            # Meta's BSUID changes add the raw vCard next to the parsed fields.
            "vcard": (
                "BEGIN:VCARD\nVERSION:3.0\n"
                f"N:;{first_name};;;\nFN:{card_name}\n"
                f"TEL;type=CELL{waid_param}:{phone}\nEND:VCARD"
            ),
            "origin": origin,
        }
        return self._user_message_raw(user, {"type": "contacts", "contacts": [card]})

    def unsupported(self, user: WaUser, type: str = "sticker") -> dict[str, Any]:
        """The user sends something a shop bot does not handle (a sticker, a voice note, ...).

        ``type="unsupported"`` gives Meta's own "Message type unknown" (131051) message.
        """
        media_id = str(10**15 + next(self._counter))
        sha = base64.b64encode(hashlib.sha256(media_id.encode()).digest()).decode()
        if type == "unsupported":
            message: dict[str, Any] = {
                "type": "unsupported",
                "errors": [
                    {
                        "code": 131051,
                        "title": "Message type unknown",
                        "message": "Message type unknown",
                        "error_data": {"details": "Message type is currently not supported."},
                    }
                ],
            }
            return self._user_message_raw(user, message)
        content: dict[str, Any]
        if type == "sticker":
            content = {"mime_type": "image/webp", "sha256": sha, "id": media_id, "animated": False}
        elif type in {"image", "video", "document"}:
            mime = {"image": "image/jpeg", "video": "video/mp4", "document": "application/pdf"}
            content = {"mime_type": mime[type], "sha256": sha, "id": media_id}
        elif type == "audio":
            content = {"mime_type": "audio/ogg; codecs=opus", "sha256": sha, "id": media_id}
            content["voice"] = True
        elif type == "location":
            content = {"latitude": -1.2921, "longitude": 36.8219}
        elif type == "reaction":
            last = [s for s in self.sent_to(user) if s.accepted]
            target = last[-1].message_id if last else self._wamid()
            content = {"message_id": target, "emoji": "\U0001f44d"}
        else:
            content = {}
        return self._user_message(user, type, content)

    def status(
        self,
        user: WaUser,
        message_id: str,
        status: Literal["sent", "delivered", "read", "failed"] = "delivered",
        errors: list[dict[str, Any]] | None = None,
    ) -> dict[str, Any]:
        """A status update for a message the business sent (a ``statuses`` change).

        ``failed`` without ``errors`` carries 131026 "Message undeliverable". The message id is
        taken as given (a status for an unknown wamid is something a webhook must survive too).
        Statuses do not open the window: only the user's own messages do.
        """
        if status not in _STATUSES:
            raise ValueError(f"status must be one of {sorted(_STATUSES)}")
        item: dict[str, Any] = {
            "id": message_id,
            "status": status,
            "timestamp": str(int(self.clock())),
        }
        if not user.phone_hidden:
            item["recipient_id"] = user.wa_id
        if user.user_id is not None:
            item["recipient_user_id"] = user.user_id
        if status in {"sent", "delivered"}:
            item["conversation"] = {
                "id": secrets.token_hex(16),
                "origin": {"type": "service"},
            }
            item["pricing"] = {
                "billable": False,
                "pricing_model": "PMP",
                "category": "service",
                "type": "free_customer_service",
            }
        if status == "failed":
            item["errors"] = errors or [
                {
                    "code": 131026,
                    "title": "Message undeliverable",
                    "message": "Message undeliverable",
                    "error_data": {"details": _DEFAULT_DETAILS[131026]},
                }
            ]
        elif errors:
            item["errors"] = errors
        value: dict[str, Any] = {}
        # Since the BSUID changes, sent/delivered/read statuses carry the contact; failed ones
        # do not.
        if status != "failed" and user.user_id is not None:
            value["contacts"] = [self._contact_entry(user)]
        value["statuses"] = [item]
        payload = self._envelope(value)
        self._notify()
        return payload

    def several(self, *payloads: Mapping[str, Any], layout: Layout = "messages") -> dict[str, Any]:
        """Merge payloads built by this fake into one webhook delivery.

        ``layout`` picks how Meta batches them: ``"messages"`` puts every message (and status)
        in one ``value``, ``"changes"`` keeps one change per payload under one entry, and
        ``"entries"`` keeps one entry per payload. A webhook handler must loop over all three.
        """
        if not payloads:
            raise ValueError("several() needs at least one payload")
        copies = [copy.deepcopy(dict(p)) for p in payloads]
        for payload in copies:
            if payload.get("object") != "whatsapp_business_account":
                raise ValueError("several() merges WhatsApp webhook payloads only")
        entries = [entry for payload in copies for entry in payload["entry"]]
        if layout == "entries":
            return {"object": "whatsapp_business_account", "entry": entries}
        changes = [change for entry in entries for change in entry["changes"]]
        if layout == "changes":
            return {
                "object": "whatsapp_business_account",
                "entry": [{"id": self.waba_id, "changes": changes}],
            }
        if layout != "messages":
            raise ValueError("layout must be 'messages', 'changes' or 'entries'")
        merged: dict[str, Any] = {
            "messaging_product": "whatsapp",
            "metadata": self._metadata(),
        }
        for key in ("contacts", "messages", "statuses"):
            items: list[Any] = []
            for change in changes:
                for item in change["value"].get(key, []):
                    # One contacts entry per user, as Meta sends it.
                    if key != "contacts" or item not in items:
                        items.append(item)
            if items:
                merged[key] = items
        return self._envelope_value(merged)

    # ----------------------------------------------------------------- delivering to a server

    def webhook_body(self, payload: Mapping[str, Any]) -> bytes:
        """The bytes ``post_webhook`` sends for ``payload``.

        Compact JSON with non-ASCII escaped as ``\\uXXXX`` (lowercase hex), like Meta's bodies.
        Compact on purpose: a receiver that re-serializes the parsed JSON with Python's default
        separators instead of hashing the raw bytes then fails, as it would against Meta.
        """
        return json.dumps(payload, ensure_ascii=True, separators=(",", ":")).encode("ascii")

    def sign(self, body: bytes, secret: str | None = None) -> str:
        """The ``X-Hub-Signature-256`` value for ``body``: ``sha256=<hex hmac>``."""
        key = (secret if secret is not None else self.app_secret).encode()
        return "sha256=" + hmac.new(key, body, hashlib.sha256).hexdigest()

    async def post_webhook(
        self,
        url: str,
        payload: Mapping[str, Any] | bytes,
        *,
        signature: Signature = "valid",
    ) -> int:
        """POST ``payload`` to a webhook as Meta does and return the HTTP status.

        ``signature``: ``"valid"`` signs the exact bytes with the app secret, ``"bad"`` sends a
        well-formed signature made with another secret, ``"missing"`` sends no header. Bytes
        are sent verbatim (to test unusual encodings); a mapping goes through ``webhook_body``.
        """
        body = payload if isinstance(payload, bytes) else self.webhook_body(payload)
        headers = {"Content-Type": "application/json", "User-Agent": "facebookexternalua"}
        if signature == "valid":
            headers["X-Hub-Signature-256"] = self.sign(body)
        elif signature == "bad":
            headers["X-Hub-Signature-256"] = self.sign(body, secret=self.app_secret + "-wrong")
        elif signature != "missing":
            raise ValueError("signature must be 'valid', 'bad' or 'missing'")
        timeout = aiohttp.ClientTimeout(total=10)
        async with (
            aiohttp.ClientSession(timeout=timeout) as session,
            session.post(url, data=body, headers=headers) as response,
        ):
            await response.read()
            return response.status

    async def verify_webhook(
        self,
        url: str,
        mode: str | None = "subscribe",
        token: str | None = None,
        challenge: str = "1158201444",
    ) -> tuple[int, str]:
        """Meta's subscription handshake: GET with ``hub.*`` parameters; (status, body text).

        ``token`` defaults to the configured verify token; ``mode=None`` leaves ``hub.mode``
        out. A correct endpoint answers 200 with exactly ``challenge`` as the body.
        """
        params = {
            "hub.challenge": challenge,
            "hub.verify_token": token if token is not None else self.verify_token,
        }
        if mode is not None:
            params["hub.mode"] = mode
        timeout = aiohttp.ClientTimeout(total=10)
        async with (
            aiohttp.ClientSession(timeout=timeout) as session,
            session.get(url, params=params) as response,
        ):
            return response.status, await response.text()

    # ------------------------------------------------------------------ webhook construction

    def _metadata(self) -> dict[str, str]:
        return {
            "display_phone_number": self.display_phone_number,
            "phone_number_id": self.phone_number_id,
        }

    def _envelope(self, value: dict[str, Any]) -> dict[str, Any]:
        return self._envelope_value(
            {"messaging_product": "whatsapp", "metadata": self._metadata(), **value}
        )

    def _envelope_value(self, value: dict[str, Any]) -> dict[str, Any]:
        return {
            "object": "whatsapp_business_account",
            "entry": [{"id": self.waba_id, "changes": [{"value": value, "field": "messages"}]}],
        }

    def _contact_entry(self, user: WaUser) -> dict[str, Any]:
        profile: dict[str, Any] = {"name": user.name}
        if user.username is not None:
            profile["username"] = user.username
        entry: dict[str, Any] = {"profile": profile}
        if not user.phone_hidden:
            entry["wa_id"] = user.wa_id
        if user.user_id is not None:
            entry["user_id"] = user.user_id
        return entry

    def _user_message(
        self,
        user: WaUser,
        kind: str,
        content: dict[str, Any],
        context_id: str | None = None,
    ) -> dict[str, Any]:
        message: dict[str, Any] = {"type": kind, kind: content}
        if context_id is not None:
            message["context"] = {"from": self.display_phone_number, "id": context_id}
        return self._user_message_raw(user, message)

    def _user_message_raw(self, user: WaUser, fields: dict[str, Any]) -> dict[str, Any]:
        """Wrap a message in the envelope, record it and open the user's window."""
        now = self.clock()
        message: dict[str, Any] = {}
        if "context" in fields:
            message["context"] = fields["context"]
        if not user.phone_hidden:
            message["from"] = user.wa_id
        if user.user_id is not None:
            message["from_user_id"] = user.user_id
        message["id"] = self._wamid()
        message["timestamp"] = str(int(now))
        message.update({k: v for k, v in fields.items() if k != "context"})
        # Building the payload is the user writing to WhatsApp: the window opens on Meta's
        # side whether or not our webhook later accepts the delivery.
        self._touch(user, now)
        self.inbound.append(message)
        payload = self._envelope({"contacts": [self._contact_entry(user)], "messages": [message]})
        self._notify()
        return payload

    def _find_choice(self, user: WaUser, kind: str, choice_id: str) -> tuple[str, dict[str, Any]]:
        """The wamid and the button/row ``choice_id`` of the latest message to the user with it."""
        on_screen: list[str] = []
        for sent in reversed(self.sent_to(user)):
            if not sent.accepted or sent.type != "interactive":
                continue
            interactive = sent.body["interactive"]
            if interactive.get("type") != kind:
                continue
            choices = _choices(interactive)
            on_screen.append(f"{sent.message_id}: {[c.get('id') for c in choices]}")
            for choice in choices:
                if choice.get("id") == choice_id and sent.message_id is not None:
                    return sent.message_id, choice
        what = "reply button" if kind == "button" else "list row"
        raise ButtonNotFoundError(
            f"no {what} with id {choice_id!r} in any accepted message to {_label(user)}; "
            f"{what}s sent to them (newest first): {on_screen or 'none'}"
        )

    @staticmethod
    def _same(given: str | None, actual: Any, field: str, choice_id: str) -> str | None:
        shown = actual if isinstance(actual, str) else None
        if given is not None and given != (shown or ""):
            raise ValueError(
                f"{choice_id!r} was shown with {field} {shown!r}, not {given!r}; WhatsApp"
                " reports what the user saw"
            )
        return shown

    # ------------------------------------------------------------------------------ identity

    def _keys(self, user: WaUser | str) -> frozenset[str]:
        if isinstance(user, WaUser):
            keys = {_identifier_key(user.wa_id)}
            if user.user_id is not None:
                keys.add(user.user_id)
            return frozenset(keys)
        key = _identifier_key(user)
        return self._aliases.get(key, frozenset({key}))

    def _touch(self, user: WaUser | str, when: float) -> None:
        keys = self._keys(user)
        if isinstance(user, WaUser):
            for key in keys:
                self._aliases[key] = keys
        for key in keys:
            self._last_inbound[key] = when

    def _wamid(self) -> str:
        # Shaped like Meta's (base64 after "wamid."), unique by the counter, so code that
        # stores or dedupes on wamids sees realistic values.
        raw = b"\x15\x02\x00\x12\x18\x14" + f"{next(self._counter):012d}".encode()
        return "wamid." + base64.b64encode(raw + secrets.token_bytes(12)).decode()

    def _notify(self) -> None:
        self._changed.set()
        self._changed = asyncio.Event()

    # ----------------------------------------------------------------------------- the server

    async def _unknown_path(self, request: web.Request) -> web.Response:
        error = _GraphError(
            100,
            f"Unsupported {request.method.lower()} request: {request.path}"
            " (the fake serves POST /vNN.N/<phone_number_id>/messages and .../media)",
        )
        return self._error_response(error)

    async def _handle(self, request: web.Request) -> web.Response:
        raw = await request.read()
        body: dict[str, Any] = {}
        parsed: Any = None
        try:
            parsed = json.loads(raw) if raw else None
        except ValueError:
            parsed = None
        if isinstance(parsed, dict):
            body = parsed
        to = _recipient_value(body)
        kind = body.get("type", "text") if "status" not in body else "read"
        kind = kind if isinstance(kind, str) else ""

        refusal = self._refusal(request, parsed, kind)
        if refusal is not None:
            return self._fail(Sent(to, kind, body, False), refusal)
        try:
            response, message_id = self._accept(body, to, kind)
        except _GraphError as error:
            return self._fail(Sent(to, kind, body, False), error)
        except Exception as exc:
            # A bug in the fake (or a request it cannot handle): answer 500 and record it, so
            # the test's failure output shows the cause instead of a bare server error.
            bug = _GraphError(131000, f"fake error: {exc!r}", status=500)
            return self._fail(Sent(to, kind, body, False), bug)
        self._record(Sent(to, kind, body, True, message_id=message_id))
        return web.json_response(response)

    async def _upload(self, request: web.Request) -> web.Response:
        """``POST /{phone_number_id}/media``: a multipart upload, checked as Meta checks it."""
        upload = MediaUpload(None, None, b"")
        try:
            gate = self._gate(request)
            if gate is not None:
                raise gate
            if self._upload_faults:
                fault = self._upload_faults.popleft()
                raise _GraphError(fault.code, fault.details, fault.status, fault.title)
            form = await request.post()
            self._check_upload(form, upload)
        except web.HTTPRequestEntityTooLarge:
            error = _GraphError(131053, f"The file is over the {_DOCUMENT_LIMIT // MB} MB limit.")
            return self._upload_failed(upload, error)
        except _GraphError as error:
            return self._upload_failed(upload, error)
        upload.accepted, upload.media_id = True, str(10**15 + next(self._counter))
        upload.uploaded_at = self.clock()
        self.media[upload.media_id] = upload
        self.uploads.append(upload)
        self._notify()
        return web.json_response({"id": upload.media_id})

    @staticmethod
    def _check_upload(form: Mapping[str, Any], upload: MediaUpload) -> None:
        """Fill ``upload`` from the form; raises the error Meta would answer."""
        product = form.get("messaging_product")
        if product is None:
            raise _invalid("The parameter messaging_product is required.")
        if product != "whatsapp":
            raise _invalid('Param messaging_product must be "whatsapp".')
        file = form.get("file")
        if not isinstance(file, web.FileField):
            raise _invalid("The parameter file is required.")
        if not form.get("type"):
            raise _invalid("The parameter type is required.")
        upload.filename, upload.mime_type = file.filename, file.content_type
        upload.content = file.file.read()
        # Meta goes by the file part's type, whatever ``type`` says (a part sent as
        # application/octet-stream is refused even with type=image/png).
        limit = MEDIA_LIMITS.get(file.content_type)
        if limit is None:
            raise _invalid(
                "Param file must be a file with one of the following types: "
                f"{', '.join(MEDIA_LIMITS)}. Received file of type '{file.content_type}'."
            )
        if len(upload.content) > limit:
            raise _GraphError(
                131053,
                f"File size {len(upload.content)} bytes is over the {limit // MB or limit} "
                f"{'MB' if limit >= MB else 'bytes'} limit for {file.content_type}.",
            )

    def _upload_failed(self, upload: MediaUpload, error: _GraphError) -> web.Response:
        upload.error_code, upload.details = error.code, error.details
        self.uploads.append(upload)
        self._notify()
        return self._error_response(error)

    def _gate(self, request: web.Request) -> _GraphError | None:
        """The error for any request refused before it is read: an outage, a wrong token, a
        phone number id that is not ours."""
        if self._down:
            # An outage fails everything, whoever asks.
            return _GraphError(131000, _DEFAULT_DETAILS[131000], status=500)
        if not self._authorized(request):
            # Meta's OAuth error has no error_data; a client must map it to "fix the token",
            # never to "retry".
            return _GraphError(190, "Invalid OAuth access token.", status=401)
        asked = request.match_info["phone_number_id"]
        if asked != self.phone_number_id:
            return _invalid(
                f"Unsupported post request. Object with ID '{asked}' does not exist, cannot be"
                " loaded due to missing permissions, or does not support this operation."
            )
        return None

    def _refusal(self, request: web.Request, parsed: Any, kind: str) -> _GraphError | None:
        """The error for a request refused before its content is looked at, if any."""
        gate = self._gate(request)
        if gate is not None:
            return gate
        if kind != "read":
            recipient = _recipient_value(parsed) if isinstance(parsed, dict) else ""
            for fault in self._faults:
                if fault.to is None or recipient in fault.to:
                    self._faults.remove(fault)
                    return _GraphError(fault.code, fault.details, fault.status, fault.title)
        if not isinstance(parsed, dict):
            return _invalid("The request body must be a JSON object.")
        return None

    def _authorized(self, request: web.Request) -> bool:
        header = request.headers.get("Authorization", "")
        scheme, _, token = header.partition(" ")
        return scheme.lower() == "bearer" and hmac.compare_digest(
            token.strip().encode(), self.access_token.encode()
        )

    def _accept(
        self, body: dict[str, Any], to: str, kind: str
    ) -> tuple[dict[str, Any], str | None]:
        """Validate a send as Meta would; the success response and the wamid given."""
        product = body.get("messaging_product")
        if product is None:
            raise _invalid("The parameter messaging_product is required.")
        if product != "whatsapp":
            raise _invalid('Param messaging_product must be "whatsapp".')
        if kind == "read":
            # Read receipts (and typing indicators) share the endpoint; they send nothing.
            if body.get("status") != "read":
                raise _invalid('Param status must be "read".')
            _require_text(body.get("message_id"), "message_id")
            return {"success": True}, None
        if not to:
            raise _invalid("The parameter to is required.")
        if kind not in _MESSAGE_TYPES:
            raise _invalid(f"Param type must be one of {sorted(_MESSAGE_TYPES)}, not {kind!r}.")
        content = _require_object(body, kind, kind)
        if kind == "text":
            _check_text(content)
        elif kind == "interactive":
            _check_interactive(content)
        elif kind == "template":
            self._check_template(content)
        elif kind in _MEDIA_KINDS:
            self._check_media(kind, content)
        # Only templates may open a conversation; everything else needs the user's window.
        if kind != "template" and not self.window_open(to):
            raise _GraphError(131047, RE_ENGAGEMENT_DETAILS)
        message_id = self._wamid()
        # "to" takes precedence over "recipient" when a client sends both (Meta's BSUID docs).
        contact: dict[str, str] = {"input": to}
        if isinstance(body.get("to"), str) and body["to"]:
            contact["wa_id"] = _identifier_key(to)
        else:
            contact["user_id"] = to
        message: dict[str, str] = {"id": message_id}
        if kind == "template":
            message["message_status"] = "accepted"
        response = {"messaging_product": "whatsapp", "contacts": [contact], "messages": [message]}
        return response, message_id

    def _check_media(self, kind: str, media: Mapping[str, Any]) -> None:
        """An uploaded id (still kept) or a link, exactly one; a caption where one fits."""
        media_id, link = media.get("id"), media.get("link")
        if (media_id is None) == (link is None):
            raise _invalid(f"Param {kind} must have either id or link, and not both.")
        if media_id is not None:
            upload = self.media.get(media_id) if isinstance(media_id, str) else None
            if upload is None or self.clock() - upload.uploaded_at > MEDIA_KEPT_SECONDS:
                raise _invalid(
                    f"Param {kind}['id'] is not a valid whatsapp business account media"
                    " attachment ID"
                )
        elif not isinstance(link, str) or not link.startswith(("https://", "http://")):
            raise _invalid(f"Param {kind}.link must be a valid URL.")
        caption = media.get("caption")
        if caption is not None:
            if kind not in _CAPTIONED or not isinstance(caption, str):
                raise _invalid(f"Param {kind}.caption is not valid for this media.")
            _check_free_text(caption, f"{kind}.caption", MEDIA_CAPTION_MAX)
        filename = media.get("filename")
        if filename is not None and (kind != "document" or not isinstance(filename, str)):
            raise _invalid(f"Param {kind}.filename is not valid for this media.")

    def _check_template(self, template: Mapping[str, Any]) -> None:
        name = _require_text(template.get("name"), "template.name")
        language = _require_object(template, "language", "template.language")
        code = _require_text(language.get("code"), "template.language.code")
        if self.approved_templates is not None and name not in self.approved_templates:
            raise _GraphError(132001, f"template name ({name}) does not exist in {code}")
        if self.approved_languages is not None and code not in self.approved_languages:
            raise _GraphError(132001, f"template name ({name}) does not exist in {code}")

    def _record(self, sent: Sent) -> None:
        self.sent.append(sent)
        self._notify()

    def _fail(self, sent: Sent, error: _GraphError) -> web.Response:
        sent.error_code = error.code
        sent.status = error.status
        sent.details = error.details
        self._record(sent)
        return self._error_response(error)

    @staticmethod
    def _error_response(error: _GraphError) -> web.Response:
        if error.code == 190:
            payload: dict[str, Any] = {
                "message": "Invalid OAuth access token.",
                "type": "OAuthException",
                "code": 190,
                "fbtrace_id": _fbtrace_id(),
            }
        else:
            payload = {
                "message": f"(#{error.code}) {error.title}",
                "type": "OAuthException",
                "code": error.code,
                "error_data": {"messaging_product": "whatsapp", "details": error.details},
                "fbtrace_id": _fbtrace_id(),
            }
        return web.json_response({"error": payload}, status=error.status)


def _label(user: WaUser) -> str:
    return user.wa_id if user.user_id is None else f"{user.wa_id} / {user.user_id}"


def _recipient_value(body: Mapping[str, Any]) -> str:
    # "to" wins when both are present, as on Meta.
    for name in ("to", "recipient"):
        value = body.get(name)
        if isinstance(value, str) and value:
            return value
    return ""


def _choices(interactive: Mapping[str, Any]) -> list[dict[str, Any]]:
    """The reply buttons' ``reply`` objects, or the list rows, of an interactive message."""
    action = interactive.get("action") or {}
    if interactive.get("type") == "button":
        return [b["reply"] for b in action.get("buttons", []) if isinstance(b, dict)]
    return [
        row
        for section in action.get("sections", [])
        if isinstance(section, dict)
        for row in section.get("rows", [])
        if isinstance(row, dict)
    ]
