"""What one ``bench.chat`` run measured, and the lines and tables it prints.

Percentiles are nearest-rank (``bench.loadgen.percentile``), over every action of every
customer in the run. "CPU per answer" is the bot process's CPU seconds (user + system, all
threads) from the first action until the last customer finished, divided by the actions
answered: the same 8 per customer for both bots, so the Duka ÷ floor ratio compares the
cost of the same work as the customers see it (Duka's includes taking the payment: the
push, its embedded simulator, the callback and the paid message).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field

from bench.chat_customers import DUKA_SCRIPT
from bench.loadgen import percentile


@dataclass
class RunResult:
    kind: str  # "floor" | "duka"
    n: int
    rtt_ms: int
    wall: float = math.nan  # first action -> last customer done
    latencies: list[float] = field(default_factory=list)  # seconds, every action
    acks: list[float] = field(default_factory=list)  # press -> answerCallbackQuery
    unacknowledged: int = 0
    prompt_to_paid: list[float] = field(default_factory=list)
    callback_to_paid: list[float] = field(default_factory=list)
    refusals: int = 0  # 429s the fake answered, any method
    refusals_after_first_second: int = 0
    message_calls: int = 0  # sends and edits into customers' chats, refused ones included
    cpu_seconds: float = math.nan
    loop_cpu_seconds: float = math.nan  # the main thread's share: the event loop
    rss_idle_mb: float = math.nan
    rss_peak_mb: float = math.nan
    paid_once: int = 0
    paid_twice: int = 0
    errors: list[str] = field(default_factory=list)
    client_cpu: float = math.nan  # this process (fake + customers): CPU s / wall s
    no_merchant_lines: int = 0  # expected: the bench shop has no merchant chat
    merchant_messages: int | None = None  # with --merchant: delivered by the run's end
    log_warnings: int = 0
    log_samples: list[str] = field(default_factory=list)
    profile: str = ""  # with --profile: where Duka's event loop spent its time

    @property
    def answers(self) -> int:
        return len(self.latencies)

    @property
    def cpu_ms_per_answer(self) -> float:
        return self.cpu_seconds / self.answers * 1000 if self.answers else math.nan

    @property
    def ok(self) -> bool:
        """Every action answered, every button acknowledged; for Duka one "Paid!" each."""
        if self.errors or self.unacknowledged or self.answers != self.n * len(DUKA_SCRIPT):
            return False
        return self.kind == "floor" or (self.paid_once == self.n and not self.paid_twice)


def _pair(values: Sequence[float], digits: int = 2) -> str:
    ordered = sorted(values)
    if not ordered:
        return "-"
    return f"{percentile(ordered, 50):.{digits}f} / {percentile(ordered, 99):.{digits}f}"


def _p99(values: Sequence[float], digits: int = 2) -> str:
    return f"{percentile(sorted(values), 99):.{digits}f}" if values else "-"


def _ratio(duka: RunResult, floor: RunResult) -> float:
    return duka.cpu_ms_per_answer / floor.cpu_ms_per_answer


def line(result: RunResult) -> str:
    """One run, as it finishes."""
    paid = ""
    if result.kind == "duka":
        ordered = sorted(result.prompt_to_paid)
        if ordered:
            paid += f"  prompt->paid {_pair(ordered)} / max {ordered[-1]:.2f} s"
        paid += f"  callback->paid p99 {_p99(result.callback_to_paid)} s"
        paid += f"  paid once {result.paid_once}/{result.n}"
        paid += f" (more than once: {result.paid_twice})" if result.paid_twice else ""
        if result.merchant_messages is not None:
            paid += f"  merchant notes {result.merchant_messages}/{result.n} by the end"
    return (
        f"N={result.n:<3} RTT {result.rtt_ms:>3} ms {result.kind:5} {result.wall:6.1f} s  "
        f"action p50/p99 {_pair(result.latencies)} s  ack {_pair(result.acks)} s  "
        f"429s {result.refusals} ({result.refusals_after_first_second} after 1 s)  "
        f"msgs/order {result.message_calls / result.n:.1f}  "
        f"cpu {result.cpu_seconds:.1f} s (event loop {result.loop_cpu_seconds:.1f}) = "
        f"{result.cpu_ms_per_answer:.1f} ms/answer  "
        f"rss {result.rss_idle_mb:.0f}/{result.rss_peak_mb:.0f} MB  "
        f"bench process cpu {result.client_cpu:.0%}{paid}"
        + ("" if result.ok else "  ** CHECK FAILED **")
    )


def table(pairs: Sequence[tuple[RunResult, RunResult]]) -> str:
    """Two markdown tables, one row per (N, RTT): latencies, then costs and checks."""
    rows = [
        "| N | RTT | action p50 / p99, floor | action p50 / p99, Duka | ack p50 / p99, floor "
        "| ack p50 / p99, Duka | prompt→paid p50 / p99 / max | callback→paid p99 |",
        "|---:|---:|---|---|---|---|---|---|",
    ]
    for floor, duka in pairs:
        ordered = sorted(duka.prompt_to_paid)
        top = f" / {ordered[-1]:.1f}" if ordered else ""
        rows.append(
            f"| {duka.n} | {duka.rtt_ms} ms | {_pair(floor.latencies)} s "
            f"| {_pair(duka.latencies)} s | {_pair(floor.acks)} s | {_pair(duka.acks)} s "
            f"| {_pair(ordered, digits=1)}{top} s | {_p99(duka.callback_to_paid, 1)} s |"
        )
    rows += [
        "",
        "| N | RTT | 429s floor | 429s Duka (after 1st s) | msgs/order floor / Duka "
        "| CPU ms/answer floor / Duka | Duka ÷ floor | RSS idle / peak, floor "
        "| RSS idle / peak, Duka | paid once |",
        "|---:|---:|---:|---:|---|---|---:|---|---|---|",
    ]
    for floor, duka in pairs:
        rows.append(
            f"| {duka.n} | {duka.rtt_ms} ms | {floor.refusals} "
            f"| {duka.refusals} ({duka.refusals_after_first_second}) "
            f"| {floor.message_calls / floor.n:.1f} / {duka.message_calls / duka.n:.1f} "
            f"| {floor.cpu_ms_per_answer:.1f} / {duka.cpu_ms_per_answer:.1f} "
            f"| {_ratio(duka, floor):.1f}× "
            f"| {floor.rss_idle_mb:.0f} / {floor.rss_peak_mb:.0f} MB "
            f"| {duka.rss_idle_mb:.0f} / {duka.rss_peak_mb:.0f} MB "
            f"| {duka.paid_once}/{duka.n}{'' if duka.ok and floor.ok else ' FAILED'} |"
        )
    return "\n".join(rows)


def targets(pairs: Sequence[tuple[RunResult, RunResult]]) -> list[str]:
    """The issue's targets, for the runs with N >= 300 (callback->paid: at 200 ms RTT)."""
    lines = []
    for floor, duka in pairs:
        if duka.n < 300:
            continue
        where = f"N={duka.n} RTT {duka.rtt_ms} ms"
        lines.append(f"{where}: button ack p99 {_p99(duka.acks)} s (target <= 0.5 s)")
        if duka.rtt_ms == 200:
            lines.append(
                f"{where}: callback->paid p99 {_p99(duka.callback_to_paid, 1)} s (target <= 15 s)"
            )
        lines.append(
            f"{where}: 429s after the first second {duka.refusals_after_first_second} "
            f"(target 0); CPU per answer {_ratio(duka, floor):.1f}x the floor (target <= 2x)"
        )
    return lines
