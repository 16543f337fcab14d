"""``Store.release``: a run handed back without spending an attempt, now or after a delay,
with the reason it waits recorded on it. Every test runs on each store."""

from __future__ import annotations

from datetime import timedelta

import pytest

from slayq.model import ErrorInfo
from slayq.runtime.clock import VirtualClock
from slayq.store.protocol import Store
from tests.contract.helpers import LEASE, claim_all, claim_one, start

pytestmark = pytest.mark.anyio

UNREACHABLE = ErrorInfo(type="DeliveryError", message="could not connect: refused")


async def test_a_run_released_with_a_delay_is_due_after_it_without_spending_an_attempt(
    store: Store, clock: VirtualClock
) -> None:
    run_id = await start(store)
    claim = await claim_one(store)
    await store.release(claim.lease, delay=timedelta(seconds=30), error=UNREACHABLE)
    run = await store.get_run(run_id)
    assert (run.status, run.attempts, run.error) == ("queued", 1, UNREACHABLE)
    assert run.run_at is not None
    clock.advance(timedelta(seconds=29))
    assert await claim_all(store) == []
    clock.advance(timedelta(seconds=1))
    again = await claim_one(store)
    assert (again.lease.run_id, again.attempt) == (run_id, 1)


async def test_releasing_again_and_again_never_spends_the_last_attempt(
    store: Store, clock: VirtualClock
) -> None:
    run_id = await start(store, max_attempts=1)
    for _ in range(5):
        claim = await claim_one(store)
        await store.release(claim.lease, delay=timedelta(minutes=1), error=UNREACHABLE)
        clock.advance(timedelta(minutes=1))
    run = await store.get_run(run_id)
    assert (run.status, run.attempts, run.error) == ("queued", 1, UNREACHABLE)


async def test_a_release_without_an_error_keeps_the_error_recorded_before(
    store: Store, clock: VirtualClock
) -> None:
    run_id = await start(store)
    claim = await claim_one(store)
    await store.release(claim.lease, error=UNREACHABLE)
    await store.release((await claim_one(store)).lease)
    assert (await store.get_run(run_id)).error == UNREACHABLE


async def test_a_release_by_a_lost_lease_changes_nothing(store: Store, clock: VirtualClock) -> None:
    run_id = await start(store)
    old = await claim_one(store)
    clock.advance(LEASE + timedelta(seconds=1))
    current = await claim_one(store)  # taken over
    await store.release(old.lease, delay=timedelta(hours=1), error=UNREACHABLE)
    run = await store.get_run(run_id)
    assert run.status == "running"
    assert run.error != UNREACHABLE
    await store.release(current.lease)
    assert (await claim_one(store)).lease.run_id == run_id
