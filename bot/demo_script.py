"""``duka demo --script``: a day of the shop, played through the real server, simulator
and database. Four customers pay (by delivery and by pickup; one after a cancelled
prompt, one by Paybill when the prompt never shows), two race for the last tray of
mandazi, and the merchant moves the delivery on and reads the day's report.

It succeeds only when every paying order ends paid with a receipt, every message was
delivered, the delivery reached "delivered", and the race oversold nothing.
"""

from __future__ import annotations

import re

from sqlalchemy import Connection, select

from bot.channels.terminal import MERCHANT_CHAT, TerminalChannel
from bot.chat.engine import Conversation
from bot.demo_people import (
    DEMO_PHONE,
    Customer,
    DemoFailed,
    Merchant,
    Say,
    pay_by_paybill,
    reference_in,
    wait_for_messages,
)
from bot.merchant import MerchantDesk
from payments.daraja_client import DarajaClient
from payments.outbox import OutboxStatus
from storage.engine import Database
from storage.schema import orders, outbox, payments, products

PAYING_ORDERS = 4
LAST_ITEM = "mandazi"  # the product the race is for: one left in the demo catalog


async def scripted(
    conversation: Conversation,
    terminal: TerminalChannel,
    database: Database,
    daraja: DarajaClient,
    desk: MerchantDesk,
    say: Say,
) -> bool:
    def customer(name: str) -> Customer:
        return Customer(conversation, terminal, name.lower(), name, say)

    merchant = Merchant(desk, terminal, say)
    try:
        say("\n--- 1. Wanjiru orders for delivery to town, and pays ---")
        wanjiru = customer("Wanjiru")
        await wanjiru.types("/start")
        for label in ("Vegetables", "Sukuma", "+", "Add to cart", "Menu", "Staples", "Unga"):
            await wanjiru.presses(label)
        for label in ("Add to cart", "Cart", "Checkout", "Confirm order", "Delivery", "CBD"):
            await wanjiru.presses(label)
        await wanjiru.types("Kencom House, Moi Avenue, 3rd floor")
        await wanjiru.shares_number(DEMO_PHONE)
        delivery = reference_in(await wanjiru.waits_for("Paid!"))

        say("\n--- 2. Otieno's first payment is cancelled on his phone; he tries again ---")
        otieno = customer("Otieno")
        await otieno.types("/start")
        for label in ("Drinks", "Milk", "Add to cart", "Checkout", "Confirm order", "Pick up"):
            await otieno.presses(label)
        await otieno.types("0712 000 011")
        await otieno.presses("Yes, pay")
        await otieno.waits_for("did not go through")
        await otieno.presses("Try again")
        await otieno.waits_for("Paid!")

        say("\n--- 3. Kamau's phone never shows the prompt; he pays by Paybill instead ---")
        kamau = customer("Kamau")
        await kamau.types("/start")
        for label in ("Staples", "Pishori", "Add to cart", "Checkout", "Confirm order", "Pick up"):
            await kamau.presses(label)
        await kamau.types("0712 000 002")
        await kamau.presses("Yes, pay")
        await kamau.waits_for("did not go through")
        await kamau.presses("Pay by Paybill")
        instructions = re.search(r"Account (DK-\w+) → KES ([\d,]+)", kamau.last_message())
        if instructions is None:
            raise DemoFailed("Kamau got no Paybill instructions")
        amount = int(instructions.group(2).replace(",", ""))
        await pay_by_paybill(daraja, say, "Kamau", "0712 000 002", instructions.group(1), amount)
        await kamau.waits_for("Paid!")

        say("\n--- 4. Achieng and Baraka both want the last tray of mandazi ---")
        achieng, baraka = customer("Achieng"), customer("Baraka")
        for racer in (achieng, baraka):
            await racer.types("mandazi")
            await racer.presses("Mandazi")
            await racer.presses("Add to cart")
            await racer.presses("Checkout")
        await achieng.presses("Confirm order")
        await achieng.presses("Pick up")  # her order is made: the tray is held for her
        await baraka.presses("Confirm order")
        await baraka.waits_for("ran out while you shopped")
        await achieng.types("0712 345 678")
        await achieng.presses("Yes, pay")
        await achieng.waits_for("Paid!")

        say("\n--- 5. The merchant sends Wanjiru's order on its way, and closes the day ---")
        await wait_for_messages(terminal, MERCHANT_CHAT, "New paid order", PAYING_ORDERS)
        for command in ("/ready", "/out", "/delivered"):
            await merchant.types(f"{command} {delivery}")
        await wanjiru.waits_for("has been delivered")
        await merchant.types("/stock")
        await merchant.types("/report")
    except DemoFailed as exc:
        say(f"\nDEMO FAILED: {exc}")
        return False
    return await _check(database, terminal, say)


async def _check(database: Database, terminal: TerminalChannel, say: Say) -> bool:
    paid, receipts, delivered, left = await database.transaction(_outcome)
    merchant_notes = sum("New paid order" in m for m in terminal.messages.get(MERCHANT_CHAT, []))
    ok = (
        paid == receipts == merchant_notes == PAYING_ORDERS
        and delivered
        and left == 0  # the race sold the one tray, once
    )
    say(
        f"\nOrders paid: {paid}/{PAYING_ORDERS}, receipts: {receipts}/{PAYING_ORDERS}, "
        f"all messages delivered: {delivered}, merchant notifications: "
        f"{merchant_notes}/{PAYING_ORDERS}, mandazi left: {left} -> {'OK' if ok else 'NOT OK'}"
    )
    return ok


def _outcome(conn: Connection) -> tuple[int, int, bool, int | None]:
    paid = len(conn.execute(select(orders.c.id).where(orders.c.status == "paid")).all())
    receipts = len(
        conn.execute(
            select(payments.c.id).where(
                payments.c.status == "paid", payments.c.mpesa_receipt.is_not(None)
            )
        ).all()
    )
    undelivered = conn.execute(
        select(outbox.c.id).where(outbox.c.status.in_([OutboxStatus.PENDING, OutboxStatus.FAILED]))
    ).all()
    left = conn.execute(select(products.c.stock).where(products.c.sku == LAST_ITEM)).scalar()
    return paid, receipts, not undelivered, left
