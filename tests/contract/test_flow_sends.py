"""Send-time flow control in the Store contract: idempotency, rate limits and singletons,
decided when an event is sent (``send_events``, or a commit that sends), on every store."""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from datetime import UTC, datetime, timedelta
from typing import Any, Literal

import anyio
import msgspec
import pytest

from slayq.errors import LeaseLostError, RunNotFoundError, StoreInputError
from slayq.model import (
    CANCELLED,
    CancelRule,
    Completed,
    Continue,
    Flow,
    FlowOnce,
    FlowRate,
    FlowSingleton,
    NewRun,
    OutgoingEvent,
    ParentLink,
    PendingStep,
    RunFilter,
    RunId,
    StepRecord,
    Suspend,
    Transition,
)
from slayq.runtime.clock import VirtualClock
from slayq.store.memory import MemoryStore
from slayq.store.protocol import Store
from tests.contract.helpers import (
    claim_all,
    claim_one,
    new_run,
    start,
    starting,
)

pytestmark = pytest.mark.anyio

EVENT = "test/flowed"
DAY = timedelta(days=1)


def flowed(data: dict[str, Any] | None = None, *, key: str | None = None, **flow: Any) -> NewRun:
    """A run of ``EVENT`` with the flow controls ``flow`` (``model.Flow``'s fields)."""
    return msgspec.structs.replace(new_run(EVENT, data, key=key), flow=Flow(**flow))


def once(bucket: str = "order=1", ttl: timedelta = DAY) -> FlowOnce:
    return FlowOnce(bucket=f"{EVENT} {bucket}", ttl=ttl)


def rate(limit: int, period: timedelta, bucket: str = "all") -> FlowRate:
    """As ``slayq.RateLimit(limit, period)`` resolves: ``limit`` at once, then one per
    ``period / limit``."""
    return FlowRate(bucket=f"{EVENT} {bucket}", interval=period / limit, burst=limit - 1)


def single(mode: Literal["skip", "cancel"], bucket: str = "user=1") -> FlowSingleton:
    return FlowSingleton(bucket=f"{EVENT} {bucket}", mode=mode)


async def send(store: Store, *runs: NewRun) -> list[RunId | None]:
    return await store.send_events([starting(run) for run in runs])


async def send_one(store: Store, run: NewRun) -> RunId | None:
    (answer,) = await send(store, run)
    return answer


async def runs_of(store: Store, status: str | None = None) -> list[RunId]:
    wanted: Any = [status] if status is not None else None
    page = await store.list_runs(RunFilter(event=EVENT, status=wanted), limit=1000, cursor=None)
    return [run.id for run in page.runs]


async def active(store: Store) -> list[RunId]:
    page = await store.list_runs(
        RunFilter(event=EVENT, status=["queued", "running", "sleeping", "waiting"]),
        limit=1000,
        cursor=None,
    )
    return [run.id for run in page.runs]


@asynccontextmanager
async def senders(store: Store, clock: VirtualClock, n: int) -> AsyncIterator[list[Store]]:
    """``n`` senders: on PostgreSQL, four stores of their own (each its pool), so the
    sends run on separate connections at once; the memory store is one store."""
    from slayq.store.postgres import PostgresStore

    if not isinstance(store, PostgresStore):
        yield [store] * n
        return
    pools = [PostgresStore(store.url, clock=clock, min_size=1, max_size=n) for _ in range(4)]
    try:
        for pool in pools:
            await pool.open()
        yield [pools[i % len(pools)] for i in range(n)]
    finally:
        for pool in pools:
            await pool.aclose()


async def all_at_once(stores: Sequence[Store], runs: Sequence[NewRun]) -> list[RunId | None]:
    """Send each run from its own store, all concurrently; the answers in order."""
    answers: list[RunId | None] = [None] * len(runs)

    async def one(i: int) -> None:
        answers[i] = await send_one(stores[i], runs[i])

    async with anyio.create_task_group() as group:
        for i in range(len(runs)):
            group.start_soon(one, i)
    return answers


async def flow_rows(store: Store) -> int:
    """How many idempotency and rate-limit rows the store keeps (pruning is invisible)."""
    if isinstance(store, MemoryStore):
        return len(store.once) + len(store.rate_tats)
    import psycopg

    from slayq.store.postgres import PostgresStore, parse_url

    assert isinstance(store, PostgresStore)
    async with await psycopg.AsyncConnection.connect(parse_url(store.url).url) as conn:
        cursor = await conn.execute(
            f"select (select count(*) from {store.schema}.flow_once)"
            f" + (select count(*) from {store.schema}.flow_rate_limits)"
        )
        row = await cursor.fetchone()
    assert row is not None
    return int(row[0])


# -- idempotency ----------------------------------------------------------------------


async def test_idempotency_answers_the_first_run_within_ttl_then_starts_a_new_one(
    store: Store, clock: VirtualClock
) -> None:
    first = await send_one(store, flowed({"n": 1}, idempotency=once()))
    assert first is not None
    clock.advance(DAY - timedelta(seconds=1))
    assert await send_one(store, flowed({"n": 2}, idempotency=once())) == first
    assert await runs_of(store) == [first]
    assert (await store.get_run(first)).data == {"n": 1}
    clock.advance(timedelta(seconds=1))  # the ttl counts from the first run
    second = await send_one(store, flowed({"n": 3}, idempotency=once()))
    assert second not in (None, first)
    assert await send_one(store, flowed({"n": 4}, idempotency=once())) == second
    other = await send_one(store, flowed({"n": 5}, idempotency=once("order=2")))
    assert other not in (None, first, second)


async def test_idempotency_holds_for_finished_runs(store: Store) -> None:
    first = await send_one(store, flowed(idempotency=once()))
    claim = await claim_one(store)
    await store.commit(claim.lease, Transition(steps=[], outcome=Completed("ok")))
    assert await send_one(store, flowed(idempotency=once())) == first
    assert await claim_all(store) == []


async def test_two_events_of_one_bucket_in_a_batch_start_one_run(store: Store) -> None:
    a, b, c = flowed(idempotency=once()), flowed(idempotency=once()), flowed()
    c = msgspec.structs.replace(c, flow=Flow(idempotency=once("order=2")))
    answers = await send(store, a, b, c)
    assert answers == [a.id, a.id, c.id]
    with pytest.raises(RunNotFoundError):
        await store.get_run(b.id)
    assert await send_one(store, flowed(idempotency=once())) == a.id


async def test_concurrent_senders_of_one_idempotency_bucket_start_one_run(
    store: Store, clock: VirtualClock
) -> None:
    async with senders(store, clock, 12) as stores:
        for round_ in range(5):
            runs = [flowed(idempotency=once(f"order={round_}")) for _ in range(12)]
            answers = await all_at_once(stores, runs)
            assert len(set(answers)) == 1 and answers[0] in {r.id for r in runs}
    assert len(await runs_of(store)) == 5


async def test_an_event_that_started_nothing_leaves_no_idempotency_answer(
    store: Store, clock: VirtualClock
) -> None:
    limited: dict[str, Any] = {"rate_limit": rate(1, timedelta(minutes=1))}
    assert await send_one(store, flowed(idempotency=once("order=1"), **limited)) is not None
    # order 2 is over the rate: it is answered None, and so decided afresh next time
    assert await send_one(store, flowed(idempotency=once("order=2"), **limited)) is None
    clock.advance(timedelta(minutes=1))
    again = await send_one(store, flowed(idempotency=once("order=2"), **limited))
    assert again is not None
    assert await send_one(store, flowed(idempotency=once("order=2"), **limited)) == again


async def test_idempotency_keeps_a_singleton_skip_answer(store: Store) -> None:
    running = await send_one(store, flowed(singleton=single("skip")))
    duplicate: dict[str, Any] = {"idempotency": once(), "singleton": single("skip")}
    assert await send_one(store, flowed(**duplicate)) == running
    claim = await claim_one(store)
    await store.commit(claim.lease, Transition(steps=[], outcome=Completed(None)))
    # the bucket's answer is the run it was answered with, for the ttl
    assert await send_one(store, flowed(**duplicate)) == running


async def test_a_commit_sending_an_idempotent_event_twice_starts_one_run(store: Store) -> None:
    await start(store, event="test/sender")
    sender = await claim_one(store)
    first, second = flowed(idempotency=once()), flowed(idempotency=once())
    sent = [starting(first), starting(second)]
    step = StepRecord(name="send", kind="send")
    await store.commit(sender.lease, Transition(steps=[step], outcome=Continue(), sent=sent))
    assert await runs_of(store) == [first.id]
    third = flowed(idempotency=once())
    await store.commit(
        sender.lease, Transition(steps=[], outcome=Completed(None), sent=[starting(third)])
    )
    assert await runs_of(store) == [first.id]


async def test_a_sent_run_is_not_decided_if_its_commit_lost_the_lease(
    store: Store, clock: VirtualClock
) -> None:
    await start(store, event="test/sender")
    stale = await claim_one(store)
    clock.advance(timedelta(minutes=1))
    await claim_one(store)  # taken over
    lost = flowed(idempotency=once(), singleton=single("cancel"))
    with pytest.raises(LeaseLostError):
        await store.commit(
            stale.lease, Transition(steps=[], outcome=Continue(), sent=[starting(lost)])
        )
    fresh = flowed(idempotency=once())
    assert await send_one(store, fresh) == fresh.id


async def test_a_ttl_past_the_last_time_stored_is_an_error_naming_the_bucket(
    store: Store, clock: VirtualClock
) -> None:
    clock.set(datetime(9999, 1, 1, tzinfo=UTC))
    run = flowed(idempotency=once('order="late"', ttl=timedelta(days=400)))
    with pytest.raises(StoreInputError, match=r'idempotency bucket .*order="late"'):
        await send_one(store, run)
    with pytest.raises(RunNotFoundError):
        await store.get_run(run.id)


# -- rate limits ----------------------------------------------------------------------


async def test_a_rate_limit_admits_limit_at_once_then_one_per_interval(
    store: Store, clock: VirtualClock
) -> None:
    limit = rate(3, timedelta(minutes=1))  # one per 20 seconds, 3 at once
    answers = [await send_one(store, flowed(rate_limit=limit)) for _ in range(5)]
    assert [a is not None for a in answers] == [True, True, True, False, False]
    clock.advance(timedelta(seconds=19))
    assert await send_one(store, flowed(rate_limit=limit)) is None
    clock.advance(timedelta(seconds=1))
    assert await send_one(store, flowed(rate_limit=limit)) is not None
    assert await send_one(store, flowed(rate_limit=limit)) is None
    clock.advance(timedelta(minutes=1))  # a quiet minute refills the burst, no more
    batch = await send(store, *(flowed(rate_limit=limit) for _ in range(5)))
    assert [a is not None for a in batch] == [True, True, True, False, False]
    other = rate(3, timedelta(minutes=1), bucket="customer=2")
    assert await send_one(store, flowed(rate_limit=other)) is not None
    assert len(await runs_of(store)) == 3 + 1 + 3 + 1


async def test_an_event_over_the_rate_is_still_logged_wakes_waits_and_cancels(
    store: Store,
) -> None:
    waiting = await start(store, event="test/waiter")
    late = await start(store, event="test/late")  # waits once the event is logged
    claims = {c.lease.run_id: c for c in await claim_all(store)}
    wait = PendingStep(
        name="w", kind="wait", delay=DAY, event=EVENT, match_field="k", match_value=2
    )
    await store.commit(claims[waiting].lease, Transition(steps=[], outcome=Suspend([wait])))
    rule = CancelRule(event=EVENT, field="k", value=2)
    doomed = await start(store, event="test/doomed", cancel_on=[rule])
    limit = rate(1, timedelta(hours=1))
    assert await send_one(store, flowed({"k": 1}, rate_limit=limit)) is not None
    over = flowed({"k": 2}, rate_limit=limit)
    (answer,) = await store.send_events([OutgoingEvent(EVENT, {"k": 2}, run=over, logged=True)])
    assert answer is None
    with pytest.raises(RunNotFoundError):
        await store.get_run(over.id)
    woken = await store.get_run(waiting)
    assert (woken.status, woken.steps[-1].output) == ("queued", {"k": 2})
    assert (await store.get_run(doomed)).status == "cancelled"
    # logged: a wait registered after it was sent finds it in the event log
    await store.commit(claims[late].lease, Transition(steps=[], outcome=Suspend([wait])))
    assert (await store.get_run(late)).steps[-1].output == {"k": 2}


async def test_concurrent_senders_get_exactly_the_rate(store: Store, clock: VirtualClock) -> None:
    async with senders(store, clock, 20) as stores:
        for round_ in range(5):
            limit = rate(5, timedelta(minutes=1), bucket=f"round={round_}")
            answers = await all_at_once(stores, [flowed(rate_limit=limit) for _ in range(20)])
            assert sum(a is not None for a in answers) == 5, f"round {round_}"
        clock.advance(timedelta(seconds=12))  # one more for each bucket
        limit = rate(5, timedelta(minutes=1), bucket="round=0")
        answers = await all_at_once(stores, [flowed(rate_limit=limit) for _ in range(20)])
        assert sum(a is not None for a in answers) == 1
    assert len(await runs_of(store)) == 5 * 5 + 1


async def test_expired_rate_and_idempotency_rows_are_pruned_with_finished_runs(
    store: Store, clock: VirtualClock
) -> None:
    await send_one(store, flowed(idempotency=once(ttl=timedelta(hours=2))))
    await send_one(store, flowed(rate_limit=rate(2, timedelta(hours=1))))
    assert await flow_rows(store) == 2
    clock.advance(timedelta(hours=1))
    await store.delete_finished(DAY)
    assert await flow_rows(store) == 1  # the rate's row went at its arrival time
    clock.advance(timedelta(hours=1))
    await store.delete_finished(DAY)
    assert await flow_rows(store) == 0
    fresh = flowed(idempotency=once(ttl=timedelta(hours=2)))
    assert await send_one(store, fresh) == fresh.id


# -- singletons -----------------------------------------------------------------------


async def test_a_singleton_skip_answers_the_unfinished_run_until_it_finishes(
    store: Store, clock: VirtualClock
) -> None:
    first = await send_one(store, flowed({"n": 1}, singleton=single("skip")))
    assert first is not None
    assert await send_one(store, flowed({"n": 2}, singleton=single("skip"))) == first  # queued
    claim = await claim_one(store)
    assert await send_one(store, flowed(singleton=single("skip"))) == first  # running
    nap = PendingStep(name="nap", kind="sleep", delay=timedelta(minutes=5))
    await store.commit(claim.lease, Transition(steps=[], outcome=Suspend([nap])))
    assert await send_one(store, flowed(singleton=single("skip"))) == first  # sleeping
    other = await send_one(store, flowed(singleton=single("skip", bucket="user=2")))
    assert other not in (None, first)
    clock.advance(timedelta(minutes=5))
    claim = next(c for c in await claim_all(store) if c.lease.run_id == first)
    await store.commit(claim.lease, Transition(steps=[], outcome=Completed("done")))
    second = await send_one(store, flowed({"n": 3}, singleton=single("skip")))
    assert second not in (None, first, other)
    assert (await store.get_run(first)).status == "completed"
    assert await send_one(store, flowed({"n": 4}, singleton=single("skip"))) == second


async def test_a_singleton_cancel_fences_the_holder_and_starts_its_own(
    store: Store, clock: VirtualClock
) -> None:
    first = await send_one(store, flowed({"n": 1}, singleton=single("cancel")))
    claim = await claim_one(store)
    await store.commit(claim.lease, Transition(steps=[StepRecord("a", "run")], outcome=Continue()))
    second = await send_one(store, flowed({"n": 2}, singleton=single("cancel")))
    assert second not in (None, first)
    with pytest.raises(LeaseLostError):
        await store.commit(claim.lease, Transition(steps=[], outcome=Completed("late")))
    old = await store.get_run(RunId(claim.lease.run_id))
    assert (old.status, old.result, [s.name for s in old.steps]) == ("cancelled", None, ["a"])
    assert [(a.number, a.outcome) for a in old.history] == [(1, "cancelled")]
    assert await active(store) == [second]
    (holder,) = await claim_all(store)
    assert holder.lease.run_id == second
    await store.commit(holder.lease, Transition(steps=[], outcome=Completed("done")))
    third = await send_one(store, flowed({"n": 3}, singleton=single("cancel")))
    assert (await store.get_run(second)).status == "completed"  # finished: left alone
    assert await active(store) == [third]


async def test_a_singleton_cancel_answers_an_invoking_caller(store: Store) -> None:
    caller = await start(store, event="test/caller")
    claim = await claim_one(store)
    child = msgspec.structs.replace(
        new_run(EVENT, parent=ParentLink(caller, "call")), flow=Flow(singleton=single("cancel"))
    )
    call = PendingStep(name="call", kind="invoke", delay=DAY, child=child)
    await store.commit(claim.lease, Transition(steps=[], outcome=Suspend([call])))
    replacement = await send_one(store, flowed(singleton=single("cancel")))
    assert (await store.get_run(child.id)).status == "cancelled"
    assert await active(store) == [replacement]
    woken = await store.get_run(caller)
    assert (woken.status, woken.steps[-1].error) == ("queued", CANCELLED)


async def test_singletons_in_one_batch_are_decided_in_order(store: Store) -> None:
    a, b = flowed(singleton=single("skip")), flowed(singleton=single("skip"))
    assert await send(store, a, b) == [a.id, a.id]
    c, d = flowed(singleton=single("cancel")), flowed(singleton=single("cancel"))
    assert await send(store, c, d) == [c.id, d.id]
    assert (await store.get_run(a.id)).status == "cancelled"
    assert (await store.get_run(c.id)).status == "cancelled"
    assert await active(store) == [d.id]


async def test_a_repeated_keyed_send_is_no_new_event_to_flow_control(store: Store) -> None:
    flow: dict[str, Any] = {
        "singleton": single("cancel"),
        "rate_limit": rate(1, timedelta(hours=1)),
    }
    first = await send_one(store, flowed(key="k1", **flow))
    assert first is not None
    assert await send_one(store, flowed(key="k1", **flow)) == first  # not cancelled, not limited
    assert await active(store) == [first]
    a, b = flowed(key="k2", **flow), flowed(key="k2", **flow)
    assert await send(store, a, b) == [None, None]  # over the rate, both: one send
    assert await active(store) == [first]


@pytest.mark.parametrize("mode", ["skip", "cancel"])
async def test_concurrent_senders_leave_one_active_run(
    store: Store, clock: VirtualClock, mode: Literal["skip", "cancel"]
) -> None:
    async with senders(store, clock, 12) as stores:
        for round_ in range(8):
            bucket = single(mode, bucket=f"round={round_}")
            runs = [flowed({"round": round_}, singleton=bucket) for _ in range(12)]
            answers = await all_at_once(stores, runs)
            page = await store.list_runs(
                RunFilter(event=EVENT, data={"round": round_}), limit=100, cursor=None
            )
            unfinished = [r.id for r in page.runs if r.status == "queued"]
            assert len(unfinished) == 1, f"round {round_}: {len(unfinished)} unfinished"
            if mode == "skip":
                assert set(answers) == set(unfinished)
                assert len(page.runs) == 1
            else:
                assert len(set(answers)) == len(page.runs) == 12
                assert sum(r.status == "cancelled" for r in page.runs) == 11
