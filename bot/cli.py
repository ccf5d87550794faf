"""The ``duka`` command (also ``python -m bot``)."""

from __future__ import annotations

import argparse
import asyncio
import logging
import sys

from aiohttp import web

from bot.app import access_logger_for, build_app
from bot.config import ConfigError, load_config
from bot.http_logging import configure_logging


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="duka", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)
    commands.add_parser("serve", help="run the server (callback webhook, reconciler)")
    demo = commands.add_parser(
        "demo", help="the shop in your terminal: you are the customer (no accounts needed)"
    )
    demo.add_argument(
        "--script", action="store_true", help="play two scripted customers and check the result"
    )
    demo.add_argument("--callback-delay", type=float, default=1.0, metavar="SECONDS")
    simulator = commands.add_parser("simulator", help="run the Daraja simulator on its own")
    simulator.add_argument("--host", default="127.0.0.1")
    simulator.add_argument("--port", type=int, default=8090)
    simulator.add_argument("--callback-delay", type=float, default=2.0, metavar="SECONDS")
    parser.add_argument("--log-level", default="INFO")
    args = parser.parse_args(argv)
    configure_logging(args.log_level.upper())
    try:
        if args.command == "serve":
            return _serve()
        if args.command == "demo":
            logging.getLogger().setLevel(logging.WARNING)  # the transcript is the output
            from bot.demo import run_demo

            ok = asyncio.run(
                run_demo(script=args.script, callback_delay_seconds=args.callback_delay)
            )
            return 0 if ok else 1
        from payments.simulator import SimulatorConfig, run_simulator_forever

        config = SimulatorConfig(callback_delay_seconds=args.callback_delay)
        asyncio.run(run_simulator_forever(config, args.host, args.port))
        return 0
    except ConfigError as exc:
        print(exc, file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 0


def _serve() -> int:
    config = load_config()
    web.run_app(
        build_app(config),
        host=config.http_host,
        port=config.http_port,
        access_log_class=access_logger_for(config),
        print=lambda text: logging.getLogger("duka").info(text.strip()),
    )
    return 0
