"""Logging without secrets: the callback path's secret segment and Telegram bot tokens
(which PTB's HTTP client puts in every request URL) are replaced by ``***``."""

from __future__ import annotations

import logging
import re
from typing import ClassVar

from aiohttp import web
from aiohttp.abc import AbstractAccessLogger
from pythonjsonlogger.json import JsonFormatter

from payments.webhook import CallbackPath


class RedactingAccessLogger(AbstractAccessLogger):
    callback_paths: ClassVar[tuple[CallbackPath, ...]] = ()

    @classmethod
    def for_path(cls, *callback_paths: CallbackPath) -> type[RedactingAccessLogger]:
        return type("RedactingAccessLogger", (cls,), {"callback_paths": callback_paths})

    @property
    def enabled(self) -> bool:
        """aiohttp skips the call entirely when access logging is off."""
        return self.logger.isEnabledFor(logging.INFO)

    def log(self, request: web.BaseRequest, response: web.StreamResponse, time: float) -> None:
        path = request.path
        for secret_path in self.callback_paths:
            path = secret_path.redact(path)
        self.logger.info(
            '%s "%s %s" %d %.1fms',
            request.remote,
            request.method,
            path,
            response.status,
            time * 1000,
        )


BOT_TOKEN = re.compile(r"bot\d+:[A-Za-z0-9_-]+")
# A phone number, and a CheckoutRequestID's tail (Daraja's end in the phone's last digits).
PHONE = re.compile(r"(?<![0-9])((?:\+?254|0)?[17][0-9]{2})[0-9]{3}([0-9]{3})(?![0-9])")
CHECKOUT_ID_TAIL = re.compile(r"(ws_CO_[0-9]{8,}?)[0-9]{6}([0-9]{3})\b")


class RedactTokens(logging.Filter):
    """Attach to handlers: bot tokens in any message become ``bot***``, and phone numbers
    (also inside CheckoutRequestIDs) keep only their first and last digits."""

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        redacted = BOT_TOKEN.sub("bot***", message)
        redacted = CHECKOUT_ID_TAIL.sub(r"\1******\2", redacted)
        redacted = PHONE.sub(r"\1***\2", redacted)
        if redacted != message:
            record.msg, record.args = redacted, None
        return True


LOG_FORMATS = ("text", "json")


TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"
JSON_FIELDS = "%(asctime)s %(levelname)s %(name)s %(message)s"


def configure_logging(level: str, log_format: str = "text") -> None:
    """Root logging for ``duka``: one line per record, no secrets, no per-request noise.
    ``json`` (``DUKA_LOG_FORMAT=json``): one JSON object per line, for a log collector."""
    logging.basicConfig(level=level, format=TEXT_FORMAT)
    for handler in logging.getLogger().handlers:
        if log_format == "json":
            handler.setFormatter(
                JsonFormatter(JSON_FIELDS, rename_fields={"levelname": "level", "name": "logger"})
            )
        handler.addFilter(RedactTokens())
    # httpx logs every request line at INFO: Telegram polls constantly, with the token in it.
    # Alembic, imported only when a migration is due, announces its plugins at INFO.
    for noisy in ("httpx", "httpcore", "alembic.runtime.plugins"):
        logging.getLogger(noisy).setLevel(max(logging.WARNING, logging.getLogger().level))
