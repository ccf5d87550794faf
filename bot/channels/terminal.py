"""A chat in the terminal, for ``duka demo``: you are the customer; the merchant's
notifications are printed too. Buttons are numbered; typing a number presses one.
``typed_lines`` reads what the customer types."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import os
import sys
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Protocol

from bot.channels.base import Notice
from bot.chat.model import Button, Document, Reply
from bot.texts import say

if TYPE_CHECKING:
    from prompt_toolkit import PromptSession

MERCHANT_CHAT = "merchant"
EXPORTS = Path("var") / "exports"  # where files sent in the terminal chat are saved


class TerminalChannel:
    name = "terminal"

    def __init__(self, show: Callable[[str], None] = print, files: Path = EXPORTS) -> None:
        self._show = show
        self._files = files  # a terminal cannot show a file: it is saved here, its path shown
        self._ids = itertools.count(1)
        self.buttons: dict[str, list[Button]] = {}  # chat -> buttons of its latest message
        self.messages: dict[str, list[str]] = {}  # chat -> every text shown, in order

    async def notify(self, chat_id: str, notice: Notice, *, replace: str | None = None) -> str:
        """Outbox messages go out like any reply: no window limits what we may send."""
        return await self.send(chat_id, notice.reply, replace=replace)

    async def send(self, chat_id: str, reply: Reply, *, replace: str | None = None) -> str:
        lines = [f"[shop → {chat_id}] {reply.text}"]
        if reply.document is not None:
            lines.append(await self._saved(reply.document))
        buttons = [button for row in reply.buttons for button in row]
        if buttons:
            self.buttons[chat_id] = buttons
            lines += [f"    [{n}] {b.label}" for n, b in enumerate(buttons, start=1)]
        if reply.ask_contact:
            lines.append(f"    [share] {reply.ask_contact}")
        if reply.ask_location:
            lines.append(f"    [location] {reply.ask_location}")
        self.messages.setdefault(chat_id, []).append(reply.text)
        self._show("\n".join(lines))
        return replace or str(next(self._ids))

    async def _saved(self, document: Document) -> str:
        """The line that shows where the file was saved, or why it was not."""
        # Only the name: a file never lands outside the directory, whatever it is called.
        path = self._files / Path(document.filename).name
        try:
            await asyncio.to_thread(_write, path, document.content)
        except OSError as exc:
            why = f"{path} cannot be written ({exc.strerror})"
            return "    " + say("en", "m_file_not_sent", filename=document.filename, why=why)
        return f"    [file] {path}"

    def button(self, chat_id: str, choice: str) -> Button | None:
        """The button a typed number, or a piece of a label, points at."""
        buttons = self.buttons.get(chat_id, [])
        if choice.isdigit() and 1 <= int(choice) <= len(buttons):
            return buttons[int(choice) - 1]
        matches = [b for b in buttons if choice.lower() in b.label.lower()]
        return matches[0] if matches else None


def _write(path: Path, content: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(content)


class LineReader(Protocol):
    async def read_line(self) -> str:
        """The next line typed; ``EOFError`` at the end of the input."""
        ...


@contextlib.contextmanager
def typed_lines(prompt: str = "> ") -> Iterator[LineReader]:
    """What the user types, a line at a time, while the chat keeps printing.

    On a terminal, prompt_toolkit draws the prompt and ``patch_stdout`` prints every message
    above it, so a message that arrives on its own ("Paid!") leaves the prompt, and whatever
    was half typed, intact below it; Ctrl-C there raises ``KeyboardInterrupt``. Anywhere else
    (a pipe, a file, CI) the lines are read plainly, with no prompt and no terminal needed.
    """
    if not (sys.stdin.isatty() and sys.stdout.isatty()):
        yield _PlainLines(sys.stdin.fileno())
        return
    # Imported here: only an interactive demo on a terminal needs it, not ``duka serve``.
    from prompt_toolkit import PromptSession
    from prompt_toolkit.patch_stdout import patch_stdout

    with patch_stdout():
        yield _Prompted(PromptSession(prompt))


class _Prompted:
    def __init__(self, session: PromptSession[str]) -> None:
        self._session = session

    async def read_line(self) -> str:
        return await self._session.prompt_async()


class _PlainLines:
    """Lines from a file descriptor that is not a terminal.

    A daemon thread does the blocking reads so that leaving the demo never waits for the
    next line (the event loop's own executor would: its threads are joined at exit). It reads
    with ``os.read``, not ``sys.stdin``, so that it holds no lock the interpreter needs when
    it shuts down.
    """

    def __init__(self, fd: int) -> None:
        self._fd = fd
        self._lines: asyncio.Queue[str | None] | None = None

    async def read_line(self) -> str:
        if self._lines is None:
            self._lines = asyncio.Queue()
            reader = threading.Thread(
                target=self._read,
                args=(asyncio.get_running_loop(), self._lines),
                name="terminal-lines",
                daemon=True,
            )
            reader.start()
        line = await self._lines.get()
        if line is None:
            self._lines.put_nowait(None)  # stays at the end for any later call
            raise EOFError
        return line

    def _read(self, loop: asyncio.AbstractEventLoop, lines: asyncio.Queue[str | None]) -> None:
        pending = b""
        while chunk := _read_some(self._fd):
            *complete, pending = (pending + chunk).split(b"\n")
            for line in complete:
                if not _hand_over(loop, lines, line.decode(errors="replace")):
                    return
        if pending:
            _hand_over(loop, lines, pending.decode(errors="replace"))
        _hand_over(loop, lines, None)


def _read_some(fd: int) -> bytes:
    """Up to 4 KiB; nothing at the end of the input, or when it can no longer be read."""
    try:
        return os.read(fd, 4096)
    except OSError:  # e.g. EIO: the terminal that fed the pipe went away
        return b""


def _hand_over(
    loop: asyncio.AbstractEventLoop, lines: asyncio.Queue[str | None], line: str | None
) -> bool:
    """False once the loop is closed: the demo has ended and nobody reads any more."""
    try:
        loop.call_soon_threadsafe(lines.put_nowait, line)
    except RuntimeError:
        return False
    return True
