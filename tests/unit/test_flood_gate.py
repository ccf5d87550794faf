"""The per-chat flood gate: answered once when over the limit, then quiet until it calms."""

from __future__ import annotations

from bot.chat.flood import FloodGate, Verdict


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_a_flood_is_told_once_and_then_ignored_until_it_calms() -> None:
    clock = Clock()
    gate = FloodGate(limit=3, window_seconds=10, monotonic=clock)
    verdicts = [gate.admit("chat") for _ in range(6)]
    assert verdicts == [Verdict.ADMIT] * 3 + [Verdict.WARN, Verdict.DROP, Verdict.DROP]
    clock.now += 10.5  # the window has passed
    assert gate.admit("chat") is Verdict.ADMIT
    assert [gate.admit("chat") for _ in range(3)] == [Verdict.ADMIT, Verdict.ADMIT, Verdict.WARN]


def test_one_chats_flood_does_not_limit_another() -> None:
    gate = FloodGate(limit=2, window_seconds=10, monotonic=Clock())
    assert [gate.admit("a") for _ in range(3)][-1] is Verdict.WARN
    assert gate.admit("b") is Verdict.ADMIT


def test_a_steady_pace_is_never_limited() -> None:
    clock = Clock()
    gate = FloodGate(limit=20, window_seconds=10, monotonic=clock)
    for _ in range(200):
        assert gate.admit("chat") is Verdict.ADMIT
        clock.now += 0.6  # under 20 per 10 s
