"""What the shop sold (issue 12): the merchant's /report, and the CSV of `duka export`
(the real CLI), checked against the orders table. SQLite and PostgreSQL."""

from __future__ import annotations

import asyncio
import csv
import io
import os
import subprocess
import sys
from datetime import UTC, date, datetime
from pathlib import Path

import pytest
from sqlalchemy import func, select

from bot import reports
from payments.credentials import NAIROBI
from storage.orders import OrderRecord
from storage.schema import orders
from tests.conftest import DATA_KEY, TEST_TOML, RunningDuka
from tests.helpers import wait_for_payment_status
from tests.integration.test_catalog_edits import merchant
from tests.integration.test_conversation import Customer

REPO = Path(__file__).resolve().parents[2]


async def pays(duka: RunningDuka, chat_id: str, *items: str) -> OrderRecord:
    customer = Customer(duka, chat_id)
    order = await customer.confirms_an_order(*items)
    await customer.pays_from("0712345678")
    await wait_for_payment_status(duka.engine, order.id, "paid")
    return order


async def test_report_sums_what_was_paid_today_by_product_and_progress(
    shop: RunningDuka,
) -> None:
    first = await pays(shop, "7001", "unga:2", "sukuma:1")
    await pays(shop, "7002", "unga:1")
    await Customer(shop, "7003").confirms_an_order("sukari:1")  # not paid: not counted
    await merchant(shop, f"/ready {first.reference}")
    today = datetime.now(NAIROBI).date()
    report = await merchant(shop, "/report")
    assert report == (
        f"Paid {today} (Nairobi time): 2 orders, KES 660.\n"
        "• Unga 2kg: 3 sold, KES 630\n"
        "• Sukuma wiki: 1 sold, KES 30\n"
        "Orders: 1 not moved on yet, 1 paid, ready."
    )
    async with shop.engine.connect() as conn:
        total = await conn.scalar(select(func.sum(orders.c.total)).where(orders.c.status == "paid"))
    assert f"KES {total}" in report
    assert await merchant(shop, "/report week") == report.replace(
        f"Paid {today}", f"Paid {reports.period_from(['week'], today)}"
    )


@pytest.mark.parametrize(
    ("words", "expected"),
    [
        ([], reports.Period(date(2026, 12, 2), date(2026, 12, 2))),
        (["today"], reports.Period(date(2026, 12, 2), date(2026, 12, 2))),
        (["week"], reports.Period(date(2026, 11, 26), date(2026, 12, 2))),
        (["2026-11-30"], reports.Period(date(2026, 11, 30), date(2026, 11, 30))),
        (["2026-11-01..2026-11-30"], reports.Period(date(2026, 11, 1), date(2026, 11, 30))),
    ],
)
def test_periods_are_read_as_nairobi_days(words: list[str], expected: reports.Period) -> None:
    assert reports.period_from(words, date(2026, 12, 2)) == expected


@pytest.mark.parametrize(
    "words", [["yesterday"], ["2026-13-01"], ["2026-12-07..2026-12-01"], ["2025-01-01..2026-12-01"]]
)
def test_a_period_that_cannot_be_read_says_how_to_write_one(words: list[str]) -> None:
    with pytest.raises(reports.BadPeriod):
        reports.period_from(words, date(2026, 12, 2))


async def test_a_bad_report_period_gets_the_usage(shop: RunningDuka) -> None:
    answer = await merchant(shop, "/report last month")
    assert answer.startswith("Send /report (today), /report week")
    assert "write today, week, 2026-12-01 or 2026-12-01..2026-12-07" in answer


async def test_an_empty_day_says_so(shop: RunningDuka) -> None:
    assert await merchant(shop, "/report 2026-01-01") == (
        "No order was paid 2026-01-01 (Nairobi time)."
    )


async def test_duka_export_writes_the_paid_orders_as_csv(
    shop: RunningDuka, database_url: str, tmp_path: Path
) -> None:
    first = await pays(shop, "7001", "unga:2", "sukuma:1")
    second = await pays(shop, "7002", "sukari:1")
    await Customer(shop, "7003").confirms_an_order("sukari:1")
    config_file = tmp_path / "export.toml"
    config_file.write_text(TEST_TOML)
    out = tmp_path / "sales.csv"
    today = datetime.now(NAIROBI).date()
    clean = {k: v for k, v in os.environ.items() if not k.startswith(("DUKA_", "MPESA_"))}
    exported = await asyncio.to_thread(
        subprocess.run,
        [sys.executable, "-m", "bot", "export", "--from", str(today), "--out", str(out)],
        env={
            **clean,
            "DUKA_CONFIG": str(config_file),
            "DUKA_DATABASE_URL": database_url,
            "MPESA_ENVIRONMENT": "simulator",
            "DUKA_DATA_KEY": DATA_KEY,
        },
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert exported.returncode == 0, exported.stderr
    assert exported.stdout.strip() == f"Wrote 2 paid orders ({today}) to {out}."
    rows = list(csv.DictReader(io.StringIO(out.read_text(encoding="utf-8"))))
    assert [r["order"] for r in rows] == [first.reference, second.reference]
    assert rows[0]["items"] == "2 × Unga 2kg; 1 × Sukuma wiki"
    assert [int(r["total_kes"]) for r in rows] == [450, 160]
    assert all(r["mpesa_receipts"] and r["fulfilment"] == "new" for r in rows)
    assert rows[0]["customer"] == "Wanjiru"
    assert datetime.strptime(rows[0]["paid_at"], "%Y-%m-%d %H:%M").date() == today


def test_a_name_that_a_spreadsheet_would_run_stays_text() -> None:
    sold = [
        reports.PaidOrder(
            "DK-7KX3M9",
            datetime(2026, 12, 2, 9, 30, tzinfo=UTC),
            '=HYPERLINK("http://x")',
            (("Unga 2kg", 1, 210),),
            210,
            ("QKX1A2B3C4",),
            "new",
        )
    ]
    [row] = list(csv.DictReader(io.StringIO(reports.report_csv(sold))))
    assert row["customer"] == '\'=HYPERLINK("http://x")'
    assert row["paid_at"] == "2026-12-02 12:30"
