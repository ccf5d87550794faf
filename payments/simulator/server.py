"""Running the simulator on a real socket: for integration tests and ``duka simulator``."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass

from aiohttp import web

from payments.simulator.config import SimulatorConfig
from payments.simulator.rules import rules_summary
from payments.simulator.simulator import DarajaSimulator

# The simulator has nothing worth a graceful drain; a test with a request stuck in
# fail_next_push(delay_seconds=...) must not hold shutdown for aiohttp's default 60 s.
_SHUTDOWN_TIMEOUT_SECONDS = 1.0


@dataclass
class RunningSimulator:
    """A simulator listening on ``base_url`` (e.g. ``http://127.0.0.1:43121``)."""

    simulator: DarajaSimulator
    base_url: str
    _runner: web.AppRunner

    async def stop(self) -> None:
        """Stop listening; the app's cleanup cancels pending callbacks and closes the client."""
        await self._runner.cleanup()


async def start_simulator(
    config: SimulatorConfig | None = None, host: str = "127.0.0.1", port: int = 0
) -> RunningSimulator:
    """Serve a new simulator on ``host:port``; port 0 picks a free port."""
    simulator = DarajaSimulator(config)
    runner = web.AppRunner(simulator.app(), shutdown_timeout=_SHUTDOWN_TIMEOUT_SECONDS)
    await runner.setup()
    try:
        await web.TCPSite(runner, host, port).start()
    except BaseException:
        await runner.cleanup()
        raise
    bound_port = int(runner.addresses[0][1])
    url_host = f"[{host}]" if ":" in host else host
    return RunningSimulator(simulator, f"http://{url_host}:{bound_port}", runner)


async def run_simulator_forever(
    config: SimulatorConfig | None = None, host: str = "127.0.0.1", port: int = 0
) -> None:
    """Serve until cancelled (Ctrl-C), after printing where and by which rules."""
    config = config if config is not None else SimulatorConfig()
    running = await start_simulator(config, host, port)
    try:
        # No credentials in the banner: the consumer secret and passkey are secrets.
        print(
            f"Daraja simulator listening on {running.base_url} "
            f"(BusinessShortCode {config.short_code}, "
            f"callbacks after {config.callback_delay_seconds:g} s)",
            flush=True,
        )
        print(rules_summary(), flush=True)
        print(
            "C2B: register URLs at /mpesa/c2b/v2/registerurl, then pay with "
            "/mpesa/c2b/v1/simulate (CommandID CustomerPayBillOnline)",
            flush=True,
        )
        await asyncio.Event().wait()
    finally:
        await running.stop()
