"""``duka demo`` in a terminal: the real command as a subprocess, under a pseudo-terminal
(prompt_toolkit's path) or with pipes (CI's path).

Every run gets its own ``TMPDIR`` (to see that the demo's temporary directory is gone)
and its own log file; nothing is written to the real home directory.
"""

from __future__ import annotations

import fcntl
import os
import pty
import re
import select
import signal
import struct
import subprocess
import sys
import tempfile
import termios
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from bot import demo as demo_command
from bot.demo import default_log_file, run_demo
from payments.simulator.rules import RULES

ROOT = Path(__file__).resolve().parents[2]
TIMEOUT = 30.0  # generous: a slow CI machine must not fail these
EXIT_SECONDS = 10.0  # "at once": the old demo waited for Enter after Ctrl-C, forever
ANSI = re.compile(rb"\x1b\[[0-9;?]*[A-Za-z]|\x08")
LOG_RECORD = re.compile(r"\b(DEBUG|INFO|WARNING|ERROR|CRITICAL)\b \w[\w.]*: ")


@dataclass
class Demo:
    """A running ``python -m bot demo``: everything it printed, read as it comes."""

    pid: int
    fd: int
    tmpdir: Path
    log_file: Path
    output: bytes = b""
    status: int | None = None

    def read_until(self, text: str, timeout: float = TIMEOUT) -> str:
        """The output so far (ANSI codes removed), once it contains ``text``."""
        deadline = time.monotonic() + timeout
        while text not in self.screen():
            if not self._read(deadline):
                pytest.fail(f"the demo never printed {text!r}; it printed:\n{self.screen()}")
        return self.screen()

    def read_until_match(self, pattern: str, after: str, timeout: float = TIMEOUT) -> str:
        """The output from the last ``after`` on, once ``pattern`` matches it."""
        deadline = time.monotonic() + timeout
        while not re.search(pattern, tail := self.screen()[self.screen().rindex(after) :]):
            if not self._read(deadline):
                pytest.fail(f"no {pattern!r} after {after!r}; the demo printed:\n{self.screen()}")
        return tail

    def type(self, line: str, then: str) -> None:
        """Types ``line`` and Enter, then waits for the shop's answer containing ``then``."""
        already = self.screen().count(then)
        os.write(self.fd, line.encode() + b"\r")
        deadline = time.monotonic() + TIMEOUT
        while self.screen().count(then) <= already:
            if not self._read(deadline):
                pytest.fail(f"after {line!r}, no {then!r}; the demo printed:\n{self.screen()}")

    def exit_code(self, timeout: float = EXIT_SECONDS) -> int:
        """The exit code, reading the rest of the output; fails if it takes ``timeout``."""
        deadline = time.monotonic() + timeout
        while self.status is None:
            pid, status = os.waitpid(self.pid, os.WNOHANG)
            if pid:
                self.status = os.waitstatus_to_exitcode(status)
            elif time.monotonic() > deadline:
                os.kill(self.pid, signal.SIGKILL)
                os.waitpid(self.pid, 0)
                pytest.fail(f"the demo did not exit within {timeout}s:\n{self.screen()}")
            elif not self._read(time.monotonic() + 0.1):
                time.sleep(0.05)  # the output has ended: poll for the exit
        while self._read(time.monotonic() + 1.0):
            pass
        return self.status

    def screen(self) -> str:
        return ANSI.sub(b"", self.output).decode(errors="replace").replace("\r\n", "\n")

    def _read(self, deadline: float) -> bool:
        """False when nothing more came before ``deadline`` or the output has ended."""
        ready, _, _ = select.select([self.fd], [], [], max(0.0, deadline - time.monotonic()))
        if not ready:
            return False
        try:
            chunk = os.read(self.fd, 65536)
        except OSError:  # EIO: the pseudo-terminal's other side has closed
            return False
        self.output += chunk
        return bool(chunk)


def _environment(tmp_path: Path) -> dict[str, str]:
    tmpdir = tmp_path / "tmp"
    tmpdir.mkdir()
    return {
        **os.environ,
        "TMPDIR": str(tmpdir),
        "XDG_STATE_HOME": str(tmp_path / "state"),
        # No terminal emulator answers prompt_toolkit's cursor position requests here.
        "PROMPT_TOOLKIT_NO_CPR": "1",
        "TERM": "xterm",
    }


def _demo_args(log_file: Path, *extra: str) -> list[str]:
    return [sys.executable, "-m", "bot", "demo", "--log-file", str(log_file), *extra]


@pytest.fixture
def demo_in_terminal(tmp_path: Path) -> Iterator[Demo]:
    """``duka demo`` under a pseudo-terminal (80x24) whose controlling terminal it is."""
    env = _environment(tmp_path)
    log_file = tmp_path / "demo.log"
    pid, fd = pty.fork()
    if pid == 0:  # the child: become the demo at once
        try:
            os.chdir(ROOT)
            args = _demo_args(log_file, "--callback-delay", "0.2")
            os.execve(sys.executable, args, env)  # noqa: S606 (our own interpreter)
        finally:
            os._exit(127)
    fcntl.ioctl(fd, termios.TIOCSWINSZ, struct.pack("HHHH", 24, 80, 0, 0))
    demo = Demo(pid, fd, Path(env["TMPDIR"]), log_file)
    yield demo
    if demo.status is None:
        os.kill(pid, signal.SIGKILL)
        os.waitpid(pid, 0)
    os.close(fd)


@pytest.fixture
def demo_in_pipes(tmp_path: Path) -> Iterator[tuple[Demo, subprocess.Popen[bytes]]]:
    """``duka demo`` with pipes for stdin and stdout (stderr into stdout): no terminal, and
    no --log-file: the log goes to ``$XDG_STATE_HOME/duka/demo.log``."""
    env = _environment(tmp_path)
    log_file = tmp_path / "state" / "duka" / "demo.log"
    process = subprocess.Popen(
        [sys.executable, "-m", "bot", "demo"],
        cwd=ROOT,
        env=env,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    assert process.stdout is not None
    demo = Demo(process.pid, process.stdout.fileno(), Path(env["TMPDIR"]), log_file)
    yield demo, process
    if demo.status is None:
        process.kill()
    process.wait()  # also when exit_code reaped it: Popen then just notes it
    process.stdout.close()
    if process.stdin is not None:
        process.stdin.close()


def _assert_ended_cleanly(screen: str, tmpdir: Path, log_file: Path) -> None:
    """No traceback and no log record in the output, the log named last, TMPDIR empty."""
    assert "Traceback" not in screen
    assert not LOG_RECORD.search(screen), screen
    assert screen.rstrip().endswith(f"The log of this run is in {log_file}")
    assert os.listdir(tmpdir) == []  # the demo's temporary directory is gone
    log = log_file.read_text()
    assert " INFO " in log  # the records went to the file instead of the chat
    assert "Traceback" not in log
    assert " ERROR " not in log


def test_ctrl_c_at_the_prompt_exits_at_once_with_130(demo_in_terminal: Demo) -> None:
    """Ctrl-C at the prompt ends the demo (130, as a shell reports Ctrl-C), with no
    traceback, and its temporary directory removed."""
    demo = demo_in_terminal
    demo.read_until("[5] Cart")
    demo.type("Vegetables", then="Sukuma wiki")
    os.write(demo.fd, b"\x03")
    assert demo.exit_code() == 130
    assert "Stopped (Ctrl-C)." in demo.screen()
    _assert_ended_cleanly(demo.screen(), demo.tmpdir, demo.log_file)


def test_prompt_is_redrawn_after_a_message_that_arrives_on_its_own(
    demo_in_terminal: Demo,
) -> None:
    """ "Paid!" comes from the callback while the customer is at the prompt: it is printed
    above the prompt, and the prompt is drawn again below it."""
    demo = demo_in_terminal
    demo.read_until("[5] Cart")
    demo.type("Vegetables", then="Sukuma wiki")
    demo.type("Sukuma", then="Add to cart")
    demo.type("Add to cart", then="Checkout")
    demo.type("Checkout", then="Confirm order")
    demo.type("Confirm order", then="Pick up")
    demo.type("Pick up", then="Share my number")
    demo.type("share", then="Check your phone")
    demo.read_until("Paid!")
    demo.read_until("New paid order")  # both arrive on their own
    # The messages that arrived on their own are followed by the prompt, drawn again (the
    # redraw may come once for both when they arrive together).
    demo.read_until_match(r"Paid! KES 30 [^\n]*\n(?:[^>\n]*\n)*>", after="Paid!")
    os.write(demo.fd, b"quit\r")
    assert demo.exit_code() == 0
    _assert_ended_cleanly(demo.screen(), demo.tmpdir, demo.log_file)


def test_closing_the_terminal_removes_the_temporary_directory(demo_in_terminal: Demo) -> None:
    """The terminal window closing (SIGHUP) ends the demo through the same cleanup."""
    demo = demo_in_terminal
    demo.read_until("[5] Cart")
    os.close(demo.fd)
    demo.fd = os.open(os.devnull, os.O_RDONLY)  # for exit_code's reads and the fixture
    assert demo.exit_code() == 128 + signal.SIGHUP
    assert os.listdir(demo.tmpdir) == []


def test_ctrl_c_without_a_terminal_exits_at_once_with_130(
    demo_in_pipes: tuple[Demo, subprocess.Popen[bytes]],
) -> None:
    """Without a terminal (no prompt_toolkit), SIGINT while waiting for a line still ends
    the demo at once: no thread is left blocked on reading the next line."""
    demo, process = demo_in_pipes
    demo.read_until("[5] Cart")
    process.send_signal(signal.SIGINT)
    assert demo.exit_code() == 130
    _assert_ended_cleanly(demo.screen(), demo.tmpdir, demo.log_file)


def test_banner_lists_every_simulator_rule(
    demo_in_pipes: tuple[Demo, subprocess.Popen[bytes]],
) -> None:
    """The rules are printed from payments.simulator.rules, so none can be missing."""
    demo, process = demo_in_pipes
    assert process.stdin is not None
    process.stdin.write(b"quit\n")
    process.stdin.flush()
    assert demo.exit_code() == 0
    screen = demo.screen()
    for rule in RULES:
        assert f"...{rule.suffix}  {rule.summary}" in screen
    assert "other   success" in screen
    _assert_ended_cleanly(demo.screen(), demo.tmpdir, demo.log_file)


def test_scripted_demo_prints_no_log_lines_and_names_the_log_file(tmp_path: Path) -> None:
    """``duka demo --script`` without a terminal (as in CI): exit 0, a transcript without
    log records, the log file named at the end, nothing left in TMPDIR."""
    log_file = tmp_path / "demo.log"
    done = subprocess.run(  # noqa: S603 (our own interpreter and arguments)
        _demo_args(log_file, "--script", "--callback-delay", "0.05"),
        cwd=ROOT,
        env=_environment(tmp_path),
        stdin=subprocess.DEVNULL,
        capture_output=True,
        timeout=120,
        check=False,
    )
    transcript = done.stdout.decode()
    assert done.returncode == 0, transcript + done.stderr.decode()
    assert done.stderr == b""
    assert "-> OK" in transcript
    _assert_ended_cleanly(transcript, tmp_path / "tmp", log_file)
    assert " WARNING bot.config: simulator: made a data key" in log_file.read_text()


def test_log_file_defaults_to_the_state_directory(monkeypatch: pytest.MonkeyPatch) -> None:
    """$XDG_STATE_HOME/duka/demo.log, else ~/.local/state/duka/demo.log: never in TMPDIR."""
    monkeypatch.setenv("XDG_STATE_HOME", "/somewhere/state")
    assert default_log_file() == Path("/somewhere/state/duka/demo.log")
    monkeypatch.delenv("XDG_STATE_HOME")
    monkeypatch.setenv("HOME", "/home/njeri")
    assert default_log_file() == Path("/home/njeri/.local/state/duka/demo.log")


def test_log_file_that_cannot_be_written_is_refused_with_the_fix(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """An unwritable --log-file stops the demo before it starts (exit 2), saying why."""
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    code = demo_command.main(
        script=True, callback_delay_seconds=0.05, log_file=blocker / "demo.log", log_level="INFO"
    )
    assert code == 2
    assert "choose --log-file PATH" in capsys.readouterr().err


async def test_temporary_directory_is_removed_when_the_demo_fails(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An exception in the middle of the demo still removes its temporary directory."""
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))

    def say(text: str) -> None:
        if "--- 2." in text:
            raise RuntimeError("the terminal broke")

    with pytest.raises(RuntimeError, match="the terminal broke"):
        await run_demo(say, script=True, callback_delay_seconds=0.05)
    assert os.listdir(tmp_path) == []
