"""Access logging without secrets: the callback path's secret segment is replaced by ``***``."""

from __future__ import annotations

import logging
from typing import ClassVar

from aiohttp import web
from aiohttp.abc import AbstractAccessLogger

from payments.webhook import CallbackPath


class RedactingAccessLogger(AbstractAccessLogger):
    callback_path: ClassVar[CallbackPath | None] = None

    @classmethod
    def for_path(cls, callback_path: CallbackPath) -> type[RedactingAccessLogger]:
        return type("RedactingAccessLogger", (cls,), {"callback_path": callback_path})

    @property
    def enabled(self) -> bool:
        """aiohttp skips the call entirely when access logging is off."""
        return self.logger.isEnabledFor(logging.INFO)

    def log(self, request: web.BaseRequest, response: web.StreamResponse, time: float) -> None:
        path = request.path
        if self.callback_path is not None:
            path = self.callback_path.redact(path)
        self.logger.info(
            '%s "%s %s" %d %.1fms',
            request.remote,
            request.method,
            path,
            response.status,
            time * 1000,
        )
