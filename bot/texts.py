"""Every customer- and merchant-facing sentence, in one place, in English and Swahili.

Money is always shown as ``KES 1,250``. ``say(language, key, **values)`` picks the
sentence; a key missing in Swahili falls back to English rather than failing.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from types import MappingProxyType
from typing import Any

from payments.result_codes import FailureReason
from storage.orders import OrderItemRecord

LANGUAGES = ("en", "sw")
# The merchant's messages (bot/merchant.py, bot/rendering.py) are always said in English.
MERCHANT_PREFIXES = ("m_", "why_", "unmatched_")


def kes(amount: int) -> str:
    return f"KES {amount:,}"


def item_lines(items: Iterable[OrderItemRecord]) -> str:
    """An order's items, one per line: ``2 × Sukuma wiki = KES 60``."""
    return "\n".join(f"{i.quantity} × {i.name} = {kes(i.line_total)}" for i in items)


def minutes(language: str, count: int) -> str:
    """``8 minutes`` / ``dakika 8``."""
    if language == "sw":
        return f"dakika {count}"
    return f"{count} minute" if count == 1 else f"{count} minutes"


_EN: dict[str, str] = {
    "welcome": "Karibu to {shop}! What would you like today?",
    "choose_category": "Pick a category:",
    "no_products": "The shop has no products listed yet. Please check back later.",
    "category_products": "{category}: pick a product.",
    "product": "{name} — {price}\n{description}\n\nHow many?",
    "quantity": "Quantity: {quantity} ({total})",
    "added": "Added {quantity} × {name}. Your cart: {total}.",
    "product_gone": "Sorry, that product is no longer available.",
    "quantity_cap": "{count} is the most one order can take of {name}.",
    "added_capped": (
        "Added {quantity} × {name}: you now have {count}, the most one order can take. "
        "Your cart: {total}."
    ),
    "nothing_added": (
        "Nothing added: your cart already has {count} × {name}, the most one order can take. "
        "Your cart: {total}."
    ),
    "remove_offer": "Remove {name} from your cart?",
    "sold_out_tag": "sold out",
    "sold_out": "Sorry, {name} is sold out.",
    "stock_left": "Only {left} × {name} left.",
    "added_all_left": "Added {quantity} × {name}: that is all we have. Your cart: {total}.",
    "nothing_added_stock": (
        "Nothing added: your cart already has all {count} × {name} we have. Your cart: {total}."
    ),
    "ran_out": "Sorry, {name} ran out while you shopped: {left} left.",
    "cart_updated": "Your cart is updated: check it and confirm again.",
    "order_ran_out": (
        "Sorry, {name} in order {reference} has run out, so the order cannot be paid now. "
        "Cancel it to get the rest back in your cart."
    ),
    "leave_out_offer": "1 is the fewest you can add. Leave {name} out?",
    "retry_cancelled": (
        "Order {reference} is cancelled, so it cannot be paid. Tap Cart to see your cart, "
        "or Menu to shop."
    ),
    "cart_empty": "Your cart is empty. Tap Menu to pick products.",
    "cart": "Your cart:\n{lines}\n\nTotal: {total}",
    "cart_line": "• {quantity} × {name} @ {price} = {line_total}",
    "summary": "Your order:\n{lines}\n\nTotal: {total}\n\nConfirm to pay with M-Pesa.",
    # Delivery or pickup (bot/chat/handover_steps.py).
    "handover_question": "How would you like to get your order of {total}?",
    "btn_pickup": "🏪 Pick up",
    "btn_delivery": "🚚 Delivery",
    "zone_question": "Where should we deliver? The delivery fee is added to your order of {total}.",
    "address_question": (
        "Delivery to {zone}: {fee}.\n\nSend your location (📎, then Location), or type "
        "your address or a landmark, e.g. “near Kencom stage”."
    ),
    "btn_send_location": "📍 Send my location",
    "address_too_short": (
        "Please write a little more, so the rider can find you, e.g. “Moi Avenue, "
        "opposite Kencom stage”."
    ),
    "address_too_long": "That is long for an address: please keep it under {count} characters.",
    "location_not_needed": "Thanks! A location is only needed when you choose delivery.",
    "pickup_note": "🏪 Pick up at {point}{hours}.",
    "delivery_note": "🚚 Delivery to {zone} ({fee}): {address}.",
    "shared_location": "the location you sent",
    "free": "free",
    "confirm_phone": "Pay {total} from {phone}?",
    "confirm_typed_phone": "Pay {total} from {phone}?",
    "ask_phone": (
        "Which M-Pesa number should pay {total}? Tap the button to share your number, "
        "or type it (like 0712 345 678)."
    ),
    "contact_not_own": (
        "That contact is not your own number. Tap the button to share your own number, "
        "or type the number you want to pay from."
    ),
    "phone_not_a_number": "That is not a phone number. Send it like 0712 345 678.",
    "phone_not_kenyan_mobile": "That is not a Kenyan mobile number. Send it like 0712 345 678.",
    "phone_not_mobile": "That is not a mobile number. M-Pesa needs a line like 0712 345 678.",
    "phone_other_network": (
        "{phone} is in the {network} number range. M-Pesa needs a Safaricom line; if you "
        "moved this number to Safaricom, carry on."
    ),
    "payment_in_progress": (
        "A payment for order {reference} is already waiting for your PIN. Check your phone."
    ),
    "order_not_payable": "Order {reference} is {status}; it cannot be paid now.",
    "over_limit": (
        "M-Pesa takes at most {limit} in one payment; your cart is {total}. "
        "Please remove some items."
    ),
    "category_other": "Other",
    "check_phone": "Check your phone: M-Pesa will ask for your PIN to pay {total} to {shop}.",
    "push_unknown": (
        "We could not confirm that M-Pesa sent the PIN request for {total}. If your phone "
        "shows it, enter your PIN; we will tell you the result here."
    ),
    "payment_refused": "M-Pesa did not start the payment. {reason}",
    "paid": "Paid! {amount} for order {reference}.\nM-Pesa receipt: {receipt}\n{lines}",
    "paid_receipt_pending": "(the receipt number comes by SMS from M-Pesa)",
    "failed": "The payment for order {reference} did not go through. {reason}",
    "under_review": (
        "We received {amount} for order {reference}. The shop is checking it and will contact you."
    ),
    "order_cancelled_to_cart": "Order {reference} is cancelled; its items are back in your cart.",
    "cancel_kept_order": (
        "Stopped. Order {reference} is {status}, so it is not cancelled. See /orders."
    ),
    "cannot_cancel": "Order {reference} cannot be cancelled now.",
    "not_your_order": "That order is not one of yours.",
    "orders": "Your recent orders:\n{lines}",
    "orders_none": "You have no orders yet.",
    "order_line": "• {reference} — {total} — {status}",
    "help": (
        "Tap Menu to see products, add them to your cart and pay with M-Pesa.\n"
        "/start menu  /cart your cart  /orders your orders  /language English/Kiswahili  "
        "/cancel stop what you are doing"
    ),
    "hint": "I did not understand that. Tap Menu to shop, or send /help.",
    "search_results": "Products matching “{typed}”:",
    "search_none": (
        "No product matches “{typed}”. Tap Menu to see them all, or type another word."
    ),
    "quantity_needs_product": (
        "Which product? Type its name with the number (like “2 sukari”), or tap Menu."
    ),
    "only_text": "I can read text and buttons only. Tap Menu to shop, or send /help.",
    "sorry": "Sorry, something went wrong on our side. Please try again in a moment.",
    "cancelled_step": "Stopped. Your cart is kept. Tap Menu to carry on.",
    "choose_language": "Choose your language:",
    "language_set": "Language: English.",
    "status_awaiting_payment": "waiting for payment",
    "status_paid": "paid",
    "status_ready": "paid, ready",
    "status_on_its_way": "paid, on its way",
    "status_delivered": "delivered",
    "status_collected": "collected",
    "progress_ready": "Your order {reference} is ready.",
    "progress_on_its_way": "Your order {reference} is on its way.",
    "progress_delivered": (
        "Your order {reference} has been delivered. Thank you for shopping with us!"
    ),
    "progress_collected": "You collected order {reference}. Thank you for shopping with us!",
    "status_needs_review": "being checked",
    "status_cancelled": "cancelled",
    # A paid order the shop called off (/cancel, /refunded: payments/refunds.py).
    "status_refund_pending": "cancelled by the shop, to be refunded",
    "status_refunded": "cancelled by the shop, refunded",
    "shop_cancelled": (
        "The shop has cancelled your order {reference}: {note}\n"
        "The shop will send your payment of {amount} back to your M-Pesa number."
    ),
    "refund_sent": (
        "The shop has sent your payment of {amount} for order {reference} back to your "
        "M-Pesa number."
    ),
    "another_network": "another network",
    # Buttons (short: WhatsApp allows 20 characters).
    "checking": (
        "Checking your payment of {amount} for order {reference} with M-Pesa. You will get "
        "the result here in a moment; there is no need to pay again."
    ),
    "unconfirmed": (
        "We could not confirm whether your payment of {amount} for order {reference} went "
        "through. If M-Pesa sent you a confirmation SMS, do not pay again: the shop will "
        "check and tell you here. If no SMS came, you can pay again."
    ),
    "paybill": (
        "Pay by Paybill: Lipa na M-Pesa → Paybill {paybill} → Account {reference} → "
        "{amount}. We will tell you here as soon as it arrives."
    ),
    "resolved": "Order {reference}: {outcome}",
    "resolved_paid": "the shop has confirmed your payment. Your order is paid.",
    "resolved_refund": "the shop will refund your payment of {amount}; the order is cancelled.",
    "resolved_cancel": "the shop has cancelled this order.",
    "resolved_note": "Note from the shop: {note}",
    "limit_phone": "Too many payment requests to this number; try again in {wait}.",
    "limit_customer": "You have asked for too many payment requests; try again in {wait}.",
    "limit_rule_limited": (
        "M-Pesa takes one request for the same amount from the same number every two "
        "minutes; try again in {wait}."
    ),
    "too_fast": "You are sending messages very fast. Please wait a few seconds.",
    "btn_paybill": "Pay by Paybill",
    "btn_pay_again": "Pay again",
    "btn_menu": "Menu",
    "btn_cart": "Cart",
    "btn_checkout": "Checkout",
    "btn_add": "Add to cart",
    "btn_back": "Back",
    "btn_empty": "Empty cart",
    "btn_confirm": "Confirm order",
    "btn_edit_cart": "Edit cart",
    "btn_yes": "Yes",
    "btn_yes_pay": "Yes, pay",
    "btn_other_number": "Use another number",
    "btn_share_number": "Share my number",
    "btn_try_again": "Try again",
    "btn_cancel_order": "Cancel order",
    "btn_pay_order": "Pay {reference}",
    "btn_cancel_this_order": "Cancel {reference}",
    "btn_remove": "Remove",
    "btn_keep": "Keep",
    "btn_leave_out": "Leave it out",
    # Payment failure reasons, in plain words.
    f"reason_{FailureReason.CANCELLED}": "The request was cancelled on your phone.",
    f"reason_{FailureReason.NO_ANSWER}": "Your phone did not answer the M-Pesa request in time.",
    f"reason_{FailureReason.WRONG_PIN}": "The M-Pesa PIN was wrong.",
    f"reason_{FailureReason.INSUFFICIENT_FUNDS}": "There was not enough money on M-Pesa.",
    f"reason_{FailureReason.MPESA_BUSY}": "M-Pesa is busy. Please try again in a minute.",
    f"reason_{FailureReason.LIMIT_REACHED}": "This is over your M-Pesa daily limit.",
    f"reason_{FailureReason.PIN_LOCKED}": "Your M-Pesa PIN is locked. Call Safaricom on 100.",
    f"reason_{FailureReason.SHOP_SETUP}": (
        "The shop's M-Pesa setup has a problem; it has been told."
    ),
    f"reason_{FailureReason.UNREACHABLE}": (
        "We could not reach M-Pesa. Please try again in a minute."
    ),
    f"reason_{FailureReason.INVALID_NUMBER}": "M-Pesa did not accept that number.",
    f"reason_{FailureReason.OTHER}": "M-Pesa could not complete the payment.",
    # Merchant.
    "m_paid": (
        "New paid order {reference}: {amount}\n{lines}\nReceipt: {receipt}\n"
        "Customer: {customer} ({phone})"
    ),
    "m_review": (
        "Check order {reference}: {why}. Paid {amount} (order total {total}), receipt "
        "{receipt}, customer {customer} ({phone})."
    ),
    "m_today": "Paid today (Nairobi time): {count} orders, {total}.",
    "m_stock": "Stock, fewest first:\n{lines}",
    "m_stock_line": "• {sku} {name}: {stock}{note}",
    "m_stock_low": " (low: at or under {low})",
    "m_stock_short": " (short: paid for, not in stock)",
    "m_stock_hidden": " (hidden)",
    "m_stock_none": "No product is counted. Count one with /stock SKU N.",
    "m_stock_set": "{name} ({sku}): {stock} left.",
    "m_stock_off": "{name} ({sku}) is no longer counted.",
    "m_stock_usage": (
        "Send /stock for the list, /stock SKU N to set what is left (e.g. /stock unga 20), "
        "or /stock SKU off to stop counting it."
    ),
    "m_stock_unknown": "No product has the sku {sku}. /stock lists the counted ones.",
    "m_price_set": (
        "{name} ({sku}) now costs {price}. Orders already confirmed keep their price. "
        "The catalog file sets prices again at the next start: change it there too."
    ),
    "m_price_usage": "Send /price SKU N to set a price in whole shillings, e.g. /price unga 250.",
    "m_hidden": (
        "{name} ({sku}) is hidden: customers no longer see it, and it leaves their carts. "
        "/show {sku} brings it back."
    ),
    "m_shown": "{name} ({sku}) is on sale again.",
    "m_show_usage": "Send /hide SKU or /show SKU, e.g. /hide sukuma.",
    "m_no_product": "No product has the sku {sku}.",
    "m_report": (
        "Paid {period} (Nairobi time): {count} orders, {total}.\n{products}\nOrders: {progress}."
    ),
    "m_report_product": "• {name}: {quantity} sold, {total}",
    "m_report_none": "No order was paid {period} (Nairobi time).",
    "m_report_usage": (
        "Send /report (today), /report week, /report 2026-12-01 or "
        "/report 2026-12-01..2026-12-07: {why}."
    ),
    # /export: the report's orders as a CSV file in the chat.
    "m_export": (
        "Paid {period} (Nairobi time): {count} orders, {total}. One row per order in {filename}."
    ),
    "m_export_usage": (
        "Send /export (today), /export week, /export 2026-12-01 or "
        "/export 2026-12-01..2026-12-07: {why}."
    ),
    "m_file_not_sent": (
        "The file {filename} was not sent: {why}. Try again later; a shorter period makes a "
        "smaller file."
    ),
    "m_moved": "Order {reference} is now {what}. The customer is told.",
    "m_not_moved": "Not changed: {why}.",
    "m_move_usage": (
        "Send /ready REF, /out REF, /delivered REF or /collected REF, e.g. /ready DK-7KX3M9."
    ),
    # The buttons under a paid order's notification (WhatsApp: at most 20 characters).
    "m_button_ready": "Ready",
    "m_button_on_its_way": "On its way",
    "m_button_delivered": "Delivered",
    "m_button_collected": "Collected",
    "m_paid_waiting": "Paid orders not moved on yet: {count}.",
    "m_paid_by_command": "On its way? Send /out {reference}.",
    "m_low_stock": (
        "Low stock: {name} ({sku}) is down to {left} (your mark: {low}). "
        "Send /stock {sku} N when you restock."
    ),
    # The daily summary at closing time (bot/daily_summary.py); {lines} is the /report.
    "m_daily_summary": "Your daily summary, at closing time:\n{lines}",
    "m_pending": "Waiting for payment:\n{lines}",
    "m_pending_none": "No orders are waiting for payment.",
    "m_order": "Order {reference} — {status} — {total}\n{lines}\nCustomer: {customer}\n"
    "Payment attempts:\n{attempts}",
    "m_attempt": "• {when} {phone} {status} {detail}",
    "m_no_order": "No order {reference}.",
    "m_pickup": "🏪 Pickup: the customer collects it at the shop.",
    "m_delivery": "🚚 Deliver to {zone}: {address}",
    "m_pin_only": "the location shared (see the map)",
    "m_map": "Map: {link}",
    "m_order_usage": "Send /order followed by the reference, e.g. /order DK-7KX3M9.",
    "m_check": (
        "Check order {reference}: M-Pesa never confirmed the attempt to pay {amount} from "
        "{phone} ({customer}). The money may have moved: see /review; /resolve {reference} "
        "paid if it is in your M-Pesa statement."
    ),
    "m_not_confirmed": (
        "Warning, order {reference}: a callback claimed that {amount} was paid from {phone} "
        "({customer}), but M-Pesa does not confirm it ({answer}). The order is NOT paid; "
        "do not hand over goods for it. Someone may be forging payment messages."
    ),
    "m_unmatched": (
        "{amount} received from {phone}, receipt {receipt}, not matched to an order ({why}). "
        "Attach it with /match {receipt} <order>, or /resolve {receipt} refunded|kept."
    ),
    "unmatched_several_attempts_fit": "several payment attempts fit it",
    "unmatched_no_attempt": "no payment attempt of ours fits it",
    "unmatched_no_phone": "M-Pesa sent no phone number with it",
    "unmatched_unknown_account": "Paybill account {account} is no order",
    "unmatched_wrong_amount": "not the total of order {account}",
    "unmatched_order_not_payable": "order {account} was not waiting for payment",
    "m_review_list": "To review:\n{lines}",
    "m_review_none": "Nothing to review: no orders in review and no unmatched money.",
    "m_review_more": "… and {count} more: settle the first ones, then send /review again.",
    "m_review_order": "• {reference} {status} {total}: {detail}",
    "m_review_unmatched": "• {receipt} {amount} from {phone} ({when}), unmatched: {why}",
    "m_review_check": "• {reference} {amount} from {phone} ({when}): never confirmed",
    "m_resolve_usage": (
        "Send /resolve REF paid|refund|cancel [note] for an order, or "
        "/resolve RECEIPT refunded|kept [note] for unmatched money."
    ),
    "m_match_usage": "Send /match RECEIPT REF, e.g. /match QKX1A2B3C4 DK-7KX3M9.",
    "m_done": "Done: {what}.",
    "m_refused": "Not done: {why}",
    "why_amount_mismatch": "the amount paid differs from the total",
    "why_phone_mismatch": "paid from a different phone than the one asked",
    "why_order_already_paid": "the order was already paid (a second payment)",
    "why_order_cancelled": "money arrived for a cancelled order",
    "why_order_under_review": "another payment for an order under review",
    # Calling off a paid order and refunding it (payments/refunds.py).
    "why_order_refunded": "money arrived for an order you cancelled with a refund",
    "m_cancel_usage": (
        "Send /cancel REF reason to call off a paid order and refund it, e.g. "
        "/cancel DK-7KX3M9 out of stock. The customer is told the reason."
    ),
    "m_refunded_usage": (
        "Send /refunded REF [note] once you have sent a cancelled order's money back, e.g. "
        "/refunded DK-7KX3M9 reversal QKX1A2B3C4."
    ),
    "m_review_refund": "• {reference} refund {amount} to {detail}; cancelled {when}: {note}",
    "m_report_refunds": "Refunds to send (any day): {count}, {total} in all; /review lists them.",
    "m_report_called_off": "Cancelled by you after payment, not counted above: {count}, {total}.",
}

_SW: dict[str, str] = {
    # Kenyan Swahili, as a shop assistant would write it. Statuses agree with "agizo"
    # (class 5: li-); buttons stay within WhatsApp's 20 characters.
    "welcome": "Karibu! Hapa ni {shop}. Ungependa kununua nini leo?",
    "choose_category": "Chagua aina ya bidhaa:",
    "no_products": "Duka bado halina bidhaa. Tafadhali rudi baadaye.",
    "category_products": "{category}: chagua bidhaa.",
    "product": "{name} — {price}\n{description}\n\nUnataka ngapi?",
    "quantity": "Idadi: {quantity} ({total})",
    "added": "Umeweka {quantity} × {name} kikapuni. Jumla ya kikapu: {total}.",
    "product_gone": "Samahani, bidhaa hiyo haipatikani tena.",
    "quantity_cap": "Idadi ya juu ya {name} kwa agizo moja ni {count}.",
    "added_capped": (
        "Umeweka {quantity} × {name} kikapuni: sasa una {count}, idadi ya juu kwa agizo moja. "
        "Jumla ya kikapu: {total}."
    ),
    "nothing_added": (
        "Hakuna kilichoongezwa: kikapu chako tayari kina {count} × {name}, idadi ya juu kwa "
        "agizo moja. Jumla ya kikapu: {total}."
    ),
    "remove_offer": "Uondoe {name} kwenye kikapu?",
    "sold_out_tag": "imekwisha",
    "sold_out": "Samahani, {name} imekwisha.",
    "stock_left": "Zimebaki {left} × {name} tu.",
    "added_all_left": (
        "Umeweka {quantity} × {name} kikapuni: ndizo zote tulizo nazo. Jumla ya kikapu: {total}."
    ),
    "nothing_added_stock": (
        "Hakuna kilichoongezwa: kikapu chako tayari kina {count} × {name}, zote tulizo nazo. "
        "Jumla ya kikapu: {total}."
    ),
    "ran_out": "Samahani, {name} imepungua ulipokuwa ukinunua: zimebaki {left}.",
    "cart_updated": "Tumesasisha kikapu chako: kiangalie kisha uthibitishe tena.",
    "order_ran_out": (
        "Samahani, {name} ya agizo {reference} imekwisha, kwa hiyo agizo haliwezi kulipwa "
        "sasa. Ghairi agizo urudishe bidhaa nyingine kikapuni."
    ),
    "leave_out_offer": "Huwezi kuweka chini ya moja. Uache {name}?",
    "retry_cancelled": (
        "Agizo {reference} limeghairiwa, kwa hiyo haliwezi kulipwa. Gusa Kikapu uone kikapu "
        "chako, au Menyu uendelee kununua."
    ),
    "cart_empty": "Kikapu chako hakina kitu. Gusa Menyu uchague bidhaa.",
    "cart": "Kikapu chako:\n{lines}\n\nJumla: {total}",
    "summary": "Agizo lako:\n{lines}\n\nJumla: {total}\n\nThibitisha agizo ili ulipe kwa M-Pesa.",
    "handover_question": "Ungependa kupata agizo lako la {total} vipi?",
    "btn_pickup": "🏪 Nitachukua",
    "btn_delivery": "🚚 Niletewe",
    "zone_question": ("Tukuletee wapi? Ada ya kuleta inaongezwa kwenye agizo lako la {total}."),
    "address_question": (
        "Kuleta {zone}: {fee}.\n\nTuma mahali ulipo (📎, kisha Mahali), au andika anwani "
        "yako au alama iliyo karibu, mf. “karibu na soko la Gikomba”."
    ),
    "btn_send_location": "📍 Tuma mahali nilipo",
    "address_too_short": (
        "Tafadhali andika zaidi kidogo, ili mleta mzigo akupate, mf. “Barabara ya Tom "
        "Mboya, mkabala na duka la dawa”."
    ),
    "address_too_long": "Anwani hiyo ni ndefu: tafadhali tumia herufi chini ya {count}.",
    "location_not_needed": "Asante! Mahali ulipo panahitajika tu ukichagua kuletewa.",
    "pickup_note": "🏪 Chukua agizo lako: {point}{hours}.",
    "delivery_note": "🚚 Tutakuletea {zone} ({fee}): {address}.",
    "shared_location": "mahali ulipotuma",
    "free": "bure",
    "confirm_phone": "Ulipe {total} kwa namba {phone}?",
    "confirm_typed_phone": "Ulipe {total} kwa namba {phone}?",
    "ask_phone": (
        "Ulipe {total} kwa namba gani ya M-Pesa? Gusa kitufe ututumie namba yako, au "
        "iandike (kama 0712 345 678)."
    ),
    "contact_not_own": (
        "Hiyo si namba yako mwenyewe. Gusa kitufe ututumie namba yako, au andika namba ya "
        "M-Pesa utakayotumia kulipa."
    ),
    "phone_not_a_number": "Hiyo si namba ya simu. Iandike kama 0712 345 678.",
    "phone_not_kenyan_mobile": "Hiyo si namba ya simu ya Kenya. Iandike kama 0712 345 678.",
    "phone_not_mobile": (
        "Hiyo si namba ya simu ya mkononi. M-Pesa inahitaji laini kama 0712 345 678."
    ),
    "phone_other_network": (
        "{phone} ni namba ya {network}. M-Pesa inahitaji laini ya Safaricom; kama namba "
        "hii ilihamishiwa Safaricom, endelea."
    ),
    "payment_in_progress": (
        "Malipo ya agizo {reference} tayari yanasubiri PIN yako. Angalia simu yako."
    ),
    "order_not_payable": "Agizo {reference} {status}; haliwezi kulipwa sasa.",
    "over_limit": (
        "M-Pesa haipokei zaidi ya {limit} kwa malipo ya mara moja; jumla ya kikapu chako ni "
        "{total}. Tafadhali ondoa baadhi ya bidhaa."
    ),
    "category_other": "Nyingine",
    "check_phone": "Angalia simu yako: M-Pesa itakuomba PIN ili ulipe {total} kwa {shop}.",
    "push_unknown": (
        "Hatukuweza kuthibitisha kama M-Pesa imetuma ombi la kulipa {total}. Likitokea kwenye "
        "simu yako, weka PIN yako; tutakujulisha matokeo hapa."
    ),
    "payment_refused": "M-Pesa haikuanzisha malipo. {reason}",
    "paid": "Umelipa! {amount} kwa agizo {reference}.\nRisiti ya M-Pesa: {receipt}\n{lines}",
    "paid_receipt_pending": "(namba ya risiti itakuja kwa SMS kutoka M-Pesa)",
    "failed": "Malipo ya agizo {reference} hayakufanikiwa. {reason}",
    "under_review": (
        "Tumepokea {amount} kwa agizo {reference}. Duka linakagua malipo haya na "
        "litawasiliana nawe."
    ),
    "order_cancelled_to_cart": (
        "Agizo {reference} limeghairiwa; bidhaa zake zimerudishwa kwenye kikapu chako."
    ),
    "cancel_kept_order": (
        "Sawa, tumeacha hapo. Agizo {reference} {status}, kwa hiyo halijaghairiwa. Angalia /orders."
    ),
    "cannot_cancel": "Agizo {reference} haliwezi kughairiwa sasa.",
    "not_your_order": "Agizo hilo si lako.",
    "orders": "Maagizo yako ya hivi karibuni:\n{lines}",
    "orders_none": "Bado huna maagizo.",
    "help": (
        "Gusa Menyu uone bidhaa, uziweke kikapuni, kisha ulipe kwa M-Pesa.\n"
        "/start menyu  /cart kikapu chako  /orders maagizo yako  /language lugha  "
        "/cancel acha unachofanya"
    ),
    "hint": "Sijaelewa. Gusa Menyu ununue, au tuma /help.",
    "search_results": "Bidhaa zinazolingana na “{typed}”:",
    "search_none": (
        "Hakuna bidhaa inayolingana na “{typed}”. Gusa Menyu uone zote, au andika neno lingine."
    ),
    "quantity_needs_product": (
        "Bidhaa gani? Andika jina lake pamoja na idadi (kama “2 sukari”), au gusa Menyu."
    ),
    "only_text": "Ninaweza kusoma maandishi na vitufe tu. Gusa Menyu ununue, au tuma /help.",
    "sorry": "Samahani, kuna hitilafu upande wetu. Tafadhali jaribu tena baada ya muda mfupi.",
    "cancelled_step": "Sawa, tumeacha hapo. Kikapu chako bado kipo. Gusa Menyu uendelee.",
    "choose_language": "Chagua lugha:",
    "language_set": "Lugha: Kiswahili.",
    "status_awaiting_payment": "linasubiri malipo",
    "status_paid": "limelipwa",
    "status_ready": "limelipwa, liko tayari",
    "status_on_its_way": "limelipwa, liko njiani",
    "status_delivered": "limefikishwa",
    "status_collected": "limechukuliwa",
    "progress_ready": "Agizo lako {reference} liko tayari.",
    "progress_on_its_way": "Agizo lako {reference} liko njiani.",
    "progress_delivered": "Agizo lako {reference} limefikishwa. Asante kwa kununua kwetu!",
    "progress_collected": "Umechukua agizo lako {reference}. Asante kwa kununua kwetu!",
    "status_needs_review": "linakaguliwa",
    "status_cancelled": "limeghairiwa",
    "status_refund_pending": "limeghairiwa na duka, pesa zitarudishwa",
    "status_refunded": "limeghairiwa na duka, pesa zimerudishwa",
    "shop_cancelled": (
        "Duka limeghairi agizo lako {reference}: {note}\n"
        "Duka litakurudishia malipo yako ya {amount} kwenye namba yako ya M-Pesa."
    ),
    "refund_sent": (
        "Duka limekurudishia malipo yako ya {amount} ya agizo {reference} kwenye namba "
        "yako ya M-Pesa."
    ),
    "another_network": "mtandao mwingine",
    "checking": (
        "Tunathibitisha na M-Pesa malipo yako ya {amount} kwa agizo {reference}. Utapata "
        "jibu hapa baada ya muda mfupi; hakuna haja ya kulipa tena."
    ),
    "unconfirmed": (
        "Hatukuweza kuthibitisha kama malipo yako ya {amount} kwa agizo {reference} "
        "yalifanikiwa. Kama M-Pesa ilikutumia SMS ya uthibitisho, usilipe tena: duka "
        "litakagua na kukujulisha hapa. Kama hukupata SMS, unaweza kulipa tena."
    ),
    "paybill": (
        "Lipa kwa Paybill: Lipa na M-Pesa → Paybill → namba ya biashara {paybill} → "
        "namba ya akaunti {reference} → kiasi {amount}. Tutakujulisha hapa mara tu malipo "
        "yatakapofika."
    ),
    "resolved": "Agizo {reference}: {outcome}",
    "resolved_paid": "duka limethibitisha malipo yako. Agizo lako limelipwa.",
    "resolved_refund": "duka litakurudishia malipo yako ya {amount}; agizo limeghairiwa.",
    "resolved_cancel": "duka limeghairi agizo hili.",
    "resolved_note": "Ujumbe kutoka dukani: {note}",
    "limit_phone": "Maombi ya malipo kwa namba hii yamezidi; jaribu tena baada ya {wait}.",
    "limit_customer": "Umeomba malipo mara nyingi mno; jaribu tena baada ya {wait}.",
    "limit_rule_limited": (
        "M-Pesa hupokea ombi moja tu la kiasi kilekile kutoka namba ileile kila baada ya "
        "dakika mbili; jaribu tena baada ya {wait}."
    ),
    "too_fast": "Unatuma ujumbe haraka mno. Tafadhali subiri sekunde chache.",
    "btn_paybill": "Lipa kwa Paybill",
    "btn_pay_again": "Lipa tena",
    "btn_menu": "Menyu",
    "btn_cart": "Kikapu",
    "btn_checkout": "Endelea kulipa",
    "btn_add": "Weka kikapuni",
    "btn_back": "Rudi",
    "btn_empty": "Futa kikapu",
    "btn_confirm": "Thibitisha agizo",
    "btn_edit_cart": "Rekebisha kikapu",
    "btn_yes": "Ndiyo",
    "btn_yes_pay": "Ndiyo, lipa",
    "btn_other_number": "Tumia namba nyingine",
    "btn_share_number": "Tuma namba yangu",
    "btn_try_again": "Jaribu tena",
    "btn_cancel_order": "Ghairi agizo",
    "btn_pay_order": "Lipa {reference}",
    "btn_cancel_this_order": "Ghairi {reference}",
    "btn_remove": "Ondoa",
    "btn_keep": "Usiondoe",
    "btn_leave_out": "Iache",
    f"reason_{FailureReason.CANCELLED}": "Ombi la malipo lilighairiwa kwenye simu yako.",
    f"reason_{FailureReason.NO_ANSWER}": "Simu yako haikujibu ombi la M-Pesa kwa wakati.",
    f"reason_{FailureReason.WRONG_PIN}": "PIN ya M-Pesa uliyoweka si sahihi.",
    f"reason_{FailureReason.INSUFFICIENT_FUNDS}": "Salio lako la M-Pesa halitoshi.",
    f"reason_{FailureReason.MPESA_BUSY}": (
        "M-Pesa ina shughuli nyingi. Jaribu tena baada ya dakika moja."
    ),
    f"reason_{FailureReason.LIMIT_REACHED}": (
        "Kiasi hiki kinazidi kikomo chako cha kila siku cha M-Pesa."
    ),
    f"reason_{FailureReason.PIN_LOCKED}": "PIN yako ya M-Pesa imefungwa. Piga Safaricom kwa 100.",
    f"reason_{FailureReason.SHOP_SETUP}": (
        "Mipangilio ya M-Pesa ya duka ina tatizo; duka limearifiwa."
    ),
    f"reason_{FailureReason.UNREACHABLE}": (
        "Hatukuweza kufikia M-Pesa. Jaribu tena baada ya dakika moja."
    ),
    f"reason_{FailureReason.INVALID_NUMBER}": "M-Pesa haikukubali namba hiyo.",
    f"reason_{FailureReason.OTHER}": "M-Pesa haikuweza kukamilisha malipo.",
}

_TEXTS: dict[str, dict[str, str]] = {"en": _EN, "sw": _SW}


def templates(language: str) -> Mapping[str, str]:
    """The sentences kept for ``language``, unfilled and read-only (for the tests)."""
    return MappingProxyType(_TEXTS[language])


def say(language: str, key: str, **values: Any) -> str:
    """The sentence ``key`` in ``language`` (English when missing), filled with ``values``."""
    template = _TEXTS.get(language, _EN).get(key) or _EN[key]
    return template.format(**values)


def reason_text(language: str, reason: str) -> str:
    key = f"reason_{reason}"
    return say(language, key if key in _EN else f"reason_{FailureReason.OTHER}")


def status_text(language: str, status: str) -> str:
    key = f"status_{status}"
    return say(language, key) if key in _EN else status
