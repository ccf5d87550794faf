"""The README's first command: ``duka demo --script`` plays every customer to the end."""

from __future__ import annotations

from bot.demo import run_demo


async def test_scripted_demo_ends_with_every_order_paid_and_told() -> None:
    lines: list[str] = []
    assert await run_demo(lines.append, script=True, callback_delay_seconds=0.05)
    transcript = "\n".join(lines)
    assert transcript.count("[shop → wanjiru] Paid! KES 270") == 1
    assert "did not go through. The request was cancelled on your phone." in transcript
    assert transcript.count("[shop → otieno] Paid! KES 65") == 1
    # Kamau's phone never answers; he pays by Paybill, and the confirmation pays the order.
    assert "Your phone did not answer the M-Pesa request in time." in transcript
    assert "Lipa na M-Pesa → Paybill 174379 → Account DK-" in transcript
    assert transcript.count("[shop → kamau] Paid! KES 250") == 1
    assert transcript.count("[shop → merchant] New paid order") == 3
    assert transcript.endswith("-> OK")
