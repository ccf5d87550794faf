"""``duka serve`` reads its catalog file again on SIGHUP (``kill -HUP <pid>``).

The file is the one the catalog came from at start-up (``DUKA_CATALOG``, else
config.toml's ``[[catalog.products]]``), applied as ``duka catalog import`` applies it
(``bot/catalog_import.py``), with the report logged one line per change or bad entry.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence

from bot.catalog import CatalogError, CatalogFile, ProductSpec
from bot.catalog_import import ImportReport, import_catalog, translations_after, unusable
from storage.engine import Database

log = logging.getLogger(__name__)


class CatalogReloader:
    """Applies the catalog file again and hands the new configured products (the only
    place the Kiswahili texts live) to ``on_applied``."""

    def __init__(
        self,
        database: Database,
        source: CatalogFile,
        configured: Sequence[ProductSpec],
        on_applied: Callable[[Sequence[ProductSpec]], None],
    ) -> None:
        self._db = database
        self._source = source
        self._configured = tuple(configured)
        self._on_applied = on_applied
        # Two signals close together: the second reload starts from the first one's result.
        self._lock = asyncio.Lock()

    async def reload(self) -> ImportReport | None:
        """The report, or None when the file changed nothing (the reason is logged)."""
        async with self._lock:
            log.info("reading the catalog again from %s", self._source.path)
            try:
                report = await import_catalog(self._db, self._source)
            except CatalogError as exc:
                log.error("catalog not changed: %s", unusable(exc))
                return None
            except Exception:
                # A bug or the database gone: the shop goes on with the catalog it had.
                log.exception("catalog not changed")
                return None
            self._configured = translations_after(self._configured, report)
            self._on_applied(self._configured)
        for line in (*report.changes, *report.notes):
            log.info("catalog: %s", line)
        for bad in report.bad:
            log.warning("catalog: %s", bad)
        (log.info if report.complete else log.warning)("catalog: %s", report.summary())
        return report


@contextlib.asynccontextmanager
async def reload_on_sighup(reload: Callable[[], Awaitable[object]]) -> AsyncIterator[None]:
    """Run ``reload`` at each SIGHUP while the context is open; a reload under way when it
    closes is waited for (its transaction finishes either way)."""
    loop = asyncio.get_running_loop()
    running: set[asyncio.Task[object]] = set()

    def start() -> None:
        task = loop.create_task(_run(reload), name="catalog-reload")
        running.add(task)
        task.add_done_callback(running.discard)

    hangup = getattr(signal, "SIGHUP", None)  # Windows has none
    installed = False
    if hangup is not None:
        # Only the main thread's loop can take signals (NotImplementedError off Unix).
        with contextlib.suppress(NotImplementedError, RuntimeError, ValueError):
            loop.add_signal_handler(hangup, start)
            installed = True
    if hangup is None or not installed:
        log.info("SIGHUP is not caught here: after editing the catalog, run duka catalog import")
        yield
        return
    try:
        yield
    finally:
        loop.remove_signal_handler(hangup)
        await asyncio.gather(*running, return_exceptions=True)


async def _run(reload: Callable[[], Awaitable[object]]) -> object:
    return await reload()
