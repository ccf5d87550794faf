"""A per-chat flood gate: a chat sending more than ``limit`` events in ``window`` seconds
is told once to slow down, and its further events are ignored until it does.

In memory, per process: a flood is a burst, and the worst a restart does is forget it.
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable, Hashable
from enum import Enum


class Verdict(Enum):
    ADMIT = "admit"
    WARN = "warn"  # the first event over the limit: answer it with "slow down"
    DROP = "drop"  # the rest of the flood: no answer at all


class FloodGate:
    def __init__(
        self,
        limit: int = 20,
        window_seconds: float = 10.0,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self._limit = limit
        self._window = window_seconds
        self._monotonic = monotonic
        self._seen: dict[Hashable, deque[float]] = {}  # admitted events' times, per chat
        self._warned: set[Hashable] = set()

    def admit(self, chat: Hashable) -> Verdict:
        now = self._monotonic()
        times = self._seen.setdefault(chat, deque())
        while times and times[0] <= now - self._window:
            times.popleft()
        if len(times) < self._limit:
            times.append(now)
            self._warned.discard(chat)
            self._forget_idle(now)
            return Verdict.ADMIT
        if chat in self._warned:
            return Verdict.DROP
        self._warned.add(chat)
        return Verdict.WARN

    def _forget_idle(self, now: float) -> None:
        """Keep the table as small as the set of chats active right now."""
        if len(self._seen) < 1024:
            return
        for chat in [c for c, t in self._seen.items() if not t or t[-1] <= now - self._window]:
            del self._seen[chat]
            self._warned.discard(chat)
