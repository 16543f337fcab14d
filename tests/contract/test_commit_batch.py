"""``Store.commit_batch``: many runs' commits and the claims into the slots they free.
Every test runs on each store (the memory store commits one by one)."""

from __future__ import annotations

from datetime import timedelta

import pytest

from slayq.errors import LeaseLostError, StoreError
from slayq.model import (
    Completed,
    Continue,
    ErrorInfo,
    Failed,
    OutgoingEvent,
    PendingStep,
    StepRecord,
    Suspend,
    Transition,
)
from slayq.runtime.clock import VirtualClock
from slayq.store.protocol import ClaimRequest, QueueLimit, Store
from tests.contract.helpers import LEASE, claim_all, new_run, start, starting

pytestmark = pytest.mark.anyio


def ran(name: str, output: object = None) -> StepRecord:
    return StepRecord(name=name, kind="run", output=output)


def finished(*steps: StepRecord, result: object = None) -> Transition:
    return Transition(steps=list(steps), outcome=Completed(result))


async def test_each_commit_of_a_batch_lands_with_its_own_outcome(
    store: Store, clock: VirtualClock
) -> None:
    ids = [await start(store) for _ in range(5)]
    claims = {c.lease.run_id: c for c in await claim_all(store)}
    nap = PendingStep(name="nap", kind="sleep", delay=timedelta(seconds=10))
    commits = [
        (claims[ids[0]].lease, finished(ran("a", {"z": 1, "a": 2}), result=[1, None])),
        (claims[ids[1]].lease, Transition(steps=[ran("b", None)], outcome=Continue())),
        (claims[ids[2]].lease, Transition(steps=[], outcome=Suspend([nap]))),
        (
            claims[ids[3]].lease,
            Transition(
                steps=[],
                outcome=Failed(ErrorInfo(type="E", message="m"), retry_after=timedelta(seconds=5)),
            ),
        ),
        (claims[ids[4]].lease, Transition(steps=[], outcome=Failed(ErrorInfo("E", "for good")))),
    ]
    batch = await store.commit_batch(commits, claims=[])
    assert batch.errors == [None] * 5
    runs = [await store.get_run(run_id) for run_id in ids]
    assert [r.status for r in runs] == ["completed", "running", "sleeping", "queued", "failed"]
    assert runs[0].result == [1, None]
    assert [(s.name, s.output) for s in runs[0].steps] == [("a", {"z": 1, "a": 2})]
    assert [(s.name, s.output) for s in runs[1].steps] == [("b", None)]
    assert runs[3].attempts == 2
    assert runs[4].error == ErrorInfo("E", "for good")
    clock.advance(timedelta(seconds=10))  # the Continue's lease (30 s) still holds
    woken = {c.lease.run_id: c for c in await claim_all(store)}
    assert set(woken) == {ids[2], ids[3]}
    assert [(s.name, s.kind) for s in woken[ids[2]].memo] == [("nap", "sleep")]


async def test_a_lost_lease_inside_a_batch_fails_only_that_run(
    store: Store, clock: VirtualClock
) -> None:
    ids = [await start(store) for _ in range(3)]
    claims = {c.lease.run_id: c for c in await claim_all(store)}
    assert await store.cancel_run(ids[1], actor="test")  # its holder's lease is gone
    batch = await store.commit_batch(
        [(claims[run_id].lease, finished(ran("s", run_id))) for run_id in ids], claims=[]
    )
    assert batch.errors[0] is None and batch.errors[2] is None
    assert isinstance(batch.errors[1], LeaseLostError)
    runs = [await store.get_run(run_id) for run_id in ids]
    assert [r.status for r in runs] == ["completed", "cancelled", "completed"]
    assert [s.output for s in runs[0].steps] == [ids[0]]
    assert runs[1].steps == []


async def test_a_refused_commit_inside_a_batch_fails_only_that_run(store: Store) -> None:
    ids = [await start(store) for _ in range(3)]
    claims = {c.lease.run_id: c for c in await claim_all(store)}
    first = claims[ids[1]].lease
    await store.commit(first, Transition(steps=[ran("a")], outcome=Continue()))
    batch = await store.commit_batch(
        [
            (claims[ids[0]].lease, finished(ran("x"))),
            (first, finished(ran("a"))),  # "a" is recorded already: refused
            (claims[ids[2]].lease, finished(ran("y"))),
        ],
        claims=[],
    )
    assert batch.errors[0] is None and batch.errors[2] is None
    assert isinstance(batch.errors[1], StoreError)
    statuses = [(await store.get_run(run_id)).status for run_id in ids]
    assert statuses == ["completed", "running", "completed"]


async def test_commits_that_send_events_take_their_place_in_a_batch(store: Store) -> None:
    ids = [await start(store) for _ in range(2)]
    claims = {c.lease.run_id: c for c in await claim_all(store)}
    child = new_run("test/child")
    sends = Transition(steps=[ran("s")], outcome=Completed(None), sent=[starting(child)])
    batch = await store.commit_batch(
        [(claims[ids[0]].lease, sends), (claims[ids[1]].lease, finished())], claims=[]
    )
    assert batch.errors == [None, None]
    assert (await store.get_run(child.id)).status == "queued"
    assert {(await store.get_run(i)).status for i in ids} == {"completed"}


async def test_a_batch_claims_into_the_slots_its_commits_freed(store: Store) -> None:
    group = QueueLimit(names=["general"], concurrency=2)
    for _ in range(4):
        await start(store)
    held = await store.claim(queues=[group], limit=10, lease_for=LEASE, owner="w1")
    assert len(held) == 2
    request = ClaimRequest(queues=[group], limit=10, lease_for=LEASE, owner="w1")
    # The limit is cluster-wide: with both slots held, claiming alone finds none free.
    assert (await store.commit_batch([], claims=[request])).claims == [[]]
    batch = await store.commit_batch([(held[0].lease, finished())], claims=[request])
    assert batch.errors == [None]
    (claimed,) = batch.claims
    assert len(claimed) == 1  # the one slot the commit freed, not more
    assert claimed[0].lease.run_id not in {c.lease.run_id for c in held}


async def test_an_event_sent_alone_to_a_batch_claim_is_claimed(store: Store) -> None:
    await store.send_events([OutgoingEvent(name="x", data={}, run=new_run())])
    request = ClaimRequest(queues=None, limit=5, lease_for=LEASE, owner="w1")
    batch = await store.commit_batch([], claims=[request, request])
    assert [len(c) for c in batch.claims] == [1, 0]
