"""The README's first command: the scripted payment demo ends with both orders paid."""

from __future__ import annotations

from bot.demo import run_demo


async def test_demo_pays_both_orders_and_says_so() -> None:
    lines: list[str] = []
    assert await run_demo(lines.append, callback_delay_seconds=0.05)
    transcript = "\n".join(lines)
    assert transcript.count("OK: order DK-") == 2
    assert "did not go through. The request was cancelled on your phone." in transcript
    assert transcript.count("message to merchant: New paid order") == 2
