"""``run_stats``: runs started and finished per minute over a window, and expired leases
(every test runs on each store)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from slayq.errors import InputError
from slayq.model import Completed, ErrorInfo, Failed, MinuteStats, Transition
from slayq.runtime.clock import VirtualClock
from slayq.store.protocol import Store
from tests.contract.helpers import LEASE, claim_all, start

pytestmark = pytest.mark.anyio

BOOM = ErrorInfo(type="ValueError", message="boom")


def at(hour: int, minute: int) -> datetime:
    return datetime(2025, 3, 1, hour, minute, tzinfo=UTC)


async def finish_all(store: Store, outcome: Completed | Failed) -> None:
    for claim in await claim_all(store):
        await store.commit(claim.lease, Transition(steps=[], outcome=outcome))


async def test_runs_count_in_the_minute_they_started_and_the_minute_they_finished(
    store: Store, clock: VirtualClock
) -> None:
    clock.set(at(12, 0) + timedelta(seconds=10))
    await start(store)  # 12:00 — outside a 30-minute window read at 13:05
    await finish_all(store, Completed("old"))
    clock.set(at(12, 50) + timedelta(seconds=20))
    await start(store)
    await start(store)
    clock.set(at(12, 52) + timedelta(seconds=59))
    await finish_all(store, Completed("ok"))  # both finish in minute 12:52
    clock.set(at(13, 1) + timedelta(seconds=30))
    await start(store)
    await finish_all(store, Failed(BOOM))  # no retry_after: failed for good
    clock.set(at(13, 3))
    cancelled = await start(store)
    await store.cancel_run(cancelled, actor="test")
    clock.set(at(13, 5))

    stats = await store.run_stats(window=timedelta(minutes=30))

    assert (stats.since, stats.now, stats.expired_leases) == (at(12, 35), at(13, 5), 0)
    assert stats.minutes == [
        MinuteStats(at=at(12, 50), started=2),
        MinuteStats(at=at(12, 52), completed=2),
        MinuteStats(at=at(13, 1), started=1, failed=1),
        MinuteStats(at=at(13, 3), started=1, cancelled=1),
    ]


async def test_a_run_retried_after_failing_no_longer_counts_as_failed(
    store: Store, clock: VirtualClock
) -> None:
    run_id = await start(store)
    await finish_all(store, Failed(BOOM))
    await store.retry_run(run_id, actor="test")
    stats = await store.run_stats(window=timedelta(hours=1))
    assert stats.minutes == [MinuteStats(at=at(12, 0), started=1)]


async def test_running_runs_whose_lease_expired_are_counted(
    store: Store, clock: VirtualClock
) -> None:
    for _ in range(3):
        await start(store)
    await claim_all(store)
    assert (await store.run_stats(window=timedelta(hours=1))).expired_leases == 0
    clock.advance(LEASE + timedelta(seconds=1))
    assert (await store.run_stats(window=timedelta(hours=1))).expired_leases == 3
    await claim_all(store)  # taken over: leases fresh again
    assert (await store.run_stats(window=timedelta(hours=1))).expired_leases == 0


@pytest.mark.parametrize(
    "window", [timedelta(seconds=59), timedelta(days=1, seconds=1), timedelta(-1), 3600]
)
async def test_a_window_out_of_range_is_refused_naming_it(store: Store, window: object) -> None:
    with pytest.raises(InputError, match="window must be a timedelta from 1 minute to 1 day"):
        await store.run_stats(window=window)  # type: ignore[arg-type]
