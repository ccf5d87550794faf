"""The README's first command: ``duka demo --script`` plays both customers to the end."""

from __future__ import annotations

from bot.demo import run_demo


async def test_scripted_demo_ends_with_both_orders_paid_and_told() -> None:
    lines: list[str] = []
    assert await run_demo(lines.append, script=True, callback_delay_seconds=0.05)
    transcript = "\n".join(lines)
    assert transcript.count("[shop → wanjiru] Paid! KES 270") == 1
    assert "did not go through. The request was cancelled on your phone." in transcript
    assert transcript.count("[shop → otieno] Paid! KES 65") == 1
    assert transcript.count("[shop → merchant] New paid order") == 2
    assert transcript.endswith("-> OK")
