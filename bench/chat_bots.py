"""The two bots ``bench.chat`` measures, each as its own process, and what they cost.

``running_bot("duka", ...)`` starts the real ``duka serve`` (``python -m bot serve``) on a
fresh SQLite file in the run's directory, polling the fake Bot API and paying through the
Daraja simulator, which runs as a process of its own (``duka simulator``) so that
Daraja's side of each payment is not counted as Duka's CPU; ``running_bot("floor", ...)``
starts ``bench.chat_floor``. Each process's output goes to ``bot.log`` in the run's
directory, and SIGTERM ends it (all shut down cleanly on it). CPU and RSS are read from
Linux's /proc, for the whole bot process (all its threads).
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import os
import pstats
import signal
import socket
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp

from bench.callbacks import _own_time_by_area
from storage.sealing import generate_key

PROJECT_ROOT = Path(__file__).resolve().parent.parent
TOKEN = "424242:BENCH-CHAT-TOKEN"
START_TIMEOUT = 60.0
STOP_TIMEOUT = 20.0
RSS_SAMPLE_SECONDS = 0.2
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")
PROFILE_FILE = "duka.prof"
MERCHANT_CHAT = 600_001  # with --merchant: the one chat that gets every "New paid order"
SIMULATOR_CALLBACK_DELAY = "2.0"  # seconds from push to callback: the simulator's default
# The bench shop: no [shop] fulfilment (so no "delivery or pickup?"), no merchant chat
# (unless --merchant), everything else as shipped.
CONFIG_TOML = """
[shop]
name = "Bench Duka"
[[catalog.products]]
sku = "sukuma"
name = "Sukuma wiki"
price = 30
category = "Vegetables"
[[catalog.products]]
sku = "unga"
name = "Unga 2kg"
price = 210
category = "Staples"
[[catalog.products]]
sku = "sukari"
name = "Sukari 1kg"
price = 160
category = "Staples"
"""


def cpu_seconds(pid: int, task: str = "") -> float:
    """User + system CPU seconds of the process, all its threads."""
    try:
        fields = Path(f"/proc/{pid}{task}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return math.nan
    return (int(fields[11]) + int(fields[12])) / CLOCK_TICKS  # utime, stime


def main_thread_cpu_seconds(pid: int) -> float:
    """The same for the main thread alone, where the bots run their event loop."""
    return cpu_seconds(pid, f"/task/{pid}")


def rss_mb(pid: int) -> float:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return math.nan


async def sample_peak_rss(pid: int, peak: list[float]) -> None:
    """Keep ``peak[0]`` at the largest RSS seen, until cancelled."""
    while True:
        peak[0] = max(peak[0], rss_mb(pid))
        await asyncio.sleep(RSS_SAMPLE_SECONDS)


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def _command(
    kind: str, base_url: str, workdir: Path, profile: bool, merchant: bool, simulator_port: int
) -> tuple[list[str], dict[str, str], int]:
    """The command line, environment and HTTP port (0: none) of the bot to measure."""
    env = {
        name: value
        for name, value in os.environ.items()
        if not name.startswith(("DUKA_", "MPESA_", "TELEGRAM_", "WHATSAPP_"))
    }
    if kind == "floor":
        command = ["-m", "bench.chat_floor", "--base-url", base_url, "--token", TOKEN]
        return [sys.executable, *command], env, 0
    config = workdir / "config.toml"
    config.write_text(CONFIG_TOML)
    port = _free_port()
    env |= {
        "DUKA_CONFIG": str(config),
        "DUKA_DATABASE_URL": f"sqlite+aiosqlite:///{workdir / 'duka.sqlite3'}",
        "DUKA_HTTP_HOST": "127.0.0.1",
        "DUKA_HTTP_PORT": str(port),
        "DUKA_DATA_KEY": generate_key(),
        "MPESA_ENVIRONMENT": "simulator",
        "MPESA_BASE_URL": f"http://127.0.0.1:{simulator_port}",
        "TELEGRAM_BOT_TOKEN": TOKEN,
        "TELEGRAM_API_BASE_URL": base_url,
    }
    if merchant:
        env["DUKA_MERCHANT_TELEGRAM_IDS"] = str(MERCHANT_CHAT)
    # cProfile writes its file when the program exits, which SIGTERM makes run_app do.
    profiler = ["-m", "cProfile", "-o", str(workdir / PROFILE_FILE)] if profile else []
    return [sys.executable, *profiler, "-m", "bot", "serve"], env, port


@contextlib.asynccontextmanager
async def running_bot(
    kind: str, base_url: str, workdir: Path, *, profile: bool = False, merchant: bool = False
) -> AsyncIterator[tuple[asyncio.subprocess.Process, int]]:
    """The bot's process and Duka's HTTP port (0 for the floor), stopped at the end."""
    simulator_port = _free_port()
    command, env, port = _command(kind, base_url, workdir, profile, merchant, simulator_port)
    async with contextlib.AsyncExitStack() as stack:
        log = stack.enter_context((workdir / "bot.log").open("wb"))
        if port:
            simulator = await asyncio.create_subprocess_exec(
                sys.executable, "-m", "bot", "simulator", "--port", str(simulator_port),
                "--callback-delay", SIMULATOR_CALLBACK_DELAY,
                cwd=PROJECT_ROOT, env=env, stdout=log, stderr=asyncio.subprocess.STDOUT,
            )  # fmt: skip
            stack.push_async_callback(_stop, simulator)
            await _until_listening(simulator_port)
            # As an upgrade is deployed (README): `duka migrate`, then `duka serve`, which then
            # finds the schema at head and never imports Alembic (about 11 MB resident).
            migrating = await asyncio.create_subprocess_exec(
                sys.executable, "-m", "bot", "migrate", cwd=PROJECT_ROOT, env=env, stdout=log,
                stderr=asyncio.subprocess.STDOUT,
            )  # fmt: skip
            if await migrating.wait():
                raise RuntimeError(f"duka migrate failed:\n{_tail(workdir / 'bot.log')}")
        process = await asyncio.create_subprocess_exec(
            *command, cwd=PROJECT_ROOT, env=env, stdout=log, stderr=asyncio.subprocess.STDOUT
        )
        stack.push_async_callback(_stop, process)
        yield process, port


async def _stop(process: asyncio.subprocess.Process) -> None:
    """SIGTERM, and SIGKILL if it has not ended in STOP_TIMEOUT seconds."""
    if process.returncode is not None:
        return
    process.send_signal(signal.SIGTERM)
    try:
        async with asyncio.timeout(STOP_TIMEOUT):
            await process.wait()
    except TimeoutError:
        process.kill()
        await process.wait()


async def _until_listening(port: int) -> None:
    async with asyncio.timeout(START_TIMEOUT):
        while True:
            try:
                _, writer = await asyncio.open_connection("127.0.0.1", port)
            except OSError:
                await asyncio.sleep(0.1)
                continue
            writer.close()
            return


async def until_ready(
    process: asyncio.subprocess.Process, polled: asyncio.Event, port: int, log: Path
) -> None:
    """Until the bot polls the fake (``polled``) and, for Duka, /healthz answers 200 (the
    callback inbox runs); a bot that exits first is an error that shows its log."""
    async with asyncio.timeout(START_TIMEOUT):
        waiting = asyncio.create_task(polled.wait())
        exited = asyncio.create_task(process.wait())
        await asyncio.wait({waiting, exited}, return_when=asyncio.FIRST_COMPLETED)
        waiting.cancel()
        exited.cancel()
        if process.returncode is not None:
            raise RuntimeError(f"the bot exited ({process.returncode}) at start-up:\n{_tail(log)}")
        if not port:
            return
        async with aiohttp.ClientSession() as session:
            while True:
                with contextlib.suppress(aiohttp.ClientError):
                    async with session.get(f"http://127.0.0.1:{port}/healthz") as response:
                        if response.status == 200:
                            return
                await asyncio.sleep(0.1)


def _tail(log: Path) -> str:
    return log.read_text(errors="replace")[-3000:]


def profile_report(path: Path, top: int = 20) -> str:
    """Duka's event-loop thread by area and its top functions by own time (cProfile sees
    the main thread only: the SQLite writer thread's work is not in it)."""
    if not path.exists():
        return f"no profile was written ({path.name} missing)"
    lines = ["own time on the event-loop thread, by area:"]
    stats = pstats.Stats(str(path))
    areas = _own_time_by_area(stats)
    busy = sum(s for area, s in areas.items() if not area.startswith("(idle"))
    for area, seconds in sorted(areas.items(), key=lambda kv: -kv[1])[:14]:
        share = "" if area.startswith("(idle") else f"{seconds / busy:5.0%}"
        lines.append(f"  {area:40} {seconds:7.2f} s {share}")
    lines.append(f"top {top} functions by own time:")
    raw: dict[tuple[str, int, str], tuple[float, ...]] = stats.stats  # type: ignore[attr-defined]
    ranked = sorted(raw.items(), key=lambda kv: -kv[1][2])[:top]
    for (filename, line, function), (_, calls, own, cumulative, *_rest) in ranked:
        where = filename.split("site-packages/")[-1].replace(str(PROJECT_ROOT) + "/", "")
        lines.append(
            f"  {own:6.2f} s own {cumulative:7.2f} s cum {int(calls):8d} calls  "
            f"{where}:{line}({function})"
        )
    return "\n".join(lines)
