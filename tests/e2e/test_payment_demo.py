"""The README's first command: ``duka demo --script`` plays a day of the shop to the end."""

from __future__ import annotations

from bot.demo import run_demo


async def test_scripted_demo_ends_with_every_order_paid_and_told() -> None:
    lines: list[str] = []
    assert await run_demo(lines.append, script=True, callback_delay_seconds=0.05)
    transcript = "\n".join(lines)
    # Wanjiru's delivery to the CBD: KES 270 of goods and the zone's KES 100, in one payment.
    assert "🚚 Delivery to CBD (KES 100): Kencom House, Moi Avenue, 3rd floor." in transcript
    assert transcript.count("[shop → wanjiru] Paid! KES 370") == 1
    assert "did not go through. The request was cancelled on your phone." in transcript
    assert transcript.count("[shop → otieno] Paid! KES 65") == 1
    # Kamau's phone never answers; he pays by Paybill, and the confirmation pays the order.
    assert "Your phone did not answer the M-Pesa request in time." in transcript
    assert "Lipa na M-Pesa → Paybill 174379 → Account DK-" in transcript
    assert transcript.count("[shop → kamau] Paid! KES 250") == 1
    # The last tray of mandazi: Achieng's order holds it, Baraka is told it ran out.
    assert "[shop → baraka] Sorry, Mandazi (tray of 12) ran out while you shopped" in transcript
    assert transcript.count("[shop → achieng] Paid! KES 120") == 1
    assert transcript.count("[shop → merchant] New paid order") == 4
    # The merchant moves the delivery on from the chat; Wanjiru hears each step.
    assert "has been delivered. Thank you for shopping with us!" in transcript
    assert "(Nairobi time): 4 orders, KES 805." in transcript  # /report: 370+65+250+120
    assert transcript.endswith("-> OK")
