"""What telemetry needs from a store: the run's trace context and its due time on claims."""

from __future__ import annotations

from datetime import timedelta

import msgspec
import pytest

from slayq.model import NewRun, ParentLink, PendingStep, StepRecord, Suspend, Transition
from slayq.runtime.clock import VirtualClock
from slayq.store.protocol import Store
from tests.contract.helpers import LEASE, claim_one, new_run, starting

pytestmark = pytest.mark.anyio

TRACE = {
    "traceparent": "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
    "tracestate": "vendor=x",
}


def traced(run: NewRun, trace: dict[str, str] | None = TRACE) -> NewRun:
    return msgspec.structs.replace(run, trace=trace)


async def test_a_runs_trace_context_comes_with_every_claim(
    store: Store, clock: VirtualClock
) -> None:
    (run_id,) = await store.send_events([starting(traced(new_run()))])
    first = await claim_one(store)
    assert first.lease.run_id == run_id
    assert first.trace == TRACE
    nap = PendingStep(name="nap", kind="sleep", delay=timedelta(minutes=1))
    await store.commit(first.lease, Transition(steps=[], outcome=Suspend([nap])))
    clock.advance(timedelta(minutes=1))
    assert (await claim_one(store)).trace == TRACE  # and after it resumes


async def test_a_run_without_trace_context_claims_none(store: Store) -> None:
    await store.send_events([starting(new_run())])
    assert (await claim_one(store)).trace is None


async def test_an_invoked_run_keeps_the_trace_context_it_was_made_with(store: Store) -> None:
    await store.send_events([starting(new_run())])
    parent = await claim_one(store)
    child = traced(new_run("test/child", parent=ParentLink(parent.lease.run_id, "call")))
    call = PendingStep(name="call", kind="invoke", delay=timedelta(minutes=5), child=child)
    await store.commit(
        parent.lease,
        Transition(steps=[StepRecord(name="s", kind="run", output=1)], outcome=Suspend([call])),
    )
    claimed = await claim_one(store)
    assert claimed.lease.run_id == child.id
    assert claimed.trace == TRACE


async def test_a_claim_tells_when_its_run_became_due(store: Store, clock: VirtualClock) -> None:
    sent_at = clock.now()
    await store.send_events([starting(new_run(delay=timedelta(hours=1)))])
    clock.advance(timedelta(hours=1, minutes=5))
    claim = await claim_one(store)
    assert claim.due_at == sent_at + timedelta(hours=1)
    # Both on the store's clock: the lease was granted at claim time.
    assert claim.lease.expires_at - LEASE - claim.due_at == timedelta(minutes=5)
