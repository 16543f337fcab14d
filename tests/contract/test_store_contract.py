"""The Store contract: every test runs on MemoryStore and PostgresStore (see conftest)."""

from __future__ import annotations

from datetime import timedelta

import msgspec
import pytest

from slayq.errors import LeaseLostError, RunNotFoundError, StoreError
from slayq.model import (
    CancelRule,
    Completed,
    Continue,
    ErrorInfo,
    Failed,
    NewRun,
    ParentLink,
    PendingStep,
    RunId,
    StepRecord,
    Suspend,
    Transition,
)
from slayq.runtime.clock import VirtualClock
from slayq.store.protocol import QueueLimit, Store
from tests.contract.helpers import (
    LEASE,
    claim_all,
    claim_one,
    new_run,
    plain_event,
    start,
    starting,
)

pytestmark = pytest.mark.anyio

BOOM = ErrorInfo(type="RuntimeError", message="boom")


def done(*steps: StepRecord, result: object = None) -> Transition:
    return Transition(steps=list(steps), outcome=Completed(result))


def ran(name: str, output: object = None) -> StepRecord:
    return StepRecord(name=name, kind="run", output=output)


async def suspend(
    store: Store, *pending: PendingStep, steps: list[StepRecord] | None = None
) -> RunId:
    claim = await claim_one(store)
    await store.commit(claim.lease, Transition(steps=steps or [], outcome=Suspend(list(pending))))
    return claim.lease.run_id


# -- enqueueing -----------------------------------------------------------------------


@pytest.mark.embedded_smoke  # also on the embedded PostgreSQL, in every run
async def test_a_sent_event_starts_a_queued_run_with_its_data(store: Store) -> None:
    run_id = await start(store, event="media/process", data={"file_id": "f1", "n": 3})
    run = await store.get_run(run_id)
    assert (run.status, run.event, run.data, run.attempts) == (
        "queued",
        "media/process",
        {"file_id": "f1", "n": 3},
        1,
    )
    assert run.steps == []
    assert run.result is None
    assert run.error is None


async def test_the_same_idempotency_key_returns_the_same_run(store: Store) -> None:
    first = await start(store, event="a", key="k1")
    again = await start(store, event="a", key="k1")
    other_event = await start(store, event="b", key="k1")
    assert first == again
    assert other_event != first
    assert len(await claim_all(store)) == 2


async def test_a_batch_may_repeat_a_key_and_gets_one_run(store: Store) -> None:
    a, b = new_run(event="a", key="dup"), new_run(event="a", key="dup")
    ids = await store.send_events([starting(a), starting(b)])
    assert ids == [a.id, a.id]


async def test_an_event_without_a_run_returns_none(store: Store) -> None:
    assert await store.send_events([plain_event("only/waited", {"x": 1})]) == [None]


async def test_get_run_of_an_unknown_id_raises(store: Store) -> None:
    with pytest.raises(RunNotFoundError):
        await store.get_run(RunId("01900000-0000-7000-8000-000000000000"))


# -- claiming -------------------------------------------------------------------------


async def test_a_delayed_run_is_not_claimed_before_it_is_due(
    store: Store, clock: VirtualClock
) -> None:
    await start(store, delay=timedelta(minutes=5))
    assert await claim_all(store) == []
    clock.advance(timedelta(minutes=5))
    assert len(await claim_all(store)) == 1


async def test_run_at_in_the_future_waits_for_it(store: Store, clock: VirtualClock) -> None:
    await start(store, run_at=clock.now() + timedelta(hours=1))
    clock.advance(timedelta(minutes=59))
    assert await claim_all(store) == []
    clock.advance(timedelta(minutes=1))
    assert len(await claim_all(store)) == 1


async def test_lower_priority_runs_first_then_earlier_due(
    store: Store, clock: VirtualClock
) -> None:
    late = await start(store, priority=5)
    clock.advance(timedelta(seconds=1))
    urgent = await start(store, priority=0)
    clock.advance(timedelta(seconds=1))
    also_late = await start(store, priority=5)
    claims = await claim_all(store, limit=3)
    assert [c.lease.run_id for c in claims] == [urgent, late, also_late]


async def test_a_claimed_run_is_not_claimed_again_while_leased(store: Store) -> None:
    await start(store)
    assert len(await claim_all(store)) == 1
    assert await claim_all(store, owner="w2") == []


async def test_claim_honours_the_limit(store: Store) -> None:
    for _ in range(5):
        await start(store)
    assert len(await claim_all(store, limit=2)) == 2
    assert len(await claim_all(store, limit=10)) == 3


async def test_claim_takes_only_the_named_queues(store: Store) -> None:
    await start(store, queue="mail")
    await start(store, queue="media")
    claims = await store.claim(
        queues=[QueueLimit(names=["mail"], concurrency=10)], limit=10, lease_for=LEASE, owner="w"
    )
    assert [c.queue for c in claims] == ["mail"]


async def test_a_queue_group_shares_one_limit_across_claimers(store: Store) -> None:
    for queue in ("messaging", "dispatch", "ready", "messaging"):
        await start(store, queue=queue)
    group = [QueueLimit(names=["messaging", "dispatch", "ready"], concurrency=2)]
    first = await store.claim(queues=group, limit=10, lease_for=LEASE, owner="w1")
    second = await store.claim(queues=group, limit=10, lease_for=LEASE, owner="w2")
    assert (len(first), len(second)) == (2, 0)
    await store.commit(first[0].lease, done())
    third = await store.claim(queues=group, limit=10, lease_for=LEASE, owner="w2")
    assert len(third) == 1


# -- committing -----------------------------------------------------------------------


async def test_continue_records_steps_in_order_and_keeps_the_lease(store: Store) -> None:
    run_id = await start(store)
    claim = await claim_one(store)
    await store.commit(claim.lease, Transition(steps=[ran("a", 1)], outcome=Continue()))
    await store.commit(claim.lease, Transition(steps=[ran("b", {"x": [1, 2]})], outcome=Continue()))
    await store.commit(claim.lease, done(result="ok"))
    run = await store.get_run(run_id)
    assert run.status == "completed"
    assert run.result == "ok"
    assert [(s.name, s.output) for s in run.steps] == [("a", 1), ("b", {"x": [1, 2]})]
    assert all(s.finished_at is not None for s in run.steps)
    assert run.finished_at is not None


async def test_a_finished_run_refuses_further_commits(store: Store) -> None:
    await start(store)
    claim = await claim_one(store)
    await store.commit(claim.lease, done())
    with pytest.raises(LeaseLostError):
        await store.commit(claim.lease, Transition(steps=[ran("late")], outcome=Continue()))


async def test_a_duplicate_step_name_is_refused_and_applies_nothing(store: Store) -> None:
    run_id = await start(store)
    claim = await claim_one(store)
    await store.commit(claim.lease, Transition(steps=[ran("a", 1)], outcome=Continue()))
    with pytest.raises(StoreError):
        await store.commit(
            claim.lease, Transition(steps=[ran("b"), ran("a", 2)], outcome=Continue())
        )
    assert [s.name for s in (await store.get_run(run_id)).steps] == ["a"]


async def test_names_and_values_of_any_content_are_stored_as_data(store: Store) -> None:
    weird = "a,b {c} 'd' \"e\" $f ->> g \\ ünïcødé 🙂 " + "x" * 300
    run_id = await start(store, event=weird, data={weird: weird})
    claim = await claim_one(store)
    assert claim.event == weird
    assert claim.data == {weird: weird}
    await store.commit(claim.lease, Transition(steps=[ran(weird, weird)], outcome=Continue()))
    pending = PendingStep(
        name=weird + "w",
        kind="wait",
        delay=timedelta(hours=1),
        event=weird,
        match_field=weird,
        match_value=weird,
    )
    await store.commit(claim.lease, Transition(steps=[], outcome=Suspend([pending])))
    await store.send_events([plain_event(weird, {weird: weird, "extra": 1})])
    run = await store.get_run(run_id)
    assert run.status == "queued"
    assert [(s.name, s.output) for s in run.steps] == [
        (weird, weird),
        (weird + "w", {weird: weird, "extra": 1}),
    ]


@pytest.mark.embedded_smoke  # also on the embedded PostgreSQL, in every run
async def test_a_stale_holder_cannot_commit_after_a_takeover(
    store: Store, clock: VirtualClock
) -> None:
    run_id = await start(store)
    stale = await claim_one(store)
    clock.advance(LEASE + timedelta(seconds=1))
    fresh = await claim_one(store)
    assert fresh.lease.token != stale.lease.token
    assert fresh.attempt == 2
    with pytest.raises(LeaseLostError):
        await store.commit(stale.lease, Transition(steps=[ran("ghost")], outcome=Continue()))
    await store.commit(fresh.lease, done(ran("real")))
    run = await store.get_run(run_id)
    assert [s.name for s in run.steps] == ["real"]
    assert run.status == "completed"


async def test_a_takeover_names_the_holder_whose_lease_ran_out(
    store: Store, clock: VirtualClock
) -> None:
    await start(store)
    (first,) = await claim_all(store, owner="host-a:1")
    assert first.taken_over_from is None
    clock.advance(LEASE + timedelta(seconds=1))
    (second,) = await claim_all(store, owner="host-b:2")
    assert second.taken_over_from == "host-a:1"
    await store.commit(second.lease, Transition(steps=[], outcome=Failed(BOOM, timedelta(0))))
    (third,) = await claim_all(store, owner="host-c:3")
    assert third.taken_over_from is None  # a retry after a failure is no takeover


async def test_a_lease_expiring_on_the_last_attempt_fails_the_run(
    store: Store, clock: VirtualClock
) -> None:
    run_id = await start(store, max_attempts=1)
    await claim_one(store)
    clock.advance(LEASE + timedelta(seconds=1))
    assert await claim_all(store) == []
    run = await store.get_run(run_id)
    assert run.status == "failed"
    assert run.error is not None
    assert run.error.type == "LeaseExpired"


async def test_extending_a_lease_keeps_the_run_from_takeover(
    store: Store, clock: VirtualClock
) -> None:
    await start(store)
    claim = await claim_one(store)
    clock.advance(LEASE - timedelta(seconds=5))
    kept = await store.extend_leases([claim.lease], LEASE)
    assert [lease.token for lease in kept] == [claim.lease.token]
    clock.advance(timedelta(seconds=10))
    assert await claim_all(store, owner="w2") == []
    await store.commit(claim.lease, done())


async def test_extending_a_lost_lease_leaves_it_out(store: Store, clock: VirtualClock) -> None:
    await start(store)
    claim = await claim_one(store)
    clock.advance(LEASE + timedelta(seconds=1))
    await claim_one(store)
    assert await store.extend_leases([claim.lease], LEASE) == []


async def test_a_released_run_is_due_at_once_without_costing_an_attempt(store: Store) -> None:
    run_id = await start(store)
    claim = await claim_one(store)
    await store.release(claim.lease)
    again = await claim_one(store)
    assert again.lease.run_id == run_id
    assert again.attempt == 1


async def test_a_failed_attempt_retries_after_its_delay(store: Store, clock: VirtualClock) -> None:
    run_id = await start(store)
    claim = await claim_one(store)
    await store.commit(
        claim.lease,
        Transition(steps=[ran("kept", 1)], outcome=Failed(BOOM, retry_after=timedelta(seconds=10))),
    )
    run = await store.get_run(run_id)
    assert (run.status, run.attempts, run.error) == ("queued", 2, BOOM)
    clock.advance(timedelta(seconds=9))
    assert await claim_all(store) == []
    clock.advance(timedelta(seconds=1))
    retry = await claim_one(store)
    assert retry.attempt == 2
    assert [s.name for s in retry.memo] == ["kept"]


async def test_a_final_failure_keeps_the_error(store: Store) -> None:
    run_id = await start(store)
    claim = await claim_one(store)
    error = ErrorInfo(type="ValueError", message="bad", traceback="Traceback ...", step="s1")
    await store.commit(claim.lease, Transition(steps=[], outcome=Failed(error)))
    run = await store.get_run(run_id)
    assert (run.status, run.error) == ("failed", error)
    assert await claim_all(store) == []


@pytest.mark.embedded_smoke  # also on the embedded PostgreSQL, in every run
async def test_events_sent_by_a_commit_start_runs_in_the_same_transaction(store: Store) -> None:
    await start(store)
    claim = await claim_one(store)
    child = new_run(event="mail/send", data={"to": "ops"})
    await store.commit(
        claim.lease,
        Transition(
            steps=[StepRecord(name="notify", kind="send")],
            outcome=Continue(),
            sent=[starting(child)],
        ),
    )
    assert (await store.get_run(child.id)).status == "queued"


# -- sleeping -------------------------------------------------------------------------


async def test_a_sleep_wakes_when_it_expires(store: Store, clock: VirtualClock) -> None:
    await start(store)
    run_id = await suspend(store, PendingStep(name="nap", kind="sleep", delay=timedelta(days=365)))
    run = await store.get_run(run_id)
    assert run.status == "sleeping"
    assert run.run_at == clock.now() + timedelta(days=365)
    assert await store.next_wakeup() == run.run_at
    clock.advance(timedelta(days=364))
    assert await claim_all(store) == []
    clock.advance(timedelta(days=1))
    claim = await claim_one(store)
    assert [(s.name, s.kind, s.output) for s in claim.memo] == [("nap", "sleep", None)]


async def test_sleep_until_an_instant(store: Store, clock: VirtualClock) -> None:
    await start(store)
    wake = clock.now() + timedelta(hours=3)
    await suspend(store, PendingStep(name="nap", kind="sleep", until=wake))
    clock.set(wake - timedelta(seconds=1))
    assert await claim_all(store) == []
    clock.set(wake)
    assert len(await claim_all(store)) == 1


# -- waiting for events ---------------------------------------------------------------


def wait(name: str = "approval", value: object = "f1", hours: int = 1) -> PendingStep:
    return PendingStep(
        name=name,
        kind="wait",
        delay=timedelta(hours=hours),
        event="media/approved",
        match_field="file_id",
        match_value=value,
    )


@pytest.mark.embedded_smoke  # also on the embedded PostgreSQL, in every run
async def test_a_matching_event_answers_a_wait(store: Store) -> None:
    await start(store)
    run_id = await suspend(store, wait())
    assert (await store.get_run(run_id)).status == "waiting"
    await store.send_events([plain_event("media/approved", {"file_id": "other"})])
    assert (await store.get_run(run_id)).status == "waiting"
    await store.send_events([plain_event("media/approved", {"file_id": "f1", "by": "ann"})])
    claim = await claim_one(store)
    assert claim.memo[-1].output == {"file_id": "f1", "by": "ann"}


async def test_an_event_not_logged_still_answers_a_wait_already_waiting(store: Store) -> None:
    await start(store)
    run_id = await suspend(store, wait())
    await store.send_events([plain_event("media/approved", {"file_id": "f1"}, logged=False)])
    assert (await store.get_run(run_id)).status == "queued"
    assert (await claim_one(store)).memo[-1].output == {"file_id": "f1"}


async def test_match_values_compare_by_json_value(store: Store) -> None:
    await start(store)
    run_id = await suspend(store, wait(value=42))
    await store.send_events([plain_event("media/approved", {"file_id": "42"})])
    assert (await store.get_run(run_id)).status == "waiting"
    await store.send_events([plain_event("media/approved", {"file_id": 42})])
    assert (await store.get_run(run_id)).status == "queued"


async def test_a_wait_times_out_to_none(store: Store, clock: VirtualClock) -> None:
    await start(store)
    await suspend(store, wait(hours=2))
    clock.advance(timedelta(hours=2))
    claim = await claim_one(store)
    assert [(s.name, s.kind, s.output) for s in claim.memo] == [("approval", "wait", None)]


async def test_an_event_sent_a_moment_before_the_wait_is_not_missed(store: Store) -> None:
    await start(store)
    claim = await claim_one(store)
    # The approval arrives while the run is still busy with the step before its wait.
    await store.send_events([plain_event("media/approved", {"file_id": "f1", "early": True})])
    await store.commit(claim.lease, Transition(steps=[], outcome=Suspend([wait()])))
    run = await store.get_run(claim.lease.run_id)
    assert run.status == "queued"
    assert run.steps[-1].output == {"file_id": "f1", "early": True}


async def test_a_wait_ignores_events_from_before_the_run_started(store: Store) -> None:
    await store.send_events([plain_event("media/approved", {"file_id": "f1"})])
    await start(store)
    run_id = await suspend(store, wait())
    assert (await store.get_run(run_id)).status == "waiting"


async def test_an_event_answers_one_wait_not_the_next(store: Store) -> None:
    await start(store)
    run_id = await suspend(store, wait("first"))
    await store.send_events([plain_event("media/approved", {"file_id": "f1"})])
    claim = await claim_one(store)
    await store.commit(claim.lease, Transition(steps=[], outcome=Suspend([wait("second")])))
    assert (await store.get_run(run_id)).status == "waiting"


async def test_a_run_waiting_on_two_steps_wakes_when_both_resolved(
    store: Store, clock: VirtualClock
) -> None:
    await start(store)
    nap = PendingStep(name="nap", kind="sleep", delay=timedelta(minutes=10))
    run_id = await suspend(store, wait(hours=5), nap)
    await store.send_events([plain_event("media/approved", {"file_id": "f1"})])
    run = await store.get_run(run_id)
    assert run.status == "sleeping"
    assert run.run_at == clock.now() + timedelta(minutes=10)
    clock.advance(timedelta(minutes=10))
    claim = await claim_one(store)
    assert {s.name for s in claim.memo} == {"approval", "nap"}


# -- invoking -------------------------------------------------------------------------


async def invoke_child(store: Store, *, minutes: int = 15) -> tuple[RunId, RunId]:
    parent_id = await start(store, event="caller")
    claim = await claim_one(store)
    child = new_run(event="callee", parent=ParentLink(parent_id, "call"), max_attempts=1)
    pending = PendingStep(name="call", kind="invoke", delay=timedelta(minutes=minutes), child=child)
    await store.commit(claim.lease, Transition(steps=[], outcome=Suspend([pending])))
    return parent_id, child.id


@pytest.mark.embedded_smoke  # also on the embedded PostgreSQL, in every run
async def test_an_invoked_run_answers_its_caller(store: Store) -> None:
    parent_id, child_id = await invoke_child(store)
    assert (await store.get_run(parent_id)).status == "waiting"
    child = await claim_one(store)
    assert child.lease.run_id == child_id
    await store.commit(child.lease, done(result={"thumb": "t.png"}))
    parent = await claim_one(store)
    assert parent.lease.run_id == parent_id
    assert parent.memo[-1].output == {"thumb": "t.png"}


async def test_an_invoked_run_failing_for_good_answers_with_its_error(store: Store) -> None:
    _, _ = await invoke_child(store)
    child = await claim_one(store)
    await store.commit(child.lease, Transition(steps=[], outcome=Failed(BOOM)))
    parent = await claim_one(store)
    assert parent.memo[-1].error == BOOM


async def test_an_invocation_times_out_to_none(store: Store, clock: VirtualClock) -> None:
    parent_id, child_id = await invoke_child(store, minutes=5)
    clock.advance(timedelta(minutes=5))
    claims = {c.lease.run_id: c for c in await claim_all(store)}
    assert claims[parent_id].memo[-1].output is None
    await store.commit(claims[child_id].lease, done(result="late"))
    assert (await store.get_run(parent_id)).steps[-1].output is None


async def test_cancelling_an_invoked_run_answers_its_caller_with_an_error(store: Store) -> None:
    _parent_id, child_id = await invoke_child(store)
    assert await store.cancel_run(child_id)
    parent = await claim_one(store)
    assert parent.memo[-1].error is not None


# -- cancelling -----------------------------------------------------------------------


def cancellable(value: str) -> list[CancelRule]:
    return [CancelRule(event="upload/cancel", field="file_id", value=value)]


@pytest.mark.embedded_smoke  # also on the embedded PostgreSQL, in every run
async def test_a_matching_event_cancels_a_sleeping_run(store: Store) -> None:
    run_id = await start(store, cancel_on=cancellable("f1"))
    await suspend(store, PendingStep(name="so-tired", kind="sleep", delay=timedelta(hours=8)))
    other = await start(store, cancel_on=cancellable("f2"))
    await store.send_events([plain_event("upload/cancel", {"file_id": "f1"}, logged=False)])
    cancelled = await store.get_run(run_id)
    assert (cancelled.status, cancelled.steps) == ("cancelled", [])
    assert (await store.get_run(other)).status == "queued"


async def test_a_cancelled_holder_cannot_commit(store: Store) -> None:
    run_id = await start(store)
    claim = await claim_one(store)
    assert await store.cancel_run(run_id)
    with pytest.raises(LeaseLostError):
        await store.commit(claim.lease, done())
    run = await store.get_run(run_id)
    assert run.status == "cancelled"
    assert run.finished_at is not None
    assert not await store.cancel_run(run_id)


async def test_an_event_cancels_older_runs_before_starting_its_own(store: Store) -> None:
    old = await start(store, event="upload", cancel_on=cancellable("f1"))
    await suspend(store, PendingStep(name="so-tired", kind="sleep", delay=timedelta(hours=8)))
    fresh = new_run(event="upload", cancel_on=cancellable("f1"))
    fresh_event = plain_event("upload/cancel", {"file_id": "f1"}, logged=False)
    await store.send_events([fresh_event, starting(fresh)])
    assert (await store.get_run(old)).status == "cancelled"
    assert (await store.get_run(fresh.id)).status == "queued"


async def test_a_self_cancelling_event_spares_the_run_it_starts(store: Store) -> None:
    rules = [CancelRule(event="upload", field="file_id", value="f1")]
    old = await start(store, event="upload", data={"file_id": "f1"}, cancel_on=rules)
    (fresh,) = await store.send_events(
        [starting(new_run(event="upload", data={"file_id": "f1"}, cancel_on=rules))]
    )
    assert fresh is not None
    assert (await store.get_run(old)).status == "cancelled"
    assert (await store.get_run(fresh)).status == "queued"


# -- schedules ------------------------------------------------------------------------


async def test_a_schedule_fires_once_per_tick(store: Store, clock: VirtualClock) -> None:
    from slayq.model import Schedule

    template = new_run(event="cron/hourly")
    await store.set_schedules(
        [Schedule(event="cron/hourly", cron="0 * * * *", template=template)],
        app="app",
        events=["cron/hourly"],
    )
    assert await store.fire_schedules() == []
    clock.set(clock.now().replace(minute=0) + timedelta(hours=1))
    fired = await store.fire_schedules()
    assert len(fired) == 1
    assert await store.fire_schedules() == []
    await store.set_schedules(
        [Schedule(event="cron/hourly", cron="0 * * * *", template=template)],
        app="app",
        events=["cron/hourly"],
    )
    assert await store.fire_schedules() == []


async def test_ticks_missed_while_down_fire_once(store: Store, clock: VirtualClock) -> None:
    from slayq.model import Schedule

    template = new_run(event="cron/hourly")
    await store.set_schedules(
        [Schedule(event="cron/hourly", cron="0 * * * *", template=template)],
        app="app",
        events=["cron/hourly"],
    )
    clock.advance(timedelta(hours=10))
    assert len(await store.fire_schedules()) == 1
    assert await store.fire_schedules() == []
    assert len(await claim_all(store)) == 1


# -- housekeeping ---------------------------------------------------------------------


async def test_delete_finished_removes_only_old_finished_runs(
    store: Store, clock: VirtualClock
) -> None:
    old_finished = await start(store)
    await store.commit((await claim_one(store)).lease, done())
    old_unfinished = await start(store, delay=timedelta(days=30))
    clock.advance(timedelta(days=8))
    recent_finished = await start(store)
    await store.commit((await claim_one(store)).lease, done())
    assert await store.delete_finished(timedelta(days=7)) == 1
    with pytest.raises(RunNotFoundError):
        await store.get_run(old_finished)
    assert (await store.get_run(old_unfinished)).status == "queued"
    assert (await store.get_run(recent_finished)).status == "completed"


async def test_delete_finished_works_in_batches(store: Store, clock: VirtualClock) -> None:
    for _ in range(5):
        await start(store)
    for claim in await claim_all(store):
        await store.commit(claim.lease, done())
    clock.advance(timedelta(days=2))
    assert await store.delete_finished(timedelta(days=1), batch=2) == 2
    assert await store.delete_finished(timedelta(days=1), batch=10) == 3
    assert await store.delete_finished(timedelta(days=1), batch=10) == 0


async def test_an_event_lacking_the_match_field_matches_nothing(store: Store) -> None:
    rules = [CancelRule(event="upload/cancel", field="file_id", value=None)]
    run_id = await start(store, cancel_on=rules)
    await suspend(store, wait(value=None))
    await store.send_events([plain_event("media/approved", {"other": 1})])
    await store.send_events([plain_event("upload/cancel", {"other": 1}, logged=False)])
    assert (await store.get_run(run_id)).status == "waiting"
    await store.send_events([plain_event("media/approved", {"file_id": None})])
    assert (await store.get_run(run_id)).status == "queued"


async def test_a_runs_endpoint_is_kept_for_delivery(store: Store) -> None:
    run = new_run()
    run = NewRun(**{**msgspec.structs.asdict(run), "endpoint": "http://app.test/api/slay-q"})
    (run_id,) = await store.send_events([starting(run)])
    assert run_id is not None
    claim = await claim_one(store)
    assert claim.endpoint == "http://app.test/api/slay-q"
    assert (await store.get_run(run_id)).endpoint == "http://app.test/api/slay-q"


async def test_due_runs_are_counted_per_queue(store: Store, clock: VirtualClock) -> None:
    await start(store, queue="media")
    await start(store, queue="media")
    await start(store, queue="mail", delay=timedelta(hours=1))
    await start(store, queue="general")
    await store.claim(
        queues=[QueueLimit(names=["general"], concurrency=1)], limit=1, lease_for=LEASE, owner="w"
    )
    assert await store.due_by_queue() == {"media": 2}
    clock.advance(timedelta(hours=1))
    assert await store.due_by_queue() == {"media": 2, "mail": 1}


async def test_a_transition_naming_a_step_twice_is_refused_whole(store: Store) -> None:
    run_id = await start(store)
    claim = await claim_one(store)
    with pytest.raises(StoreError):
        await store.commit(claim.lease, Transition(steps=[ran("a"), ran("a")], outcome=Continue()))
    assert (await store.get_run(run_id)).steps == []
