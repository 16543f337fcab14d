"""Retention: old finished runs go, and the event log keeps only what waits can still see.

The event log serves waits: a wait sees matching events sent since its run started (or
its previous wait was answered). Only runs that may wait (their function declares
``waits_on``) keep events in the log, and none keeps one past the retention window.
"""

from __future__ import annotations

from datetime import timedelta

import pytest

from slayq.model import Completed, PendingStep, Suspend, Transition
from slayq.runtime.clock import VirtualClock
from slayq.store.protocol import Store
from tests.contract.helpers import claim_one, event_log_size, plain_event, start

pytestmark = pytest.mark.anyio

WEEK = timedelta(days=7)
APPROVAL = PendingStep(
    name="approval",
    kind="wait",
    delay=timedelta(days=30),
    event="media/approved",
    match_field="file_id",
    match_value="f1",
)


def approvals(n: int) -> list[object]:
    return [plain_event("media/approved", {"file_id": "f1", "n": i}) for i in range(n)]


async def test_a_run_that_never_waits_pins_no_events(store: Store, clock: VirtualClock) -> None:
    # Delayed a year, unfinished all along, and its function has no waits_on.
    await start(store, event="report/yearly", delay=timedelta(days=365))
    await store.send_events(approvals(3))  # type: ignore[arg-type]
    clock.advance(timedelta(hours=1))
    await store.delete_finished(WEEK)
    assert await event_log_size(store) == 0


async def test_events_a_waiting_capable_run_may_still_see_are_kept(
    store: Store, clock: VirtualClock
) -> None:
    run_id = await start(store, may_wait=True, delay=timedelta(days=1))
    await store.send_events(approvals(3))  # type: ignore[arg-type]
    clock.advance(timedelta(days=1))
    await store.delete_finished(WEEK)
    assert await event_log_size(store) == 3
    claim = await claim_one(store)
    await store.commit(claim.lease, Transition(steps=[], outcome=Suspend([APPROVAL])))
    run = await store.get_run(run_id)
    assert run.status == "queued"  # answered from the log, by the first matching event
    assert run.steps[-1].output == {"file_id": "f1", "n": 0}
    # Its cursor moved past the event that answered it: that one is nobody's now.
    clock.advance(timedelta(hours=1))
    await store.delete_finished(WEEK)
    assert await event_log_size(store) == 2
    claim = await claim_one(store)
    await store.commit(claim.lease, Transition(steps=[], outcome=Completed()))
    await store.delete_finished(WEEK)
    assert await event_log_size(store) == 0


async def test_no_wait_sees_an_event_older_than_the_retention(
    store: Store, clock: VirtualClock
) -> None:
    run_id = await start(store, may_wait=True, delay=timedelta(days=8))
    await store.send_events(approvals(1))  # type: ignore[arg-type]
    clock.advance(timedelta(days=8))
    await store.delete_finished(WEEK)
    assert await event_log_size(store) == 0
    claim = await claim_one(store)
    await store.commit(claim.lease, Transition(steps=[], outcome=Suspend([APPROVAL])))
    assert (await store.get_run(run_id)).status == "waiting"


async def test_a_fresh_event_is_kept_a_while_even_if_no_run_needs_it(
    store: Store, clock: VirtualClock
) -> None:
    # A run being created at this moment, in a transaction not yet committed, may need it.
    await store.send_events(approvals(2))  # type: ignore[arg-type]
    await store.delete_finished(WEEK)
    assert await event_log_size(store) == 2
    clock.advance(timedelta(minutes=5, seconds=1))
    await store.delete_finished(WEEK)
    assert await event_log_size(store) == 0


async def test_one_pass_prunes_more_than_a_thousand_events(
    store: Store, clock: VirtualClock
) -> None:
    await store.send_events(approvals(2500))  # type: ignore[arg-type]
    clock.advance(timedelta(days=8))
    await store.delete_finished(WEEK)
    assert await event_log_size(store) == 0


async def test_runs_finishing_after_a_purge_are_deleted_in_their_turn(
    store: Store, clock: VirtualClock
) -> None:
    async def finish_runs(n: int) -> None:
        for _ in range(n):
            await start(store)
            await store.commit((await claim_one(store)).lease, Transition([], Completed()))

    await finish_runs(3)
    clock.advance(timedelta(days=8))
    assert await store.delete_finished(WEEK, batch=2) == 2
    assert await store.delete_finished(WEEK, batch=2) == 1
    await finish_runs(2)
    assert await store.delete_finished(WEEK, batch=2) == 0
    clock.advance(timedelta(days=7, seconds=1))
    assert await store.delete_finished(WEEK, batch=2) == 2
