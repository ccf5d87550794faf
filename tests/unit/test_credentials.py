"""Password and timestamp: the doc's test vectors and Nairobi time."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

import pytest

from payments.credentials import daraja_timestamp, parse_daraja_timestamp, stk_password

PASSKEY = "bfb279f9aa9bdbcf158e97dd71a467cd2e0c893059b10f78e6b72ada1ed2c919"


@pytest.mark.parametrize(
    ("timestamp", "password"),
    [
        (
            "20160216165627",
            "MTc0Mzc5YmZiMjc5ZjlhYTliZGJjZjE1OGU5N2RkNzFhNDY3Y2QyZTBjODkzMDU5YjEwZjc4ZTZiNzJh"
            "ZGExZWQyYzkxOTIwMTYwMjE2MTY1NjI3",
        ),
        (
            "20210628092408",
            "MTc0Mzc5YmZiMjc5ZjlhYTliZGJjZjE1OGU5N2RkNzFhNDY3Y2QyZTBjODkzMDU5YjEwZjc4ZTZiNzJh"
            "ZGExZWQyYzkxOTIwMjEwNjI4MDkyNDA4",
        ),
    ],
)
def test_password_matches_the_published_vectors(timestamp: str, password: str) -> None:
    assert stk_password("174379", PASSKEY, timestamp) == password


def test_timestamp_is_nairobi_time_even_on_a_utc_host() -> None:
    assert daraja_timestamp(datetime(2026, 11, 26, 21, 30, 5, tzinfo=UTC)) == "20261127003005"


def test_timestamp_converts_other_zones() -> None:
    new_york = timezone(timedelta(hours=-5))
    moment = datetime(2026, 1, 1, 7, 0, 0, tzinfo=new_york)
    assert daraja_timestamp(moment) == "20260101150000"


def test_timestamp_without_argument_has_fourteen_digits() -> None:
    value = daraja_timestamp()
    assert len(value) == 14
    assert value.isdigit()


def test_callback_transaction_date_number_is_read_as_nairobi_time() -> None:
    moment = parse_daraja_timestamp(20191219102115)
    assert moment.astimezone(UTC) == datetime(2019, 12, 19, 7, 21, 15, tzinfo=UTC)


@pytest.mark.parametrize("bad", ["2019121910211", "2019-12-19 10:21", "20191319102115", ""])
def test_malformed_timestamps_are_refused(bad: str) -> None:
    with pytest.raises(ValueError, match=r"timestamp|month|does not match|unconverted"):
        parse_daraja_timestamp(bad)
