"""The raw-INSERT floor of ``bench.callbacks_pg``: ``bench.callbacks``' floor on asyncpg.

Run as its own process (``python -m bench.callbacks_pg_floor --port P --dsn DSN``) so its
CPU is read from /proc like a Duka server's. Each request: read the body, ``json.loads``
it, and one ``INSERT (checkout_request_id, raw)`` on a connection taken from an asyncpg
pool (and given back without asyncpg's reset queries). The statement runs outside an
explicit transaction, so PostgreSQL commits it by itself (one INSERT + one COMMIT,
durable with the server's ``synchronous_commit``). The pool has 15 connections, Duka's
own SQLAlchemy pool size (5 + 10 overflow), and the 50 requests in flight share them;
PostgreSQL groups concurrent commits into one WAL flush by itself. The table
(``floor_callbacks``) is made by ``bench.callbacks_pg``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import signal

import asyncpg
from aiohttp import web

ACCEPTED = {"ResultCode": 0, "ResultDesc": "Accepted"}
POOL_SIZE = 15
INSERT = "INSERT INTO floor_callbacks (checkout_request_id, raw) VALUES ($1, $2)"


def floor_app(pool: asyncpg.Pool) -> web.Application:
    async def receive(request: web.Request) -> web.Response:
        body = await request.read()
        document = json.loads(body)
        checkout_id = document["Body"]["stkCallback"]["CheckoutRequestID"]
        async with pool.acquire() as conn:
            await conn.execute(INSERT, checkout_id, body.decode())
        return web.json_response(ACCEPTED)

    async def health(request: web.Request) -> web.Response:
        return web.json_response({"status": "ok"})

    app = web.Application()
    app.router.add_post("/hooks/stk/{token}/{attempt}/{attempt_token}", receive)
    app.router.add_get("/healthz", health)
    return app


async def _no_reset(conn: asyncpg.Connection) -> None:
    """asyncpg's pool would otherwise send RESET ALL and friends at every release: one
    more round trip and transaction per request, which a floor should not pay."""


async def serve(dsn: str, port: int, pool_size: int) -> None:
    pool = await asyncpg.create_pool(dsn, min_size=pool_size, max_size=pool_size, reset=_no_reset)
    try:
        runner = web.AppRunner(floor_app(pool), access_log=None, shutdown_timeout=2)
        await runner.setup()
        try:
            await web.TCPSite(runner, "127.0.0.1", port).start()
            stop = asyncio.Event()
            loop = asyncio.get_running_loop()
            for signum in (signal.SIGTERM, signal.SIGINT):
                loop.add_signal_handler(signum, stop.set)
            await stop.wait()
        finally:
            await runner.cleanup()
    finally:
        await pool.close()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--dsn", required=True, help="postgresql://user@host:port/db")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--pool", type=int, default=POOL_SIZE, help="asyncpg pool size")
    args = parser.parse_args(argv)
    asyncio.run(serve(args.dsn, args.port, args.pool))


if __name__ == "__main__":
    main()
