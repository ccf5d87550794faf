"""A thin WhatsApp Cloud API client on httpx: the few message shapes a shop sends.

No SDK (see shared/docs/channels.md §3): five send shapes and one error format are
less code than adapting a fast-moving library, and every limit Meta enforces is
checked here first, so a bad message fails in our logs with a clear reason instead
of as a rejection at Meta.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import httpx

MAX_TEXT = 4096
MAX_BODY = 1024
MAX_BUTTONS = 3
MAX_BUTTON_TITLE = 20
MAX_LIST_ROWS = 10
MAX_ROW_TITLE = 24
MAX_ROW_DESCRIPTION = 72
MAX_ROW_ID = 200
MAX_BUTTON_ID = 256
MAX_CAPTION = 1024  # a media message's caption
MAX_DOCUMENT_BYTES = 100_000_000  # Meta's 100 MB for documents, read as decimal megabytes
# The document types Meta takes (its media docs; anything else is refused with #100).
DOCUMENT_TYPES = frozenset(
    {
        "text/plain",
        "application/pdf",
        "application/msword",
        "application/vnd.ms-excel",
        "application/vnd.ms-powerpoint",
        "application/vnd.openxmlformats-officedocument.wordprocessingml.document",
        "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet",
        "application/vnd.openxmlformats-officedocument.presentationml.presentation",
    }
)
# Meta refuses text/csv ("Param file must be a file with one of the following types"): a CSV
# is plain text to it, and its .csv name still tells the phone which app opens it.
UPLOAD_AS = {"text/csv": "text/plain"}

OUTSIDE_WINDOW = 131047  # more than 24 h since the customer last wrote
RATE_LIMITED = frozenset({130429, 131056})  # throughput; pair rate (one user, too fast)


class WhatsAppLimitError(ValueError):
    """The message breaks one of Meta's limits; it was not sent."""


class GraphError(Exception):
    """Meta refused a send; build on ``code`` and ``details``, not on the message text."""

    def __init__(self, status: int, code: int | None, message: str, details: str) -> None:
        super().__init__(f"Graph error {code} (HTTP {status}): {message} {details}".strip())
        self.status = status
        self.code = code
        self.details = details


@dataclass(frozen=True, slots=True)
class ListRow:
    id: str
    title: str
    description: str = ""


def text_message(body: str) -> dict[str, Any]:
    _limit("text", body, MAX_TEXT)
    return {"type": "text", "text": {"body": body, "preview_url": False}}


def buttons_message(body: str, buttons: list[tuple[str, str]]) -> dict[str, Any]:
    """Up to three reply buttons: (id, title)."""
    _limit("body", body, MAX_BODY)
    if not 1 <= len(buttons) <= MAX_BUTTONS:
        raise WhatsAppLimitError(f"{len(buttons)} reply buttons; WhatsApp allows 1 to 3")
    titles = [title for _, title in buttons]
    if len(set(titles)) != len(titles):
        raise WhatsAppLimitError(f"reply button titles must differ: {titles}")
    for button_id, title in buttons:
        _limit("button title", title, MAX_BUTTON_TITLE)
        _limit("button id", button_id, MAX_BUTTON_ID)
    return {
        "type": "interactive",
        "interactive": {
            "type": "button",
            "body": {"text": body},
            "action": {
                "buttons": [
                    {"type": "reply", "reply": {"id": button_id, "title": title}}
                    for button_id, title in buttons
                ]
            },
        },
    }


def list_message(body: str, button_label: str, rows: list[ListRow]) -> dict[str, Any]:
    """One section of up to ten rows behind a button."""
    _limit("body", body, MAX_BODY)
    _limit("list button label", button_label, MAX_BUTTON_TITLE)
    if not 1 <= len(rows) <= MAX_LIST_ROWS:
        raise WhatsAppLimitError(f"{len(rows)} list rows; WhatsApp allows 1 to 10")
    if len({row.id for row in rows}) != len(rows):
        raise WhatsAppLimitError("list row ids must differ")
    for row in rows:
        _limit("row title", row.title, MAX_ROW_TITLE)
        _limit("row description", row.description, MAX_ROW_DESCRIPTION)
        _limit("row id", row.id, MAX_ROW_ID)
    return {
        "type": "interactive",
        "interactive": {
            "type": "list",
            "body": {"text": body},
            "action": {
                "button": button_label,
                "sections": [
                    {
                        "rows": [
                            {"id": r.id, "title": r.title, "description": r.description}
                            if r.description
                            else {"id": r.id, "title": r.title}
                            for r in rows
                        ]
                    }
                ],
            },
        },
    }


def contact_request_message(body: str) -> dict[str, Any]:
    """Asks for the customer's own number with one tap (only inside the 24-hour window)."""
    _limit("body", body, MAX_BODY)
    return {
        "type": "interactive",
        "interactive": {
            "type": "request_contact_info",
            "body": {"text": body},
            "action": {"name": "request_contact_info"},
        },
    }


def location_request_message(body: str) -> dict[str, Any]:
    """Asks for the customer's location with one tap (only inside the 24-hour window)."""
    _limit("body", body, MAX_BODY)
    return {
        "type": "interactive",
        "interactive": {
            "type": "location_request_message",
            "body": {"text": body},
            "action": {"name": "send_location"},
        },
    }


def template_message(name: str, language: str, parameters: list[str]) -> dict[str, Any]:
    return {
        "type": "template",
        "template": {
            "name": name,
            "language": {"code": language},
            "components": [
                {"type": "body", "parameters": [{"type": "text", "text": p} for p in parameters]}
            ],
        },
    }


def document_message(media_id: str, filename: str, caption: str = "") -> dict[str, Any]:
    """A file uploaded with ``WhatsAppClient.upload``, shown under ``filename``."""
    _limit("caption", caption, MAX_CAPTION)
    document = {"id": media_id, "filename": filename}
    if caption:
        document["caption"] = caption
    return {"type": "document", "document": document}


def _limit(what: str, value: str, maximum: int) -> None:
    if len(value) > maximum:
        raise WhatsAppLimitError(f"{what} is {len(value)} characters; WhatsApp allows {maximum}")


class WhatsAppClient:
    def __init__(
        self, base_url: str, phone_number_id: str, access_token: str, http: httpx.AsyncClient
    ) -> None:
        self._url = f"{base_url}/{phone_number_id}/messages"
        self._media_url = f"{base_url}/{phone_number_id}/media"
        self._headers = {"Authorization": f"Bearer {access_token}"}
        self._http = http

    async def send(self, recipient: str, message: dict[str, Any]) -> str:
        """Send to a phone number (wa_id) or a business-scoped user id; the new wamid."""
        # Since 2026 a customer may be known only by a business-scoped id ("KE.123..").
        address = {"recipient": recipient} if "." in recipient else {"to": recipient}
        body = {
            "messaging_product": "whatsapp",
            "recipient_type": "individual",
            **address,
            **message,
        }
        response = await self._http.post(self._url, json=body, headers=self._headers, timeout=20.0)
        data = _json(response)
        if response.status_code == 200:
            messages = data.get("messages") or [{}]
            return str(messages[0].get("id", ""))
        raise _graph_error(response, data)

    async def upload(self, content: bytes, filename: str, mime_type: str) -> str:
        """Upload a document for a ``document_message``; the media id Meta gives it."""
        mime_type = UPLOAD_AS.get(mime_type, mime_type)
        if mime_type not in DOCUMENT_TYPES:
            raise WhatsAppLimitError(f"WhatsApp takes no {mime_type} documents")
        if not content:
            raise WhatsAppLimitError("the file is empty")
        if len(content) > MAX_DOCUMENT_BYTES:
            raise WhatsAppLimitError(
                f"the file is {len(content) / 1e6:.0f} MB; WhatsApp takes at most "
                f"{MAX_DOCUMENT_BYTES // 1_000_000} MB"
            )
        response = await self._http.post(
            self._media_url,
            data={"messaging_product": "whatsapp", "type": mime_type},
            files={"file": (filename, content, mime_type)},
            headers=self._headers,
            timeout=120.0,  # up to 100 MB on a shop's connection
        )
        data = _json(response)
        if response.status_code == 200 and isinstance(data.get("id"), str):
            return str(data["id"])
        raise _graph_error(response, data)


def _graph_error(response: httpx.Response, data: dict[str, Any]) -> GraphError:
    error = data.get("error") if isinstance(data.get("error"), dict) else {}
    assert isinstance(error, dict)
    details = (
        error.get("error_data", {}).get("details", "")
        if isinstance(error.get("error_data"), dict)
        else ""
    )
    return GraphError(
        status=response.status_code,
        code=error.get("code") if isinstance(error.get("code"), int) else None,
        message=str(error.get("message", response.reason_phrase)),
        details=str(details),
    )


def _json(response: httpx.Response) -> dict[str, Any]:
    try:
        data = response.json()
    except ValueError:
        return {}
    return data if isinstance(data, dict) else {}
