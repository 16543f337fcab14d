"""A replay sees exactly what the first run saw: values come back as they were committed.

Key order, float signs and types, huge integers and NUL characters in strings survive a
round trip through every store: a function that iterates a step's dict must meet the
same keys in the same order on every attempt. Equality is not enough (``-0.0 == 0.0``,
``1e22 == 10**22``, dicts compare without order), so values are compared by encoding.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import msgspec
import pytest

from slayq.model import (
    Completed,
    ErrorInfo,
    Failed,
    ParentLink,
    PendingStep,
    Schedule,
    StepRecord,
    Suspend,
    Transition,
)
from slayq.runtime.clock import VirtualClock
from slayq.store.protocol import Store
from tests.contract.helpers import claim_one, new_run, plain_event, start, starting

pytestmark = pytest.mark.anyio

# Keys out of order (jsonb sorts them: shorter first, then bytewise), a float jsonb
# writes as an integer, a negative zero it drops, an int beyond 64 bits, a NUL.
OUTPUT: dict[str, Any] = {
    "b": 1,
    "a": 2,
    "10": 3,
    "é": [1e22, -0.0, 2**70, "x\u0000y", 5e-324, -(2**63) - 1],
    "nested": {"zz": {"y": 1.5e300, "x": -1e-7}, "": None, "a": [True, False]},
}
DATA: dict[str, Any] = {"zone": "eu", "amounts": {"b": 1e22, "a": -0.0}, "id": 2**64}
NUL_ERROR = ErrorInfo(type="RuntimeError", message="bad byte \u0000 here", traceback="tb\u0000")


def exact(value: Any) -> bytes:
    return msgspec.json.encode(value)


async def test_step_outputs_results_and_errors_come_back_exactly(store: Store) -> None:
    run_id = await start(store, data=DATA)
    claim = await claim_one(store)
    assert exact(claim.data) == exact(DATA)
    steps = [
        StepRecord(name="prices", kind="run", output=OUTPUT),
        StepRecord(name="callee", kind="invoke", error=NUL_ERROR),
    ]
    retry = Failed(NUL_ERROR, retry_after=timedelta(0))
    await store.commit(claim.lease, Transition(steps=steps, outcome=retry))

    again = await claim_one(store)
    assert exact(again.data) == exact(DATA)
    assert [exact(s.output) for s in again.memo] == [exact(OUTPUT), exact(None)]
    assert again.memo[1].error == NUL_ERROR
    assert exact(list(again.memo[0].output)) == exact(list(OUTPUT))
    run = await store.get_run(run_id)
    assert (exact(run.data), run.error) == (exact(DATA), NUL_ERROR)
    assert [exact(s.output) for s in run.steps] == [exact(OUTPUT), exact(None)]

    await store.commit(again.lease, Transition(steps=[], outcome=Completed(OUTPUT)))
    assert exact((await store.get_run(run_id)).result) == exact(OUTPUT)


async def test_a_run_that_fails_for_good_keeps_its_error_exactly(store: Store) -> None:
    run_id = await start(store)
    claim = await claim_one(store)
    await store.commit(claim.lease, Transition(steps=[], outcome=Failed(NUL_ERROR)))
    assert (await store.get_run(run_id)).error == NUL_ERROR


async def test_a_callee_result_answers_its_caller_exactly(store: Store) -> None:
    await start(store, event="caller")
    caller = await claim_one(store)
    link = ParentLink(run_id=caller.lease.run_id, step="call")
    child = new_run(event="callee", data=DATA, parent=link)
    pending = PendingStep(name="call", kind="invoke", delay=timedelta(minutes=5), child=child)
    await store.commit(caller.lease, Transition(steps=[], outcome=Suspend([pending])))
    info = await store.get_run(caller.lease.run_id)
    assert exact(info.pending[0].child.data if info.pending[0].child else None) == exact(DATA)

    callee = await claim_one(store)
    assert exact(callee.data) == exact(DATA)
    await store.commit(callee.lease, Transition(steps=[], outcome=Completed(OUTPUT)))
    resumed = await claim_one(store)
    assert [exact(s.output) for s in resumed.memo] == [exact(OUTPUT)]


async def test_event_data_answers_a_wait_exactly(store: Store) -> None:
    """Both ways a wait is answered: by a later event, and by one logged before it."""
    await start(store, event="flow")
    claim = await claim_one(store)
    waits = [
        PendingStep(name="later", kind="wait", event="approved"),
        PendingStep(name="logged", kind="wait", event="early"),
    ]
    await store.send_events([plain_event("early", DATA)])
    await store.commit(claim.lease, Transition(steps=[], outcome=Suspend(waits)))
    await store.send_events([plain_event("approved", DATA)])
    resumed = await claim_one(store)
    assert {s.name: exact(s.output) for s in resumed.memo} == {
        "later": exact(DATA),
        "logged": exact(DATA),
    }


async def test_keys_that_only_order_differently_are_kept_apart(store: Store) -> None:
    """Two runs whose data differ only in key order each keep their own."""
    first, second = {"a": 1, "b": 2}, {"b": 2, "a": 1}
    runs = [new_run(data=first), new_run(data=second)]
    ids = await store.send_events([starting(r) for r in runs])
    got = [exact((await store.get_run(i)).data) for i in ids if i is not None]
    assert got == [exact(first), exact(second)]


async def test_a_cron_run_gets_its_template_data_exactly(store: Store, clock: VirtualClock) -> None:
    template = new_run(event="cron/hourly", data=DATA)
    schedule = Schedule(event="cron/hourly", cron="0 * * * *", template=template)
    await store.set_schedules([schedule], app="app", events=["cron/hourly"])
    clock.set(clock.now().replace(minute=0) + timedelta(hours=1))
    (run_id,) = await store.fire_schedules()
    assert exact((await store.get_run(run_id)).data) == exact(DATA)
