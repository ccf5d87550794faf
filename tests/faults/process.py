"""The real ``duka serve`` as a child process, for faults that need a real process: a
SIGKILL at any moment, a restart on the same files and port, SIGTERM while it works.

Each ``DukaProcess`` has its own directory (config.toml, the SQLite file, ``duka.log``)
and a fixed port, so a restart serves the same URLs. Its environment is this process's
without any Duka setting, plus what the test gives.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import aiohttp

from tests.conftest import DATA_KEY

DUKA = str(Path(sys.executable).parent / "duka")
START_TIMEOUT = 30.0


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


class DukaProcess:
    def __init__(self, workdir: Path, toml: str = "", **env: str) -> None:
        self.workdir = workdir
        self.port = free_port()
        self.database = workdir / "duka.sqlite3"
        self.log_path = workdir / "duka.log"
        (workdir / "config.toml").write_text(toml)
        clean = {
            name: value
            for name, value in os.environ.items()
            if not name.startswith(("DUKA_", "MPESA_", "TELEGRAM_", "WHATSAPP_"))
        }
        self.env = clean | {
            "DUKA_CONFIG": str(workdir / "config.toml"),
            "DUKA_DATABASE_URL": f"sqlite+aiosqlite:///{self.database}",
            "DUKA_HTTP_HOST": "127.0.0.1",
            "DUKA_HTTP_PORT": str(self.port),
            "DUKA_DATA_KEY": DATA_KEY,
            "MPESA_ENVIRONMENT": "simulator",
            **env,
        }
        self.process: subprocess.Popen[bytes] | None = None
        self.starts = 0

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    async def start(self, ready_path: str = "/healthz") -> None:
        """Start (or restart) and return once ``ready_path`` answers 200."""
        assert self.process is None or self.process.poll() is not None, "already running"
        self.starts += 1
        with self.log_path.open("ab") as log:
            log.write(f"--- start {self.starts} ---\n".encode())
            log.flush()
            # Popen returns at once (no waiting); its handle suits kill() from sync teardown.
            self.process = subprocess.Popen(  # noqa: S603, ASYNC220 (our own command)
                [DUKA, "--log-level", "info", "serve"],
                cwd=self.workdir,
                env=self.env,
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        deadline = time.monotonic() + START_TIMEOUT
        async with aiohttp.ClientSession() as session:
            while True:
                if self.process.poll() is not None:
                    raise AssertionError(
                        f"duka serve exited {self.process.returncode}:\n{self.log()}"
                    )
                with contextlib.suppress(aiohttp.ClientError):
                    async with session.get(self.url + ready_path) as response:
                        if response.status == 200:
                            return
                if time.monotonic() > deadline:
                    raise AssertionError(
                        f"duka serve not ready in {START_TIMEOUT} s:\n{self.log()}"
                    )
                await asyncio.sleep(0.05)

    def kill(self) -> None:
        """SIGKILL: no shutdown code runs, as when the machine or the OOM killer stops it."""
        assert self.process is not None
        self.process.send_signal(signal.SIGKILL)
        self.process.wait()

    async def terminate(self, timeout: float = 10.0) -> tuple[int, float]:  # noqa: ASYNC109
        """SIGTERM; (exit code, seconds it took). Killed, and the test fails, after ``timeout``."""
        assert self.process is not None
        started = time.monotonic()
        self.process.send_signal(signal.SIGTERM)
        while self.process.poll() is None:
            if time.monotonic() - started > timeout:
                self.kill()
                raise AssertionError(f"duka serve ignored SIGTERM for {timeout} s:\n{self.log()}")
            await asyncio.sleep(0.02)
        return self.process.returncode, time.monotonic() - started

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")[-5000:]

    def stop_quietly(self) -> None:
        """For teardown: whatever state it is in, it is not running afterwards."""
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait()
