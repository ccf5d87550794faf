"""The composition root: ``build_app(config)`` wires storage, Daraja and background work.

Nothing is created at import time. Every resource lives in an aiohttp cleanup context,
so start-up and graceful shutdown are one mechanism, and the tests and the demo reuse
this function with other configuration.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import datetime, time, timedelta
from typing import Any

import httpx
from aiohttp import web
from aiohttp.typedefs import Handler, Middleware
from sqlalchemy.ext.asyncio import AsyncEngine

from bot.catalog import sync_catalog
from bot.catalog_reload import CatalogReloader, reload_on_sighup
from bot.channels.base import Channel
from bot.channels.telegram import TelegramChannel
from bot.channels.terminal import MERCHANT_CHAT, TerminalChannel
from bot.channels.whatsapp import MAX_WEBHOOK_BYTES, WhatsAppChannel
from bot.channels.whatsapp_api import WhatsAppClient
from bot.chat.engine import Conversation
from bot.chat.flood import FloodGate
from bot.config import AppConfig, ConfigError
from bot.daily_summary import DailySummary
from bot.health import BackgroundTasks, ready_response
from bot.http_logging import RedactingAccessLogger
from bot.merchant import MerchantDesk
from bot.metrics_http import metrics_handler, serve_apart
from bot.notifications import OutboxDispatcher
from bot.processes import REGISTRY, readyz_processes, registry_context
from bot.startup import opened_database
from payments.c2b_webhook import INTAKE as C2B_INTAKE
from payments.c2b_webhook import C2BIntake, c2b_paths, c2b_routes
from payments.daraja_client import DarajaClient
from payments.http_body import MAX_BODY_READ_SECONDS
from payments.inbox import CallbackInbox
from payments.metrics import Metrics
from payments.reconciler import Reconciler
from payments.retention import Pruner
from payments.service import PaymentService, utc_now
from payments.settings import DarajaEnvironment
from payments.simulator import RunningSimulator, SimulatorConfig, start_simulator
from payments.webhook import INBOX, CallbackPath, callback_routes
from storage.engine import Database
from storage.sealed_rows import WrongDataKey, check_key, rekey
from storage.sealing import CannotUnseal, Sealer

log = logging.getLogger(__name__)

CONFIG = web.AppKey("config", AppConfig)
DATABASE = web.AppKey("database", Database)
ENGINE = web.AppKey("engine", AsyncEngine)
DARAJA = web.AppKey("daraja_client", DarajaClient)
PAYMENTS = web.AppKey("payment_service", PaymentService)
RECONCILER = web.AppKey("reconciler", Reconciler)
SIMULATOR = web.AppKey("embedded_simulator", RunningSimulator)
CONVERSATION = web.AppKey("conversation", Conversation)
DISPATCHER = web.AppKey("outbox_dispatcher", OutboxDispatcher)
TELEGRAM = web.AppKey("telegram_channel", TelegramChannel)
WHATSAPP = web.AppKey("whatsapp_channel", WhatsAppChannel)
MERCHANT_DESK = web.AppKey("merchant_desk", MerchantDesk)
METRICS = web.AppKey("metrics", Metrics)
BACKGROUND = web.AppKey("background_tasks", BackgroundTasks)  # what /readyz checks
METRICS_URL = web.AppKey("metrics_url", str)  # set when /metrics has a port of its own
# This process among all that share the database: who claims outbox rows, holds leases.
PROCESS_ID = web.AppKey("process_id", str)


def build_app(
    config: AppConfig,
    *,
    clock: Callable[[], datetime] = utc_now,
    run_reconciler: bool = True,
    run_dispatcher: bool = True,
    dispatch_seconds: float = 1.0,
    terminal: TerminalChannel | None = None,
    read_seconds: float = MAX_BODY_READ_SECONDS,
    reload_catalog_on_sighup: bool = False,
) -> web.Application:
    """The whole product as one aiohttp application.

    ``run_reconciler=False`` leaves the background sweep off so a test can call
    ``app[RECONCILER].sweep()`` itself at the moments it chooses; ``run_dispatcher=False``
    likewise leaves queued messages undelivered (the benchmark measures the callback path).
    ``terminal`` adds the demo's terminal chat as a channel (its merchant chat gets the
    merchant messages). ``read_seconds`` is how long every webhook (STK, C2B, Telegram,
    WhatsApp) gives a body to arrive whole. ``reload_catalog_on_sighup`` (``duka serve``)
    applies the catalog file again at each SIGHUP, a signal being the whole process's.
    """
    callback_path = CallbackPath(config.daraja.callback_url)
    app = web.Application(
        # The largest webhook's size; each route caps its own body below that.
        client_max_size=MAX_WEBHOOK_BYTES,
        middlewares=[_error_middleware(_secret_paths(config))],
    )
    app[CONFIG] = config
    app[PROCESS_ID] = uuid.uuid4().hex
    app[METRICS] = Metrics()
    app[BACKGROUND] = BackgroundTasks()
    app.add_routes(
        callback_routes(callback_path, config.callback_sources, read_seconds=read_seconds)
    )
    if config.daraja.c2b_confirmation_url:
        app.add_routes(
            c2b_routes(
                *c2b_paths(config.daraja.c2b_confirmation_url, config.daraja.c2b_validation_url),
                config.callback_sources,
                read_seconds=read_seconds,
            )
        )
    app.add_routes([web.get("/healthz", _health), web.get("/readyz", _ready)])
    scrape = metrics_handler(
        app[METRICS], lambda: app.get(DATABASE), app[BACKGROUND], clock, config.metrics_token
    )
    if config.metrics_port is None:
        app.add_routes([web.get("/metrics", scrape)])
    if config.telegram is not None and config.telegram.webhook_url:
        app.add_routes([web.post(config.telegram.webhook_path, _to_channel(TELEGRAM, "webhook"))])
    if config.whatsapp is not None:
        path = config.whatsapp.webhook_path
        app.add_routes(
            [
                web.get(path, _to_channel(WHATSAPP, "verify")),
                web.post(path, _to_channel(WHATSAPP, "receive")),
            ]
        )
    app.cleanup_ctx.append(_database)
    # Before anything else starts: refuses a second process where it cannot run (issue 10).
    app.cleanup_ctx.append(
        registry_context(
            config,
            app[PROCESS_ID],
            lambda: app[DATABASE],
            app[BACKGROUND],
            on_count=lambda processes: _share_telegram_budget(app, processes),
        )
    )
    app.cleanup_ctx.append(_daraja)
    dispatch = dispatch_seconds if run_dispatcher else None
    app.cleanup_ctx.append(_chat(clock, dispatch, terminal, read_seconds))
    app.cleanup_ctx.append(_settlement(clock, run_reconciler))
    if config.daily_summary_at is not None:
        app.cleanup_ctx.append(_daily_summary(config.daily_summary_at, clock))
    app.cleanup_ctx.append(_retention(clock))
    if reload_catalog_on_sighup and config.catalog_file is not None:
        app.cleanup_ctx.append(_catalog_reloads)
    if config.metrics_port is not None:
        app.cleanup_ctx.append(_metrics_apart(scrape, config.http_host, config.metrics_port))
    return app


def _secret_paths(config: AppConfig) -> tuple[CallbackPath, ...]:
    """Every served path that holds a secret (STK callback, C2B confirmation and validation)."""
    paths = [CallbackPath(config.daraja.callback_url)]
    if config.daraja.c2b_confirmation_url:
        paths += c2b_paths(config.daraja.c2b_confirmation_url, config.daraja.c2b_validation_url)
    return tuple(paths)


def access_logger_for(config: AppConfig) -> type[RedactingAccessLogger]:
    """An access logger that hides the callback secrets (for ``web.run_app``/``AppRunner``)."""
    return RedactingAccessLogger.for_path(*_secret_paths(config))


async def _health(request: web.Request) -> web.Response:
    """200 while callbacks can be taken in; 503 when the inbox has stopped."""
    inbox = request.app.get(INBOX)
    if inbox is None or not inbox.running:
        return web.json_response({"status": "callback inbox not running"}, status=503)
    return web.json_response({"status": "ok"})


async def _ready(request: web.Request) -> web.Response:
    """200 when the database answers at the code's schema and the background work runs."""
    return await ready_response(
        request.app.get(DATABASE), request.app[BACKGROUND], readyz_processes(request.app)
    )


def _metrics_apart(
    scrape: Callable[[web.Request], Awaitable[web.Response]], host: str, port: int
) -> Callable[[web.Application], AsyncIterator[None]]:
    """``/metrics`` on ``DUKA_METRICS_PORT``, away from the port the internet reaches."""

    async def metrics_apart(app: web.Application) -> AsyncIterator[None]:
        async with serve_apart(scrape, host, port) as url:
            app[METRICS_URL] = url
            yield

    return metrics_apart


def _error_middleware(secret_paths: tuple[CallbackPath, ...]) -> Middleware:
    @web.middleware
    async def errors(request: web.Request, handler: Handler) -> web.StreamResponse:
        try:
            return await handler(request)
        except web.HTTPException:
            raise
        except ConnectionResetError:
            # The sender hung up mid-request: nobody reads an answer, nothing went wrong here.
            log.info("%s %s: the client went away", request.method, _redacted(request.path))
            return web.json_response({"error": "connection closed"}, status=400)
        except Exception:
            path = _redacted(request.path)
            log.exception("unhandled error in %s %s", request.method, path)
            return web.json_response({"error": "internal error"}, status=500)

    def _redacted(path: str) -> str:
        for secret_path in secret_paths:
            path = secret_path.redact(path)
        return path

    return errors


def _to_channel(
    key: web.AppKey[Any], method: str
) -> Callable[[web.Request], Awaitable[web.StreamResponse]]:
    """A route that hands the request to a channel made at start-up (routes come first)."""

    async def route(request: web.Request) -> web.StreamResponse:
        channel = request.app.get(key)
        if channel is None:
            raise web.HTTPServiceUnavailable()
        response: web.StreamResponse = await getattr(channel, method)(request)
        return response

    return route


async def _database(app: web.Application) -> AsyncIterator[None]:
    # Held open under the server lock (SQLite), which `duka restore` checks for.
    async with opened_database(app[CONFIG]) as database:
        await _check_data_key(database, app[CONFIG].sealer)
        await database.transaction(sync_catalog, app[CONFIG].catalog)
        app[DATABASE] = database
        app[ENGINE] = database.engine
        yield


async def _check_data_key(database: Database, sealer: Sealer) -> None:
    """While DUKA_DATA_KEY_OLD is set, re-seal what is stored with the new key first (lookups
    by phone use the new key only); otherwise make sure the key opens what is stored."""
    try:
        if sealer.rotating:
            changed = await database.transaction(rekey, sealer)
            log.warning(
                "re-sealed %d rows with the new DUKA_DATA_KEY; DUKA_DATA_KEY_OLD can go", changed
            )
        else:
            await database.transaction(check_key, sealer)
    except (WrongDataKey, CannotUnseal):
        raise ConfigError(
            "DUKA_DATA_KEY",
            "is not the key the stored phone numbers were sealed with",
            "set it to that key; to change keys, set DUKA_DATA_KEY_OLD to the old one and "
            "DUKA_DATA_KEY to the new one, then run `duka rekey`",
        ) from None


async def _daraja(app: web.Application) -> AsyncIterator[None]:
    config = app[CONFIG]
    settings = config.daraja
    async with contextlib.AsyncExitStack() as stack:
        if not settings.base_url:
            # Simulator environment with no MPESA_BASE_URL: run one in this process.
            assert settings.environment is DarajaEnvironment.SIMULATOR
            simulator = await start_simulator(
                SimulatorConfig(
                    consumer_key=settings.consumer_key,
                    consumer_secret=settings.consumer_secret,
                    short_code=settings.short_code,
                    passkey=settings.passkey,
                    till_number=settings.till_number,
                    callback_delay_seconds=config.simulator.callback_delay_seconds,
                )
            )
            stack.push_async_callback(simulator.stop)
            app[SIMULATOR] = simulator
            settings = dataclasses.replace(settings, base_url=simulator.base_url)
            log.info("embedded Daraja simulator at %s", simulator.base_url)
        http = await stack.enter_async_context(httpx.AsyncClient())
        client = DarajaClient(settings, http, metrics=app[METRICS], database=app[DATABASE])
        app[DARAJA] = client
        if SIMULATOR in app and settings.c2b_confirmation_url:
            # The embedded simulator is new at every start: register as `duka c2b-register`
            # does against Daraja, so that Paybill payments reach us.
            await client.register_c2b_urls()
        app[PAYMENTS] = PaymentService(
            app[DATABASE],
            client,
            query_after_seconds=config.reconcile.query_after_seconds,
            on_applied=lambda: _wake_dispatcher(app),  # the dispatcher is made later
            limits=config.prompt_limits,
            metrics=app[METRICS],
        )
        yield


def _share_telegram_budget(app: web.Application, processes: int) -> None:
    """Every process sends for the same bot: each keeps to its share of Telegram's budget."""
    if TELEGRAM in app:
        app[TELEGRAM].budget.share_with(processes)


def _wake_dispatcher(app: web.Application) -> None:
    if DISPATCHER in app:
        app[DISPATCHER].wake()


def _chat(
    clock: Callable[[], datetime],
    dispatch_seconds: float | None,
    terminal: TerminalChannel | None,
    read_seconds: float,
) -> Callable[[web.Application], AsyncIterator[None]]:
    async def chat(app: web.Application) -> AsyncIterator[None]:
        config = app[CONFIG]
        paybill = config.daraja.paybill_fallback
        conversation = Conversation(
            app[DATABASE],
            app[PAYMENTS],
            config.shop_name,
            clock,
            paybill=paybill,
            flood=FloodGate(config.chat_events_per_10_seconds, window_seconds=10),
            catalog=config.catalog,
            shop_name_sw=config.shop_name_sw,
            handover=config.handover,
            hold_stock_for=timedelta(seconds=config.reconcile.expire_after_seconds),
            metrics=app[METRICS],
        )
        app[CONVERSATION] = conversation
        channels: dict[str, Channel] = {}
        recipients = [f"telegram:{i}" for i in config.merchant_telegram_ids]
        if terminal is not None:
            channels[terminal.name] = terminal
            recipients.append(f"{terminal.name}:{MERCHANT_CHAT}")
        recipients += [f"whatsapp:{number}" for number in config.merchant_whatsapp_numbers]
        dispatcher = OutboxDispatcher(
            app[DATABASE],
            channels,
            recipients,
            clock,
            dispatch_seconds or 1.0,
            paybill=paybill,
            metrics=app[METRICS],
            claimant=app[PROCESS_ID],
        )
        app[DISPATCHER] = dispatcher
        # Whoever may send merchant commands: the same chats that get merchant messages.
        desk = MerchantDesk(app[DATABASE], set(recipients), clock, on_change=dispatcher.wake)
        app[MERCHANT_DESK] = desk
        whatsapp_http: httpx.AsyncClient | None = None
        if config.whatsapp is not None:
            whatsapp_http = httpx.AsyncClient()
            client = WhatsAppClient(
                config.whatsapp.api_base_url,
                config.whatsapp.phone_number_id,
                config.whatsapp.access_token,
                whatsapp_http,
            )
            whatsapp = WhatsAppChannel(
                config.whatsapp,
                client,
                conversation,
                app[DATABASE],
                clock,
                merchant=desk,
                read_seconds=read_seconds,
            )
            channels[whatsapp.name] = whatsapp
            app[WHATSAPP] = whatsapp
            await whatsapp.resume()
        telegram: TelegramChannel | None = None
        if config.telegram is not None:
            telegram = TelegramChannel(
                config.telegram,
                conversation,
                desk,
                read_seconds=read_seconds,
                database=app[DATABASE],
                clock=clock,
            )
            channels[telegram.name] = telegram
            app[TELEGRAM] = telegram
            if REGISTRY in app:  # registered before the channel existed: its count so far
                telegram.budget.share_with(app[REGISTRY].processes)
            app[BACKGROUND].watch("telegram", lambda: telegram is not None and telegram.running)
        task = None
        if dispatch_seconds is not None:
            task = asyncio.create_task(dispatcher.run_forever(), name="outbox-dispatcher")
            app[BACKGROUND].watch_task("outbox_dispatcher", task)
        try:
            if telegram is not None:
                # Telegram being down must not keep the payment callbacks from being served.
                await telegram.start_in_background()
            yield
        finally:
            if task is not None:
                await dispatcher.stop(task)
            if telegram is not None:
                await telegram.stop()
            if WHATSAPP in app:
                await app[WHATSAPP].stop()
            if whatsapp_http is not None:
                await whatsapp_http.aclose()

    return chat


def _daily_summary(
    at: time, clock: Callable[[], datetime]
) -> Callable[[web.Application], AsyncIterator[None]]:
    """The merchant's daily summary at ``at`` (Nairobi time), queued in the outbox."""

    async def daily_summary(app: web.Application) -> AsyncIterator[None]:
        summary = DailySummary(app[DATABASE], at, clock, on_queued=app[DISPATCHER].wake)
        task = asyncio.create_task(summary.run_forever(), name="daily-summary")
        app[BACKGROUND].watch_task("daily_summary", task)
        try:
            yield
        finally:
            await summary.stop(task)

    return daily_summary


def _retention(clock: Callable[[], datetime]) -> Callable[[web.Application], AsyncIterator[None]]:
    """Old rows pruned in the background, in small batches (``payments.retention``)."""

    async def retention(app: web.Application) -> AsyncIterator[None]:
        pruner = Pruner(app[DATABASE], app[CONFIG].retention, clock, holder=app[PROCESS_ID])
        task = asyncio.create_task(pruner.run_forever(), name="retention")
        app[BACKGROUND].watch_task("retention", task)
        try:
            yield
        finally:
            await pruner.stop(task)

    return retention


async def _catalog_reloads(app: web.Application) -> AsyncIterator[None]:
    config = app[CONFIG]
    assert config.catalog_file is not None
    conversation = app[CONVERSATION]
    reloader = CatalogReloader(
        app[DATABASE], config.catalog_file, config.catalog, conversation.use_catalog
    )
    async with reload_on_sighup(reloader.reload):
        yield


def _settlement(
    clock: Callable[[], datetime], run_reconciler: bool
) -> Callable[[web.Application], AsyncIterator[None]]:
    async def settlement(app: web.Application) -> AsyncIterator[None]:
        app[C2B_INTAKE] = C2BIntake(app[DATABASE], clock, app[DISPATCHER].wake)
        metrics = app[METRICS]
        reconciler = Reconciler(
            app[DATABASE],
            app[DARAJA],
            app[CONFIG].reconcile,
            clock,
            app[DISPATCHER].wake,
            metrics=metrics,
            holder=app[PROCESS_ID],
        )
        app[RECONCILER] = reconciler
        inbox = CallbackInbox(
            app[DATABASE],
            clock,
            on_applied=app[DISPATCHER].wake,
            on_held=reconciler.wake,
            metrics=metrics,
        )
        inbox.start()
        app[INBOX] = inbox
        app[BACKGROUND].watch("callback_inbox", lambda: inbox.running)
        task = None
        if run_reconciler:
            task = asyncio.create_task(reconciler.run_forever(), name="reconciler")
            app[BACKGROUND].watch_task("reconciler", task)
        try:
            yield
        finally:
            if task is not None:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
            await inbox.stop()

    return settlement
