"""One reconciler (and one pruner) among processes sharing a database (issue 10): the
lease goes to one process, is renewed by it, and passes to another when it lapses or is
given up."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from storage.engine import Database
from storage.leases import hold_lease, lease_holder, release_lease

NOW = datetime(2026, 12, 2, 9, 0, tzinfo=UTC)
TERM = timedelta(seconds=60)


async def test_one_holder_at_a_time_until_it_lapses_or_is_released(database: Database) -> None:
    async def ask(holder: str, at: datetime) -> bool:
        return bool(await database.transaction(hold_lease, "reconciler", holder, at, TERM))

    assert await ask("a", NOW)
    assert not await ask("b", NOW + timedelta(seconds=1))
    assert await ask("a", NOW + timedelta(seconds=30)), "the holder renews"
    assert not await ask("b", NOW + timedelta(seconds=89)), "renewed until 30 + 60 s"
    assert await ask("b", NOW + timedelta(seconds=91)), "lapsed: taken over"
    assert not await ask("a", NOW + timedelta(seconds=92))
    assert (
        await database.transaction(lease_holder, "reconciler", NOW + timedelta(seconds=92)) == "b"
    )
    await database.transaction(release_lease, "reconciler", "b")
    assert (
        await database.transaction(lease_holder, "reconciler", NOW + timedelta(seconds=93)) is None
    )
    assert await ask("a", NOW + timedelta(seconds=93)), "released: taken at once"
    retention = await database.transaction(hold_lease, "retention", "x", NOW, TERM)
    assert retention, "each job has a lease of its own"
