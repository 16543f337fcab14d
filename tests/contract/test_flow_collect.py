"""Debounce and batch, decided when events are sent: the same on every store.

Runs are built as a client resolves them (``NewRun.flow``); the virtual clock decides
what is due. The tests with concurrent senders give each sender a store of its own on
PostgreSQL (its own pool, so its own connections); on the memory store they share one.
"""

from __future__ import annotations

import random
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager
from datetime import timedelta
from typing import Any

import anyio
import anyio.lowlevel
import msgspec
import pytest

from slayq.model import (
    CancelRule,
    Flow,
    FlowBatch,
    FlowWindow,
    OutgoingEvent,
    PendingStep,
    RunFilter,
    RunId,
    RunInfo,
    Suspend,
    Transition,
)
from slayq.runtime.clock import VirtualClock
from slayq.store.protocol import Store
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

PERIOD = timedelta(minutes=5)
TIMEOUT = timedelta(minutes=30)
BATCH_TIMEOUT = timedelta(seconds=5)


def edit(
    doc: str,
    rev: int,
    *,
    timeout: timedelta | None = TIMEOUT,
    cancel_on: list[CancelRule] | None = None,
) -> OutgoingEvent:
    """An edit of ``doc``, debounced per document."""
    window = FlowWindow(bucket=f"doc/edited doc={doc}", period=PERIOD, timeout=timeout)
    run = new_run("doc/edited", {"doc": doc, "rev": rev}, cancel_on=cancel_on)
    return starting(msgspec.structs.replace(run, flow=Flow(debounce=window)))


def item(
    account: str,
    n: int,
    *,
    max_size: int = 100,
    max_bytes: int = 512 * 1024,
    pad: str = "",
) -> OutgoingEvent:
    """An event for ``account``, batched per account."""
    batch = FlowBatch(
        bucket=f"usage/recorded account={account}",
        max_size=max_size,
        timeout=BATCH_TIMEOUT,
        max_bytes=max_bytes,
    )
    data: dict[str, Any] = {"account": account, "n": n}
    if pad:
        data["pad"] = pad
    run = new_run("usage/recorded", data)
    return starting(msgspec.structs.replace(run, flow=Flow(batch=batch)))


async def runs_of(store: Store, event: str) -> list[RunInfo]:
    """Every run of ``event``, oldest first."""
    found: list[RunInfo] = []
    cursor: str | None = None
    while True:
        page = await store.list_runs(RunFilter(event=event), limit=100, cursor=cursor)
        found += page.runs
        cursor = page.next_cursor
        if cursor is None:
            return sorted(found, key=lambda r: (r.created_at, r.id))


@asynccontextmanager
async def other_store(store: Store) -> AsyncIterator[Store]:
    """A second store on the same data: on PostgreSQL, its own pool of connections."""
    from slayq.store.postgres import PostgresStore

    if not isinstance(store, PostgresStore):
        yield store
        return
    other = PostgresStore(store.url, clock=store.clock, schema=store.schema)
    await other.open()
    try:
        yield other
    finally:
        await other.aclose()


# -- debounce ---------------------------------------------------------------------------


async def test_a_burst_makes_one_run_with_the_last_data_due_a_period_after_the_last(
    store: Store, clock: VirtualClock
) -> None:
    start = clock.now()
    answers = await store.send_events([edit("a", 1), edit("a", 2)])
    clock.advance(timedelta(minutes=1))
    answers += await store.send_events([edit("a", 3)])
    clock.advance(timedelta(minutes=2))
    answers += await store.send_events([edit("a", 4), edit("b", 1)])
    pending = answers[0]
    assert pending is not None
    assert answers[:4] == [pending] * 4
    assert answers[4] not in (None, pending), "another document debounces on its own"

    run = await store.get_run(pending)
    last = start + timedelta(minutes=3)
    assert (run.status, run.data, run.run_at) == ("queued", {"doc": "a", "rev": 4}, last + PERIOD)
    assert [r.id for r in await runs_of(store, "doc/edited")] == [pending, answers[4]]
    clock.set(last + PERIOD - timedelta(microseconds=1))
    assert await claim_all(store) == []
    clock.set(last + PERIOD)
    claims = await claim_all(store)
    assert [(c.lease.run_id, c.data) for c in claims] == [
        (pending, {"doc": "a", "rev": 4}),
        (answers[4], {"doc": "b", "rev": 1}),
    ]


async def test_a_steady_stream_runs_at_the_timeout(store: Store, clock: VirtualClock) -> None:
    start = clock.now()
    rev = 0
    while clock.now() < start + TIMEOUT:
        rev += 1
        (run_id,) = await store.send_events([edit("a", rev)])
        clock.advance(PERIOD / 2)
        claims = await claim_all(store)
        if clock.now() < start + TIMEOUT:
            assert claims == [], f"due before the timeout, at {clock.now() - start}"
    assert clock.now() == start + TIMEOUT
    assert [(c.lease.run_id, c.data, c.due_at) for c in claims] == [
        (run_id, {"doc": "a", "rev": rev}, start + TIMEOUT)
    ]
    assert len(await runs_of(store, "doc/edited")) == 1


async def test_without_a_timeout_a_debounce_waits_for_a_quiet_period(
    store: Store, clock: VirtualClock
) -> None:
    start = clock.now()
    for rev in range(1, 30):
        (run_id,) = await store.send_events([edit("a", rev, timeout=None)])
        clock.advance(PERIOD / 2)
    run = await store.get_run(run_id) if run_id is not None else None
    assert run is not None
    assert run.run_at == start + 28 * PERIOD / 2 + PERIOD
    assert len(await runs_of(store, "doc/edited")) == 1


async def test_an_event_after_the_run_started_begins_a_new_debounce(
    store: Store, clock: VirtualClock
) -> None:
    (first,) = await store.send_events([edit("a", 1)])
    clock.advance(PERIOD)
    (claim,) = await claim_all(store)
    assert claim.lease.run_id == first

    (second,) = await store.send_events([edit("a", 2)])
    (joined,) = await store.send_events([edit("a", 3)])
    assert second not in (None, first)
    assert joined == second
    assert (await store.get_run(first)).data == {"doc": "a", "rev": 1}, "started: unchanged"
    run = await store.get_run(second) if second is not None else None
    assert run is not None
    assert (run.status, run.data, run.run_at) == (
        "queued",
        {"doc": "a", "rev": 3},
        clock.now() + PERIOD,
    )


async def test_a_run_that_started_and_was_queued_again_is_not_joined(
    store: Store, clock: VirtualClock
) -> None:
    await store.send_events([edit("a", 1)])
    clock.advance(PERIOD)
    (claim,) = await claim_all(store)
    await store.release(claim.lease)
    assert (await store.get_run(claim.lease.run_id)).status == "queued"

    (second,) = await store.send_events([edit("a", 2)])
    assert second not in (None, claim.lease.run_id)
    assert (await store.get_run(claim.lease.run_id)).data == {"doc": "a", "rev": 1}


async def test_a_rerun_of_a_pending_run_is_never_joined(store: Store) -> None:
    (pending,) = await store.send_events([edit("a", 1)])
    assert pending is not None
    copy = edit("a", 1).run
    assert copy is not None
    fork = await store.fork_run(copy, source=pending, before_step=None, actor="ops")
    (joined,) = await store.send_events([edit("a", 2)])
    assert joined == pending != fork
    assert (await store.get_run(fork)).data == {"doc": "a", "rev": 1}


async def test_the_debounced_run_cancels_on_the_last_events_rules(
    store: Store, clock: VirtualClock
) -> None:
    def rule(rev: int) -> list[CancelRule]:
        return [CancelRule(event="doc/deleted", field="rev", value=rev)]

    (run_id,) = await store.send_events([edit("a", 1, cancel_on=rule(1))])
    await store.send_events([edit("a", 2, cancel_on=rule(2))])
    assert run_id is not None
    await store.send_events([plain_event("doc/deleted", {"rev": 1})])
    assert (await store.get_run(run_id)).status == "queued", "the first event's rule is gone"
    await store.send_events([plain_event("doc/deleted", {"rev": 2})])
    assert (await store.get_run(run_id)).status == "cancelled"


async def test_an_event_that_joins_a_run_still_wakes_waits(store: Store) -> None:
    """Debounce and batch decide the event's run; the event itself is ingested as ever."""
    waiter = await start(store, event="watcher")
    claim = await claim_one(store)
    wait = PendingStep(
        name="edited", kind="wait", event="doc/edited", match_field="rev", match_value=2
    )
    await store.commit(claim.lease, Transition(steps=[], outcome=Suspend([wait])))
    first, second = await store.send_events([edit("a", 1), edit("a", 2)])
    assert first == second
    run = await store.get_run(waiter)
    assert (run.status, run.steps[0].output) == ("queued", {"doc": "a", "rev": 2})


async def test_concurrent_senders_leave_exactly_one_pending_run(
    store: Store, clock: VirtualClock
) -> None:
    sent: list[tuple[RunId | None, int]] = []

    async def send(sender: Store, rev: int) -> None:
        (run_id,) = await sender.send_events([edit("a", rev)])
        sent.append((run_id, rev))

    async with other_store(store) as other:
        for round_ in range(40):
            async with anyio.create_task_group() as group:
                group.start_soon(send, store, 2 * round_)
                group.start_soon(send, other, 2 * round_ + 1)
            clock.advance(timedelta(seconds=1))
    runs = await runs_of(store, "doc/edited")
    assert len(runs) == 1
    assert {run_id for run_id, _ in sent} == {runs[0].id}
    assert runs[0].data["rev"] in (78, 79), "the data of one of the last round's events"


async def test_concurrent_senders_and_a_claimer_never_leave_two_pending_runs(
    store: Store, clock: VirtualClock
) -> None:
    answered: dict[RunId, set[int]] = {}

    async def send(sender: Store, rev: int) -> None:
        (run_id,) = await sender.send_events([edit("a", rev)])
        assert run_id is not None
        answered.setdefault(run_id, set()).add(rev)

    claimed: dict[RunId, dict[str, Any]] = {}

    async def claim(claimer: Store) -> None:
        for c in await claimer.claim(queues=None, limit=10, lease_for=LEASE, owner="racer"):
            claimed[c.lease.run_id] = c.data

    async with other_store(store) as other, other_store(store) as third:
        for round_ in range(30):
            clock.advance(PERIOD)  # the pending run is due: the claimer races the senders
            async with anyio.create_task_group() as group:
                group.start_soon(send, store, 2 * round_)
                group.start_soon(send, other, 2 * round_ + 1)
                group.start_soon(claim, third)
            queued = [r for r in await runs_of(store, "doc/edited") if r.status == "queued"]
            assert len(queued) <= 1, f"round {round_}: {len(queued)} pending runs"
    runs = {r.id: r for r in await runs_of(store, "doc/edited")}
    assert set(answered) == set(runs), "every answer is a run, every run answered someone"
    for run_id, revs in answered.items():
        assert runs[run_id].data["rev"] in revs, "a run has the data of an event it answered"
    for run_id, data in claimed.items():
        assert runs[run_id].data == data, "a run's data never changes once it started"


# -- batch ------------------------------------------------------------------------------


@pytest.mark.parametrize("sends", [[250], [1] * 250, [1, 7, 120, 1, 121]])
async def test_250_events_make_batches_of_100_100_and_50(
    store: Store, clock: VirtualClock, sends: list[int]
) -> None:
    start = clock.now()
    answers: list[RunId | None] = []
    n = 0
    for size in sends:
        answers += await store.send_events([item("a", n + i) for i in range(size)])
        n += size
    a, b, c = answers[0], answers[100], answers[200]
    assert answers == [a] * 100 + [b] * 100 + [c] * 50
    assert len({a, b, c}) == 3
    runs = {r.id: r for r in await runs_of(store, "usage/recorded")}
    assert len(runs) == 3
    for run_id, numbers, due in ((a, range(100), start), (b, range(100, 200), start)):
        assert run_id is not None
        run = await store.get_run(run_id)
        assert run.data == {"events": [{"account": "a", "n": i} for i in numbers]}
        assert run.run_at == due, "a full batch is due at once"
    assert c is not None
    assert (await store.get_run(c)).run_at == start + BATCH_TIMEOUT

    assert sorted(len(claim.data["events"]) for claim in await claim_all(store)) == [100, 100]
    clock.set(start + BATCH_TIMEOUT - timedelta(microseconds=1))
    assert await claim_all(store) == []
    clock.set(start + BATCH_TIMEOUT)
    (last,) = await claim_all(store)
    assert (last.lease.run_id, last.data["events"][0]["n"], len(last.data["events"])) == (
        c,
        200,
        50,
    )


async def test_each_bucket_has_its_own_batch(store: Store) -> None:
    answers = await store.send_events([item("a", 1), item("b", 1), item("a", 2)])
    assert answers[0] == answers[2] != answers[1]
    assert answers[0] is not None and answers[1] is not None
    assert (await store.get_run(answers[0])).data["events"] == [
        {"account": "a", "n": 1},
        {"account": "a", "n": 2},
    ]
    assert (await store.get_run(answers[1])).data["events"] == [{"account": "b", "n": 1}]


async def test_a_batch_claimed_before_it_was_full_takes_no_more_events(
    store: Store, clock: VirtualClock
) -> None:
    first = await store.send_events([item("a", i, max_size=10) for i in range(3)])
    clock.advance(BATCH_TIMEOUT)
    (claim,) = await claim_all(store)
    assert claim.lease.run_id == first[0]

    (later,) = await store.send_events([item("a", 3, max_size=10)])
    assert later not in (None, first[0]), "the next event opens a new batch"
    assert len((await store.get_run(first[0])).data["events"]) == 3
    await store.release(claim.lease)
    (again,) = await store.send_events([item("a", 4, max_size=10)])
    assert again == later, "the started batch, queued again, is not reopened"


async def test_a_batch_whose_timeout_passed_takes_events_until_it_starts(
    store: Store, clock: VirtualClock
) -> None:
    start = clock.now()
    (first,) = await store.send_events([item("a", 0, max_size=3)])
    clock.advance(BATCH_TIMEOUT * 2)
    answers = await store.send_events([item("a", i, max_size=3) for i in (1, 2, 3)])
    assert answers[:2] == [first, first], "not started yet: it fills up"
    assert answers[2] not in (None, first), "then full: the next event opens a new batch"
    assert first is not None
    run = await store.get_run(first)
    assert (len(run.data["events"]), run.run_at) == (3, start + BATCH_TIMEOUT)


async def test_a_batch_holds_at_most_max_bytes_of_data(store: Store, clock: VirtualClock) -> None:
    one = len(msgspec.json.encode({"account": "a", "n": 0, "pad": "x" * 20}))
    wrapper = len(b'{"events":[]}')
    limit = wrapper + 3 * one + 2  # room for three events, commas included
    answers = await store.send_events(
        [item("a", i, max_bytes=limit, pad="x" * 20) for i in range(5)]
    )
    (big,) = await store.send_events([item("a", 5, max_bytes=limit, pad="x" * limit)])
    assert answers == [answers[0]] * 3 + [answers[3]] * 2
    assert answers[0] is not None and answers[3] is not None and big is not None
    full = await store.get_run(answers[0])
    assert len(msgspec.json.encode(full.data)) == limit
    assert full.run_at == clock.now(), "no room for the next event: full, due at once"
    second = await store.get_run(answers[3])
    assert second.run_at == clock.now(), "the oversized event did not fit either"
    assert big not in answers, "an event larger than the limit still makes a batch alone"
    assert len((await store.get_run(big)).data["events"]) == 1


async def test_a_full_batch_is_not_joined_by_a_later_small_event(store: Store) -> None:
    answers = await store.send_events([item("a", i, max_size=2) for i in range(2)])
    (later,) = await store.send_events([item("a", 2, max_size=2)])
    assert answers[0] == answers[1] != later


async def test_concurrent_senders_and_a_claimer_lose_no_event_and_duplicate_none(
    store: Store, clock: VirtualClock
) -> None:
    answers: dict[tuple[int, int], RunId] = {}
    senders, max_size, each = 4, 7, 60
    claimed: dict[RunId, dict[str, Any]] = {}
    rng = random.Random(7)
    chunks = {s: _chunks(each, rng) for s in range(senders)}

    async def send(sender: Store, who: int) -> None:
        n = 0
        for size in chunks[who]:
            batch = [item(f"{who}.{n + i}", 0, max_size=max_size) for i in range(size)]
            # one bucket for all: the account in the data differs, the bucket does not
            batch = [_one_bucket(e) for e in batch]
            ids = await sender.send_events(batch)
            for i, run_id in enumerate(ids):
                assert run_id is not None
                answers[(who, n + i)] = run_id
            n += size

    async def race(claimer: Store, done: anyio.Event) -> None:
        while not done.is_set():
            clock.advance(BATCH_TIMEOUT / 3)  # open batches time out while they fill
            for c in await claimer.claim(queues=None, limit=5, lease_for=LEASE, owner="racer"):
                claimed[c.lease.run_id] = c.data
            await anyio.lowlevel.checkpoint()  # the memory store's claim never waits

    async with AsyncExitStack() as stack:
        claimer = await stack.enter_async_context(other_store(store))
        stores = [await stack.enter_async_context(other_store(store)) for _ in range(senders)]
        done = anyio.Event()
        async with anyio.create_task_group() as group:
            group.start_soon(race, claimer, done)
            async with anyio.create_task_group() as sending:
                for who, sender in enumerate(stores):
                    sending.start_soon(send, sender, who)
            done.set()

    where: dict[tuple[int, int], RunId] = {}
    for run in await runs_of(store, "usage/recorded"):
        events = run.data["events"]
        if run.id in claimed:
            assert claimed[run.id] == run.data, "a batch never changes once it started"
        assert 1 <= len(events) <= max_size
        for event in events:
            who, n = (int(part) for part in event["account"].split("."))
            assert (who, n) not in where, f"event {(who, n)} is in two batches"
            where[(who, n)] = run.id
        for who in range(senders):  # each sender's events in the order it sent them
            mine = [int(e["account"].split(".")[1]) for e in events if e["account"][0] == str(who)]
            assert mine == sorted(mine)
    assert where == answers, "every event is in the batch it answered, none lost"


def _chunks(total: int, rng: random.Random) -> list[int]:
    sizes: list[int] = []
    while sum(sizes) < total:
        sizes.append(min(rng.choice([1, 1, 2, 3, 9]), total - sum(sizes)))
    return sizes


def _one_bucket(event: OutgoingEvent) -> OutgoingEvent:
    assert event.run is not None and event.run.flow is not None
    batch = event.run.flow.batch
    assert batch is not None
    flow = Flow(batch=msgspec.structs.replace(batch, bucket="usage/recorded (all runs)"))
    return msgspec.structs.replace(event, run=msgspec.structs.replace(event.run, flow=flow))


@pytest.mark.parametrize("outcome", ["continue", "completed"])
async def test_events_a_run_sends_in_a_commit_join_batches_as_a_clients_do(
    store: Store, outcome: str
) -> None:
    from slayq.model import Completed, Continue, StepRecord

    await start(store, event="orders/sync")
    sender = await claim_one(store)
    sent = [item("a", 1), item("a", 2)]
    steps = [StepRecord(name="send", kind="send")]
    done = Continue() if outcome == "continue" else Completed(result=None)
    await store.commit(sender.lease, Transition(steps=steps, outcome=done, sent=sent))
    (batch,) = await runs_of(store, "usage/recorded")
    assert (await store.get_run(batch.id)).data == {
        "events": [{"account": "a", "n": 1}, {"account": "a", "n": 2}]
    }
    # and a later client send joins the same batch
    (answer,) = await store.send_events([item("a", 3)])
    assert answer == batch.id
