"""``duka serve``'s HTTP server, and how it stops on SIGTERM or Ctrl-C (issue 9).

aiohttp's ``run_app`` closes every keep-alive connection the moment it stops, and drops what
arrives on one from then on: a request sent right after the answer to the previous one was
lost with no answer (a Daraja callback among them). So a stop goes in this order:

1. stop listening: new connections are refused;
2. drain: every answer now says ``Connection: close``, so each client sends nothing more on a
   connection once it reads that answer, and closes it; we wait until the clients closed
   them all, at most ``DRAIN_SECONDS`` (a connection left idle that long is then closed);
3. aiohttp's own shutdown: a request still being handled gets ``HANDLER_GRACE_SECONDS``;
4. the app's cleanup contexts, in reverse order of start-up: the callback inbox stores what
   it has queued (the HTTP server no longer takes requests), the outbox finishes the message
   being sent, the channels stop, the database closes.
"""

from __future__ import annotations

import asyncio
import logging
import signal
import time

from aiohttp import hdrs, web

from bot.http_logging import RedactingAccessLogger

log = logging.getLogger("duka")
DRAIN_SECONDS = 1.5
HANDLER_GRACE_SECONDS = 0.5
_DRAIN_POLL_SECONDS = 0.02


def serve(
    app: web.Application,
    host: str,
    port: int,
    access_log_class: type[RedactingAccessLogger],
) -> None:
    """Serve ``app`` until SIGTERM or SIGINT, then stop as the module docstring says."""
    asyncio.run(_serve(app, host, port, access_log_class))


async def _serve(
    app: web.Application,
    host: str,
    port: int,
    access_log_class: type[RedactingAccessLogger],
) -> None:
    draining = False

    async def close_when_draining(request: web.Request, response: web.StreamResponse) -> None:
        if draining:
            response.force_close()  # the server closes the connection after this answer
            # and the client is told so (aiohttp has chosen the headers before this hook).
            response.headers[hdrs.CONNECTION] = "close"

    app.on_response_prepare.append(close_when_draining)
    runner = web.AppRunner(
        app, access_log_class=access_log_class, shutdown_timeout=HANDLER_GRACE_SECONDS
    )
    try:
        # Start-up: the cleanup contexts run up to their yield. Inside the try: when one of
        # them refuses, cleanup() still closes those already started, in reverse order.
        await runner.setup()
        site = web.TCPSite(runner, host, port)
        await site.start()
        log.info("serving on http://%s:%d", host, port)
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(signum, stop.set)
        await stop.wait()
        started = time.monotonic()
        await site.stop()
        draining = True
        left = await _drain(runner)
        log.info(
            "stopping: stopped listening, %d connections still open after %.1f s",
            left,
            time.monotonic() - started,
        )
    finally:
        await runner.cleanup()


async def _drain(runner: web.AppRunner) -> int:
    """Until every connection is closed or ``DRAIN_SECONDS`` passed; how many are left."""
    server = runner.server
    assert server is not None
    deadline = time.monotonic() + DRAIN_SECONDS
    # Polled: aiohttp has no event for a connection's end.
    while server.connections and time.monotonic() < deadline:  # noqa: ASYNC110
        await asyncio.sleep(_DRAIN_POLL_SECONDS)
    return len(server.connections)
