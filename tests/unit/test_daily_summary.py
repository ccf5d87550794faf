"""The daily summary (issue: "an optional daily summary at the shop's closing time"): when
it is due, how it reads, and how ``[shop] daily_summary_at`` is configured."""

from __future__ import annotations

from datetime import UTC, date, datetime, time
from pathlib import Path

import pytest

from bot.config import AppConfig, ConfigError, load_config
from bot.daily_summary import due_day, summary_key, summary_message
from bot.rendering import MERCHANT_RENDERERS, MerchantFacts
from bot.reports import PaidOrder
from payments.credentials import NAIROBI
from payments.settlement import Audience, MessageKind

CLOSING = time(20, 0)
MAY_1 = date(2026, 5, 1)
APRIL_30 = date(2026, 4, 30)
NO_ORDER = MerchantFacts(lines="", customer="-", waiting=0, button_room=0)  # unused by it


def nairobi(day: date, hour: int, minute: int = 0) -> datetime:
    """A Nairobi wall-clock time, as the UTC the clock gives (Nairobi is UTC+3)."""
    return datetime(day.year, day.month, day.day, hour, minute, tzinfo=NAIROBI).astimezone(UTC)


@pytest.mark.parametrize(
    ("now", "last_queued", "due"),
    [
        # before closing time: nothing, whether or not yesterday's went out
        (nairobi(MAY_1, 19, 59), APRIL_30, None),
        (nairobi(MAY_1, 9, 0), None, None),
        # at closing time, and after it, until it is queued
        (nairobi(MAY_1, 20, 0), APRIL_30, MAY_1),
        (nairobi(MAY_1, 20, 1), APRIL_30, MAY_1),
        (nairobi(MAY_1, 23, 59), None, MAY_1),
        # down at 20:00, started at 20:30: late, the same day
        (nairobi(MAY_1, 20, 30), None, MAY_1),
        # restarted after sending: not again
        (nairobi(MAY_1, 20, 5), MAY_1, None),
        (nairobi(MAY_1, 23, 59), MAY_1, None),
        # across midnight: never yesterday's, then today's at closing time
        (nairobi(date(2026, 5, 2), 0, 0), None, None),
        (nairobi(date(2026, 5, 2), 0, 30), APRIL_30, None),
        (nairobi(date(2026, 5, 2), 20, 0), MAY_1, date(2026, 5, 2)),
        # the clock went back after today's was queued
        (nairobi(MAY_1, 21, 0), date(2026, 5, 2), None),
    ],
    ids=[
        "before-time",
        "morning-never-sent",
        "at-time",
        "after-time",
        "last-minute",
        "late-start",
        "restart-after-sending",
        "restart-before-midnight",
        "midnight",
        "after-midnight-not-yesterday",
        "next-day-at-time",
        "clock-went-back",
    ],
)
def test_the_summary_is_due_once_a_day_from_closing_time_nairobi(
    now: datetime, last_queued: date | None, due: date | None
) -> None:
    assert due_day(now, CLOSING, last_queued) == due


def test_closing_time_is_nairobi_time_not_utc() -> None:
    """20:00 in Nairobi is 17:00 UTC; 19:30 UTC is 22:30 in Nairobi, still the same day."""
    assert due_day(datetime(2026, 5, 1, 16, 59, tzinfo=UTC), CLOSING, None) is None
    assert due_day(datetime(2026, 5, 1, 17, 0, tzinfo=UTC), CLOSING, None) == MAY_1
    # 22:00 UTC is 01:00 the next day in Nairobi: past midnight, nothing.
    assert due_day(datetime(2026, 5, 1, 22, 0, tzinfo=UTC), CLOSING, None) is None


def _sold(reference: str, total: int, *items: tuple[str, int, int]) -> PaidOrder:
    return PaidOrder(reference, nairobi(MAY_1, 10), "Wanjiru", items, total, (), "new")


def test_the_summary_is_the_days_report_and_its_template_is_three_single_lines() -> None:
    sold = [
        _sold("DK-1", 660, ("Unga 2kg", 3, 630), ("Sukuma wiki", 1, 30)),
        _sold("DK-2", 1_250, ("Sukari 1kg", 5, 1_250)),
    ]
    message = summary_message(MAY_1, sold)
    assert message.kind is MessageKind.DAILY_SUMMARY
    assert message.audience is Audience.MERCHANT
    assert message.dedupe_key == summary_key(MAY_1)
    rendered = MERCHANT_RENDERERS[message.kind](message.payload, NO_ORDER)
    assert rendered.reply.text == (
        "Your daily summary, at closing time:\n"
        "Paid 2026-05-01 (Nairobi time): 2 orders, KES 1,910.\n"
        "• Sukari 1kg: 5 sold, KES 1,250\n"
        "• Unga 2kg: 3 sold, KES 630\n"
        "• Sukuma wiki: 1 sold, KES 30\n"
        "Orders: 2 not moved on yet."
    )
    assert rendered.parameters == ("2026-05-01", "2", "KES 1,910")


def test_a_day_without_sales_still_gets_its_summary() -> None:
    message = summary_message(MAY_1, [])
    rendered = MERCHANT_RENDERERS[message.kind](message.payload, NO_ORDER)
    assert rendered.reply.text.endswith("No order was paid 2026-05-01 (Nairobi time).")
    assert rendered.parameters == ("2026-05-01", "0", "KES 0")


def test_each_day_has_its_own_key() -> None:
    assert summary_key(MAY_1) != summary_key(APRIL_30)
    assert "2026-05-01" in summary_key(MAY_1)


def load(tmp_path: Path, toml: str, **env: str) -> AppConfig:
    path = tmp_path / "config.toml"
    path.write_text(toml)
    return load_config(
        env={"DUKA_DATABASE_URL": f"sqlite+aiosqlite:///{tmp_path}/d.db", **env}, path=path
    )


def test_without_daily_summary_at_there_is_no_summary(tmp_path: Path) -> None:
    assert load(tmp_path, '[shop]\nname = "Duka"\n').daily_summary_at is None


@pytest.mark.parametrize(("text", "at"), [("20:00", time(20, 0)), ("7:30", time(7, 30))])
def test_daily_summary_at_is_a_time_of_day(tmp_path: Path, text: str, at: time) -> None:
    config = load(tmp_path, f'[shop]\ndaily_summary_at = "{text}"\n')
    assert config.daily_summary_at == at


@pytest.mark.parametrize("value", ['"8pm"', '"24:00"', '"20:60"', '"20:00:00"', '""', "2000"])
def test_a_bad_daily_summary_at_names_the_key_and_the_fix_in_one_line(
    tmp_path: Path, value: str
) -> None:
    with pytest.raises(ConfigError) as caught:
        load(tmp_path, f"[shop]\ndaily_summary_at = {value}\n")
    message = str(caught.value)
    assert caught.value.key == "shop.daily_summary_at"
    assert "\n" not in message
    assert message.startswith("Configuration error in shop.daily_summary_at: ")
    assert 'Fix: write it as "HH:MM" in Nairobi time, e.g. "20:00"' in message


def test_the_daily_summary_has_a_whatsapp_template(tmp_path: Path) -> None:
    config = load(
        tmp_path,
        "[shop]\n",
        WHATSAPP_ACCESS_TOKEN="token",
        WHATSAPP_PHONE_NUMBER_ID="123456",
        WHATSAPP_APP_SECRET="app-secret",
        WHATSAPP_VERIFY_TOKEN="verify",
    )
    assert config.whatsapp is not None
    assert config.whatsapp.template_for(MessageKind.DAILY_SUMMARY) == "duka_daily_summary"
