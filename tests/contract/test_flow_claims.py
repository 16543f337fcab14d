"""Claim-time flow control: concurrency keys and throttles (``model.Flow``), on every store.

A gated run is claimed only while each of its concurrency buckets has fewer than its
limit of runs holding a lease, its queue group has a slot and, on its first start, its
throttle allows one; keys take turns, and a full key never holds back another.
"""

from __future__ import annotations

from collections import Counter
from contextlib import asynccontextmanager
from datetime import timedelta
from typing import TYPE_CHECKING, Any

import anyio
import msgspec
import pytest

from slayq.model import (
    Claim,
    Completed,
    ErrorInfo,
    Failed,
    Flow,
    FlowOnce,
    FlowRate,
    FlowSlot,
    NewRun,
    PendingStep,
    RunId,
    Schedule,
    Suspend,
    Transition,
)
from slayq.runtime.clock import VirtualClock
from slayq.store.memory import MemoryStore
from slayq.store.protocol import ClaimRequest, QueueLimit, Store
from tests.contract.helpers import LEASE, claim_all, new_run, starting

if TYPE_CHECKING:
    from collections.abc import AsyncIterator

pytestmark = pytest.mark.anyio

EVENT = "flow/sync"


def bucket(key: object) -> str:
    return f"{EVENT} customer={key}"


def keyed(
    key: object,
    limit: int = 2,
    *,
    queue: str = "general",
    more: list[FlowSlot] | None = None,
) -> NewRun:
    """A run under the concurrency key ``customer=key`` (and the ``more`` buckets)."""
    slots = [FlowSlot(bucket=bucket(key), limit=limit), *(more or [])]
    run = new_run(EVENT, {"customer": key}, queue=queue)
    return msgspec.structs.replace(run, flow=Flow(concurrency=slots))


def throttled(interval: timedelta, burst: int = 0) -> NewRun:
    run = new_run("flow/call", {})
    rate = FlowRate(bucket="flow/call", interval=interval, burst=burst)
    return msgspec.structs.replace(run, flow=Flow(throttle=rate))


async def send(store: Store, runs: list[NewRun]) -> list[RunId]:
    ids = await store.send_events([starting(run) for run in runs])
    return [RunId(str(run_id)) for run_id in ids]


def keys(claims: list[Claim]) -> Counter[Any]:
    return Counter(claim.data.get("customer") for claim in claims)


def done() -> Transition:
    return Transition(steps=[], outcome=Completed(None))


def nap(seconds: float) -> Transition:
    pending = PendingStep(name="nap", kind="sleep", delay=timedelta(seconds=seconds))
    return Transition(steps=[], outcome=Suspend([pending]))


@asynccontextmanager
async def second_claimer(store: Store, clock: VirtualClock) -> AsyncIterator[Store]:
    """Another process's store: on PostgreSQL a pool of its own, on the same clock."""
    if isinstance(store, MemoryStore):
        yield store
        return
    from slayq.store.postgres import PostgresStore

    assert isinstance(store, PostgresStore)
    other = type(store)(store.url, clock=clock, schema=store.schema)
    async with other:
        yield other


# -- concurrency keys ------------------------------------------------------------------


async def test_a_key_never_has_more_runs_leased_than_its_limit(store: Store) -> None:
    await send(store, [keyed("a") for _ in range(5)])
    first = await claim_all(store, owner="w1")
    assert keys(first) == {"a": 2}
    assert await claim_all(store, owner="w2") == []
    await store.commit(first[0].lease, done())
    again = await claim_all(store, owner="w2")
    assert keys(again) == {"a": 1}


async def test_two_claimers_at_the_same_moment_never_exceed_a_keys_limit(
    store: Store, clock: VirtualClock
) -> None:
    rounds = 5 if isinstance(store, MemoryStore) else 30
    async with second_claimer(store, clock) as other:
        for round_ in range(rounds):
            await send(store, [keyed(round_, limit=2) for _ in range(6)])
            got: list[list[Claim]] = []
            go = anyio.Event()
            async with anyio.create_task_group() as tg:
                tg.start_soon(claim_when, go, store, "w1", got)
                tg.start_soon(claim_when, go, other, "w2", got)
                await anyio.sleep(0.01)  # both are waiting for the signal
                go.set()
            assert sorted(len(claims) for claims in got) in ([0, 2], [1, 1]), f"round {round_}"


async def claim_when(go: anyio.Event, claimer: Store, owner: str, got: list[list[Claim]]) -> None:
    await go.wait()
    got.append(await claimer.claim(queues=None, limit=5, lease_for=LEASE, owner=owner))


async def test_a_crashed_holders_slot_frees_when_its_lease_expires(
    store: Store, clock: VirtualClock
) -> None:
    (held, waiting) = await send(store, [keyed("a", limit=1), keyed("a", limit=1)])
    (claim,) = await claim_all(store, owner="crashed")
    assert claim.lease.run_id == held
    assert await claim_all(store) == []
    clock.advance(LEASE + timedelta(seconds=1))
    # The key has room again, for one run: the run that was held is taken over first
    # (it is the older), and the other keeps waiting: a takeover needs a slot too.
    (taken,) = await claim_all(store, owner="w2")
    assert taken.lease.run_id == held
    assert taken.taken_over_from == "crashed"
    assert await claim_all(store) == []
    await store.commit(taken.lease, done())
    (last,) = await claim_all(store)
    assert last.lease.run_id == waiting


async def test_a_sleeping_run_holds_no_slot(store: Store, clock: VirtualClock) -> None:
    (sleeper, other) = await send(store, [keyed("a", limit=1), keyed("a", limit=1)])
    (claim,) = await claim_all(store)
    await store.commit(claim.lease, nap(10))
    (second,) = await claim_all(store)
    assert second.lease.run_id == other
    clock.advance(timedelta(seconds=10))
    assert await claim_all(store) == []  # due again, but the key is full
    await store.commit(second.lease, done())
    (woken,) = await claim_all(store)
    assert woken.lease.run_id == sleeper


async def test_a_full_key_never_holds_back_another(store: Store) -> None:
    await send(store, [keyed("a") for _ in range(1000)])
    (b,) = await send(store, [keyed("b")])
    claims = await claim_all(store, limit=10)
    assert keys(claims) == {"a": 2, "b": 1}
    assert await claim_all(store, limit=10) == []
    assert b in {claim.lease.run_id for claim in claims}


async def test_keys_take_turns(store: Store) -> None:
    for key in ("a", "b", "c"):
        await send(store, [keyed(key, limit=10) for _ in range(4)])
    first = await claim_all(store, limit=3)
    assert sorted(keys(first)) == ["a", "b", "c"]  # not the three oldest, all of a
    turns = [claim.data["customer"] for _ in range(6) for claim in await claim_all(store, limit=1)]
    assert turns == ["a", "b", "c", "a", "b", "c"]


async def test_a_run_under_several_keys_needs_room_in_each(store: Store) -> None:
    region = FlowSlot(bucket="flow/sync region=eu", limit=3)
    await send(store, [keyed(key, limit=2, more=[region]) for key in "aaabbb"])
    claims = await claim_all(store)
    assert len(claims) == 3
    assert all(n <= 2 for n in keys(claims).values())
    assert await claim_all(store) == []
    await store.commit(claims[0].lease, done())
    assert len(await claim_all(store)) == 1


async def test_the_queue_limit_and_the_key_limits_hold_together(store: Store) -> None:
    await send(store, [new_run()])  # a plain run of the queue takes a slot first
    await send(store, [keyed(key) for key in "aaaabbbb"])
    group = [QueueLimit(names=["general"], concurrency=4)]
    claims = await store.claim(queues=group, limit=10, lease_for=LEASE, owner="w1")
    assert len(claims) == 4
    assert keys(claims) == {None: 1, "a": 2, "b": 1}
    assert await store.claim(queues=group, limit=10, lease_for=LEASE, owner="w2") == []


async def test_a_group_commit_claims_into_the_slots_of_a_key(store: Store) -> None:
    await send(store, [keyed("a") for _ in range(4)])
    first, _ = await claim_all(store)
    request = ClaimRequest(queues=None, limit=10, lease_for=LEASE, owner="w1")
    batch = await store.commit_batch([(first.lease, done())], claims=[request])
    assert batch.errors == [None]
    (claims,) = batch.claims
    assert keys(claims) == {"a": 1}  # the slot the commit freed, no more


async def test_a_lease_that_ran_out_on_the_last_attempt_fails_the_run(
    store: Store, clock: VirtualClock
) -> None:
    run = msgspec.structs.replace(keyed("a", limit=1), max_attempts=1)
    (run_id, other) = await send(store, [run, keyed("a", limit=1)])
    await claim_all(store, owner="crashed")
    clock.advance(LEASE + timedelta(seconds=1))
    (claim,) = await claim_all(store)
    assert claim.lease.run_id == other
    assert (await store.get_run(run_id)).status == "failed"


async def test_a_gated_run_taken_over_records_the_crashed_holders_attempt(
    store: Store, clock: VirtualClock
) -> None:
    (run_id,) = await send(store, [keyed("a", limit=1)])
    await claim_all(store, owner="crashed")
    clock.advance(LEASE + timedelta(seconds=1))
    (taken,) = await claim_all(store, owner="w2")
    assert (taken.attempt, taken.taken_over_from) == (2, "crashed")
    history = (await store.get_run(run_id)).history
    assert [(a.number, a.outcome, a.owner) for a in history] == [
        (1, "lease_expired", "crashed"),
        (2, "running", "w2"),
    ]


async def test_a_gated_run_resumed_after_its_wait_timed_out_finds_the_wait_expired(
    store: Store, clock: VirtualClock
) -> None:
    (run_id,) = await send(store, [keyed("a", limit=1)])
    (claim,) = await claim_all(store)
    approval = PendingStep(
        name="approval", kind="wait", delay=timedelta(hours=2), event="test/approved"
    )
    await store.commit(claim.lease, Transition([], Suspend([approval])))
    clock.advance(timedelta(hours=2))
    (resumed,) = await claim_all(store)
    assert [(s.name, s.output) for s in resumed.memo] == [("approval", None)]
    (step,) = (await store.get_run(run_id)).steps
    assert (step.name, step.output, step.duration) == ("approval", None, timedelta(hours=2))


async def test_send_time_controls_alone_leave_a_run_ungated(store: Store) -> None:
    run = new_run()
    once = FlowOnce(bucket="test/run", ttl=timedelta(hours=1))
    await send(store, [msgspec.structs.replace(run, flow=Flow(idempotency=once))])
    (claim,) = await claim_all(store)
    assert claim.lease.run_id == run.id


async def test_gated_runs_are_counted_with_the_queues(store: Store, clock: VirtualClock) -> None:
    await send(store, [keyed("a", limit=1) for _ in range(3)])
    await claim_all(store)
    assert await store.due_by_queue() == {"general": 2}
    (queue,) = await store.list_queues()
    assert (queue.name, queue.due, queue.running) == ("general", 2, 1)


# -- throttles -------------------------------------------------------------------------


async def test_a_throttle_starts_a_burst_then_one_per_interval(
    store: Store, clock: VirtualClock
) -> None:
    await send(store, [throttled(timedelta(seconds=1), burst=2) for _ in range(10)])
    assert await run_all(store) == 3  # burst + 1 at once
    assert await run_all(store) == 0
    start = clock.now()
    assert await store.next_wakeup() == start + timedelta(seconds=1)
    clock.advance(timedelta(seconds=1))
    assert await run_all(store) == 1
    clock.advance(timedelta(milliseconds=500))
    assert await run_all(store) == 0
    assert await store.next_wakeup() == start + timedelta(seconds=2)
    clock.advance(timedelta(milliseconds=500))
    assert await run_all(store) == 1
    clock.advance(timedelta(seconds=30))  # idle long enough: a full burst again
    assert await run_all(store) == 3
    assert await run_all(store) == 0


async def run_all(store: Store) -> int:
    """Claim what is due and finish it at once; how many ran."""
    claims = await claim_all(store)
    for claim in claims:
        await store.commit(claim.lease, done())
    return len(claims)


async def test_throttled_runs_start_in_order_and_none_is_dropped(
    store: Store, clock: VirtualClock
) -> None:
    ids = await send(store, [throttled(timedelta(seconds=1)) for _ in range(5)])
    started: list[str] = []
    for _ in range(5):
        started += [claim.lease.run_id for claim in await claim_all(store)]
        clock.advance(timedelta(seconds=1))
    assert started == ids


async def test_a_throttle_holds_back_no_retry_and_no_resume(
    store: Store, clock: VirtualClock
) -> None:
    hour = timedelta(hours=1)
    start = clock.now()
    (run_id, waiting, _) = await send(store, [throttled(hour) for _ in range(3)])
    (first,) = await claim_all(store)
    assert first.lease.run_id == run_id
    failed = Failed(ErrorInfo(type="E", message="again"), retry_after=timedelta(0))
    await store.commit(first.lease, Transition(steps=[], outcome=failed))
    (retry,) = await claim_all(store)  # the retry starts; the other two wait their turn
    assert (retry.lease.run_id, retry.attempt) == (run_id, 2)
    await store.commit(retry.lease, nap(1))
    clock.advance(timedelta(seconds=1))
    (resumed,) = await claim_all(store)
    assert (resumed.lease.run_id, resumed.attempt) == (run_id, 2)
    await store.commit(resumed.lease, done())
    assert await store.next_wakeup() == start + hour
    clock.set(start + hour)
    (second,) = await claim_all(store)
    assert second.lease.run_id == waiting


async def test_keys_and_throttles_together(store: Store, clock: VirtualClock) -> None:
    rate = FlowRate(bucket="flow/sync", interval=timedelta(seconds=1), burst=1)

    def both(key: str) -> NewRun:
        run = keyed(key, limit=1)
        assert run.flow is not None
        return msgspec.structs.replace(run, flow=msgspec.structs.replace(run.flow, throttle=rate))

    await send(store, [both(key) for key in "aabbc"])
    claims = await claim_all(store)
    assert len(claims) == 2  # the throttle's burst, one per key
    assert all(n == 1 for n in keys(claims).values())
    clock.advance(timedelta(seconds=1))
    (third,) = await claim_all(store)
    assert third.data["customer"] not in keys(claims)  # the key with room, not a full one


# -- every way a run is made -----------------------------------------------------------


async def test_a_cron_run_is_held_to_its_key(store: Store, clock: VirtualClock) -> None:
    template = msgspec.structs.replace(keyed("cron", limit=1), event="flow/tick")
    schedule = Schedule(event="flow/tick", cron="* * * * *", template=template)
    await store.set_schedules([schedule], app="worker", events=["flow/tick"])
    clock.advance(timedelta(minutes=1))
    assert len(await store.fire_schedules()) == 1
    (held,) = await claim_all(store)
    await store.extend_leases([held.lease], timedelta(minutes=5))
    clock.advance(timedelta(minutes=1))
    assert len(await store.fire_schedules()) == 1
    assert await claim_all(store) == []  # the previous tick still holds the key
    await store.commit(held.lease, done())
    assert len(await claim_all(store)) == 1


async def test_a_rerun_is_held_to_its_key(store: Store) -> None:
    (original,) = await send(store, [keyed("a", limit=1)])
    (claim,) = await claim_all(store)
    await store.commit(claim.lease, done())
    (again,) = await send(store, [keyed("a", limit=1)])
    (holder,) = await claim_all(store)
    assert holder.lease.run_id == again
    fork = await store.fork_run(keyed("a", limit=1), source=original, before_step=None, actor="t")
    assert await claim_all(store) == []
    await store.commit(holder.lease, done())
    (rerun,) = await claim_all(store)
    assert rerun.lease.run_id == fork


async def test_a_full_queue_group_keeps_the_keys_turns(store: Store) -> None:
    for key in "abc":
        await send(store, [keyed(key, limit=5) for _ in range(3)])
    group = [QueueLimit(names=["general"], concurrency=1)]

    async def turn() -> object:
        (claim,) = await store.claim(queues=group, limit=5, lease_for=LEASE, owner="w")
        assert await store.claim(queues=group, limit=5, lease_for=LEASE, owner="w") == []
        await store.commit(claim.lease, done())
        return claim.data["customer"]

    assert [await turn() for _ in range(6)] == ["a", "b", "c", "a", "b", "c"]


async def test_get_run_says_which_key_holds_a_run_back_and_until_when(
    store: Store, clock: VirtualClock
) -> None:
    holders = await send(store, [keyed(42, limit=1), keyed(42, limit=1)])
    assert (await store.get_run(holders[1])).held_back is None, "no claim holds a slot yet"
    (claim,) = await claim_all(store)
    waiting = holders[1] if claim.lease.run_id == holders[0] else holders[0]
    info = await store.get_run(waiting)
    assert info.flow is not None and info.flow.concurrency[0].limit == 1
    assert info.held_back == "waiting for a concurrency slot of customer=42 (1 of 1 running)"
    await store.commit(claim.lease, done())
    assert (await store.get_run(waiting)).held_back is None

    # a throttle of one start a minute: the second first start waits a minute
    start = clock.now()
    ids = await send(store, [throttled(timedelta(minutes=1)), throttled(timedelta(minutes=1))])
    claims = await claim_all(store)
    assert {c.lease.run_id for c in claims} == {waiting, ids[0]}, (holders, ids)
    later = (start + timedelta(minutes=1)).strftime("%Y-%m-%d %H:%M:%SZ")
    assert (await store.get_run(ids[1])).held_back == f"throttled until {later}"
    # a run already started is never throttled
    assert (await store.get_run(ids[0])).held_back is None
