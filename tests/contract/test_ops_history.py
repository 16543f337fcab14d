"""What is recorded about each attempt and step: ``RunInfo.history`` and the timings of
``StepRecord``. Every test runs on each store; ``sending`` variants take the Postgres
store's transactional commit path instead of its one-statement one."""

from __future__ import annotations

from datetime import timedelta

import pytest

from slayq.model import (
    LEASE_EXPIRED,
    AttemptInfo,
    CancelRule,
    Completed,
    Continue,
    ErrorInfo,
    Failed,
    OutgoingEvent,
    ParentLink,
    PendingStep,
    StepRecord,
    Suspend,
    Transition,
)
from slayq.runtime.clock import VirtualClock
from slayq.store.protocol import Store
from tests.contract.helpers import LEASE, claim_all, claim_one, new_run, plain_event, start

pytestmark = pytest.mark.anyio

FIRST = ErrorInfo(type="ValueError", message="first", traceback="Traceback: first\n")
SECOND = ErrorInfo(type="KeyError", message="second", traceback="Traceback: second\n")
UNREACHABLE = ErrorInfo(type="DeliveryError", message="could not connect: refused")
MINUTE = timedelta(minutes=1)


def ran(name: str) -> StepRecord:
    return StepRecord(name=name, kind="run", output=name)


def sent(sending: bool) -> list[OutgoingEvent]:
    """An event that starts nothing: it only moves the commit to the transactional path."""
    return [plain_event("test/noted", {"n": 1}, logged=False)] if sending else []


def brief(history: list[AttemptInfo]) -> list[tuple[int, str, str | None, int, int]]:
    return [(a.number, a.outcome, a.owner, a.replayed, a.executed) for a in history]


@pytest.mark.parametrize("sending", [False, True])
async def test_a_run_failing_twice_then_completing_keeps_every_attempt_and_error(
    store: Store, clock: VirtualClock, sending: bool
) -> None:
    run_id = await start(store, max_attempts=3)
    times = []
    for owner, error in (("w1", FIRST), ("w2", SECOND)):
        claim = (await claim_all(store, owner=owner))[0]
        times.append(clock.now())
        clock.advance(MINUTE)
        failed = Failed(error, retry_after=timedelta(0))
        await store.commit(claim.lease, Transition([ran(f"s{owner}")], failed, sent(sending)))
    (claim,) = await claim_all(store, owner="w3")
    times.append(clock.now())
    clock.advance(MINUTE)
    await store.commit(claim.lease, Transition([], Completed("ok"), sent(sending), replayed=2))
    run = await store.get_run(run_id)
    assert brief(run.history) == [
        (1, "retrying", "w1", 0, 1),
        (2, "retrying", "w2", 0, 1),
        (3, "completed", "w3", 2, 0),
    ]
    assert [a.error for a in run.history] == [FIRST, SECOND, None]
    assert [a.started_at for a in run.history] == times
    assert [a.ended_at for a in run.history] == [t + MINUTE for t in times]
    assert run.error == SECOND  # the run keeps the last; the history keeps the first


@pytest.mark.parametrize("sending", [False, True])
async def test_a_final_failure_ends_the_history_with_failed(
    store: Store, clock: VirtualClock, sending: bool
) -> None:
    run_id = await start(store, max_attempts=1)
    claim = await claim_one(store)
    await store.commit(claim.lease, Transition([], Failed(FIRST), sent(sending)))
    run = await store.get_run(run_id)
    assert brief(run.history) == [(1, "failed", "w1", 0, 0)]
    assert run.history[0].error == FIRST


def sleep(name: str = "nap", hours: int = 1) -> PendingStep:
    return PendingStep(name=name, kind="sleep", delay=timedelta(hours=hours))


def wait(name: str = "approval", hours: int = 1) -> PendingStep:
    return PendingStep(
        name=name,
        kind="wait",
        delay=timedelta(hours=hours),
        event="test/approved",
        match_field="id",
        match_value="x",
    )


@pytest.mark.parametrize("kind", ["sleep", "wait"])
async def test_a_suspended_then_resumed_run_counts_what_each_attempt_replayed_and_ran(
    store: Store, clock: VirtualClock, kind: str
) -> None:
    run_id = await start(store)
    claim = await claim_one(store)
    suspended_at = clock.now()
    await store.commit(claim.lease, Transition([ran("a")], Continue()))
    pending = sleep() if kind == "sleep" else wait()
    await store.commit(claim.lease, Transition([], Suspend([pending]), replayed=0))
    clock.advance(timedelta(minutes=10))
    if kind == "wait":
        await store.send_events([plain_event("test/approved", {"id": "x"})])
    else:
        clock.advance(timedelta(minutes=50))
    resumed_at = clock.now()
    claim = await claim_one(store)
    run = await store.get_run(run_id)
    assert brief(run.history) == [(1, "suspended", "w1", 0, 1), (1, "running", "w1", 0, 0)]
    assert run.history[-1].ended_at is None
    # The memo answered "a" and the pending step; "b" is new work.
    await store.commit(claim.lease, Transition([ran("b")], Continue(), replayed=2))
    assert brief((await store.get_run(run_id)).history)[-1] == (1, "running", "w1", 2, 1)
    await store.commit(claim.lease, Transition([], Completed(None)))
    run = await store.get_run(run_id)
    assert brief(run.history) == [(1, "suspended", "w1", 0, 1), (1, "completed", "w1", 2, 1)]
    assert [(a.started_at, a.ended_at) for a in run.history] == [
        (suspended_at, suspended_at),
        (resumed_at, resumed_at),
    ]
    step = run.steps[1]
    waited = timedelta(minutes=10) if kind == "wait" else timedelta(hours=1)
    assert (step.name, step.started_at, step.duration, step.attempt) == (
        pending.name,
        suspended_at,
        waited,
        1,
    )


async def test_a_lease_takeover_records_the_old_holders_attempt_as_lease_expired(
    store: Store, clock: VirtualClock
) -> None:
    run_id = await start(store, max_attempts=3)
    (stale,) = await claim_all(store, owner="host-a")
    began = clock.now()
    await store.commit(stale.lease, Transition([ran("a")], Continue(), replayed=0))
    clock.advance(LEASE + timedelta(seconds=1))
    (fresh,) = await claim_all(store, owner="host-b")
    run = await store.get_run(run_id)
    assert brief(run.history) == [
        (1, "lease_expired", "host-a", 0, 1),
        (2, "running", "host-b", 0, 0),
    ]
    assert (run.history[0].started_at, run.history[0].ended_at) == (began, clock.now())
    assert run.history[0].error == LEASE_EXPIRED
    # The stale holder's late release records nothing: its attempt is over.
    await store.release(stale.lease, error=UNREACHABLE)
    await store.commit(fresh.lease, Transition([], Completed(None), replayed=1))
    run = await store.get_run(run_id)
    assert brief(run.history) == [
        (1, "lease_expired", "host-a", 0, 1),
        (2, "completed", "host-b", 1, 0),
    ]


async def test_a_lease_running_out_on_the_last_attempt_is_recorded_once(
    store: Store, clock: VirtualClock
) -> None:
    run_id = await start(store, max_attempts=1)
    await claim_one(store)
    clock.advance(LEASE + timedelta(seconds=1))
    assert await claim_all(store, owner="w2") == []
    run = await store.get_run(run_id)
    assert run.status == "failed"
    assert brief(run.history) == [(1, "lease_expired", "w1", 0, 0)]
    assert run.history[0].error == LEASE_EXPIRED


async def test_a_release_records_released_and_the_attempt_goes_on_with_its_number(
    store: Store, clock: VirtualClock
) -> None:
    run_id = await start(store)
    claim = await claim_one(store)
    await store.release(claim.lease, delay=MINUTE, error=UNREACHABLE)
    clock.advance(MINUTE)
    claim = await claim_one(store)
    await store.commit(claim.lease, Transition([], Completed(None)))
    run = await store.get_run(run_id)
    assert brief(run.history) == [(1, "released", "w1", 0, 0), (1, "completed", "w1", 0, 0)]
    assert [a.error for a in run.history] == [UNREACHABLE, None]


async def test_cancelling_a_running_run_records_its_attempt_as_cancelled(
    store: Store, clock: VirtualClock
) -> None:
    run_id = await start(store)
    claim = await claim_one(store)
    await store.commit(claim.lease, Transition([ran("a")], Continue(), replayed=0))
    assert await store.cancel_run(run_id)
    run = await store.get_run(run_id)
    assert brief(run.history) == [(1, "cancelled", "w1", 0, 1)]
    assert run.history[0].error is None


async def test_an_event_cancelling_a_running_run_records_its_attempt_as_cancelled(
    store: Store,
) -> None:
    rule = CancelRule(event="test/stop", field="id", value=7)
    run_id = await start(store, data={"id": 7}, cancel_on=[rule])
    await claim_one(store)
    await store.send_events([plain_event("test/stop", {"id": 7})])
    run = await store.get_run(run_id)
    assert (run.status, brief(run.history)) == ("cancelled", [(1, "cancelled", "w1", 0, 0)])


async def test_a_run_that_never_ran_has_no_history(store: Store) -> None:
    run_id = await start(store)
    assert (await store.get_run(run_id)).history == []
    assert await store.cancel_run(run_id)
    assert (await store.get_run(run_id)).history == []


@pytest.mark.parametrize("sending", [False, True])
async def test_steps_record_when_they_began_how_long_they_took_and_their_attempt(
    store: Store, clock: VirtualClock, sending: bool
) -> None:
    run_id = await start(store)
    claim = await claim_one(store)
    began = clock.now() - timedelta(seconds=3)
    timed = StepRecord(
        name="timed", kind="run", output=1, started_at=began, duration=timedelta(seconds=2)
    )
    failed = Failed(FIRST, retry_after=timedelta(0))
    await store.commit(claim.lease, Transition([timed], failed, sent(sending)))
    claim = await claim_one(store)
    # The memo carries what replay needs, not the timings.
    assert [(s.name, s.started_at, s.duration, s.attempt) for s in claim.memo] == [
        ("timed", None, None, None)
    ]
    clock.advance(MINUTE)
    note = StepRecord(name="note", kind="send")
    await store.commit(claim.lease, Transition([note], Completed(None), sent(sending)))
    run = await store.get_run(run_id)
    assert [(s.name, s.started_at, s.duration, s.attempt) for s in run.steps] == [
        ("timed", began, timedelta(seconds=2), 1),
        ("note", clock.now(), timedelta(0), 2),
    ]


async def test_an_invocation_step_lasts_until_the_callee_answers(
    store: Store, clock: VirtualClock
) -> None:
    parent_id = await start(store)
    parent = await claim_one(store)
    child = new_run(event="callee", parent=ParentLink(parent_id, "call"), max_attempts=1)
    call = PendingStep(name="call", kind="invoke", delay=timedelta(hours=1), child=child)
    invoked_at = clock.now()
    await store.commit(parent.lease, Transition([], Suspend([call])))
    callee = await claim_one(store)
    clock.advance(timedelta(minutes=5))
    await store.commit(callee.lease, Transition([], Completed("done")))
    (step,) = (await store.get_run(parent_id)).steps
    assert (step.kind, step.started_at, step.duration, step.attempt) == (
        "invoke",
        invoked_at,
        timedelta(minutes=5),
        1,
    )


async def test_a_wait_that_expires_lasts_its_timeout(store: Store, clock: VirtualClock) -> None:
    run_id = await start(store)
    claim = await claim_one(store)
    await store.commit(claim.lease, Transition([], Suspend([wait(hours=2)])))
    clock.advance(timedelta(hours=2))
    await claim_one(store)
    (step,) = (await store.get_run(run_id)).steps
    assert (step.output, step.duration, step.attempt) == (None, timedelta(hours=2), 1)
