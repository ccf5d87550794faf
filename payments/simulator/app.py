"""The aiohttp application: Daraja's paths, translated to ``DarajaSimulator.handle_*`` calls.

Router misses are answered in Daraja's error shape too (``404.001.01`` for an unknown path,
``405.001`` for a wrong method), so a client with a typo sees what it would see on Daraja.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from aiohttp import web
from aiohttp.typedefs import Handler

from payments.simulator.errors import METHOD_NOT_ALLOWED, RESOURCE_NOT_FOUND

if TYPE_CHECKING:
    from payments.simulator.simulator import DarajaSimulator, WireReply

OAUTH_PATH = "/oauth/v1/generate"
STK_PUSH_PATH = "/mpesa/stkpush/v1/processrequest"
STK_QUERY_PATH = "/mpesa/stkpushquery/v1/query"
# Both versions register the same way here; on Daraja the version must match the app's product.
C2B_REGISTER_PATHS = ("/mpesa/c2b/v1/registerurl", "/mpesa/c2b/v2/registerurl")
C2B_SIMULATE_PATH = "/mpesa/c2b/v1/simulate"

SIMULATOR_KEY: web.AppKey[DarajaSimulator] = web.AppKey("duka_daraja_simulator")


def build_app(simulator: DarajaSimulator) -> web.Application:
    app = web.Application(middlewares=[_daraja_shaped_router_errors])
    app[SIMULATOR_KEY] = simulator
    app.router.add_get(OAUTH_PATH, _generate_token)
    app.router.add_post(STK_PUSH_PATH, _stk_push)
    app.router.add_post(STK_QUERY_PATH, _stk_query)
    for path in C2B_REGISTER_PATHS:
        app.router.add_post(path, _c2b_register)
    app.router.add_post(C2B_SIMULATE_PATH, _c2b_simulate)
    app.on_cleanup.append(_close_simulator)
    return app


async def _generate_token(request: web.Request) -> web.Response:
    reply = request.app[SIMULATOR_KEY].handle_token(
        grant_type=request.query.get("grant_type"),
        authorization=request.headers.get("Authorization"),
    )
    return _respond(reply)


async def _stk_push(request: web.Request) -> web.Response:
    reply = await request.app[SIMULATOR_KEY].handle_push(
        authorization=request.headers.get("Authorization"),
        content_type=request.content_type,
        raw_body=await _body_text(request),
    )
    return _respond(reply)


async def _stk_query(request: web.Request) -> web.Response:
    reply = request.app[SIMULATOR_KEY].handle_query(
        authorization=request.headers.get("Authorization"),
        content_type=request.content_type,
        raw_body=await _body_text(request),
    )
    return _respond(reply)


async def _c2b_register(request: web.Request) -> web.Response:
    reply = request.app[SIMULATOR_KEY].handle_c2b_register(
        authorization=request.headers.get("Authorization"),
        content_type=request.content_type,
        raw_body=await _body_text(request),
    )
    return _respond(reply)


async def _c2b_simulate(request: web.Request) -> web.Response:
    reply = request.app[SIMULATOR_KEY].handle_c2b_simulate(
        authorization=request.headers.get("Authorization"),
        content_type=request.content_type,
        raw_body=await _body_text(request),
    )
    return _respond(reply)


@web.middleware
async def _daraja_shaped_router_errors(
    request: web.Request, handler: Handler
) -> web.StreamResponse:
    try:
        return await handler(request)
    except web.HTTPMethodNotAllowed:
        return _respond(request.app[SIMULATOR_KEY].error_reply(METHOD_NOT_ALLOWED))
    except web.HTTPNotFound:
        return _respond(request.app[SIMULATOR_KEY].error_reply(RESOURCE_NOT_FOUND))


async def _close_simulator(app: web.Application) -> None:
    await app[SIMULATOR_KEY].aclose()


async def _body_text(request: web.Request) -> str:
    # Undecodable bytes must become "Invalid Request Payload", not an unhandled 500.
    return (await request.read()).decode("utf-8", errors="replace")


def _respond(reply: WireReply) -> web.Response:
    return web.json_response(reply.body, status=reply.status)
