"""Values the database cannot hold are refused where they are written, naming them.

Each of these once reached PostgreSQL, which refused the commit and left the run stuck
(or raised out of the Harness with the memory store half-committed).
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import msgspec
import pytest

import slayq
from slayq import step
from slayq.model import (
    Continue,
    ErrorInfo,
    Failed,
    PendingStep,
    StepRecord,
    Suspend,
    Transition,
)
from slayq.runtime.clock import VirtualClock
from slayq.runtime.names import MAX_NAME_BYTES
from slayq.runtime.registry import Registry
from slayq.store.memory import MemoryStore
from slayq.testing import Harness

pytestmark = pytest.mark.anyio


class Order(msgspec.Struct):
    order_id: str
    items: list[dict[str, Any]] = []


async def failed_run(fn: slayq.Function, data: object = None) -> slayq.RunInfo:
    async with Harness([fn]) as h:
        run_id = await h.send_event(fn.event, data)
        assert run_id is not None
        run = await h.run_until_finished(run_id)
    assert run.status == "failed", run
    return run


@pytest.mark.parametrize(
    ("name", "says"),
    [
        ("fetch\x00page", "NUL"),
        ("é" * (MAX_NAME_BYTES // 2 + 1), f"over {MAX_NAME_BYTES} bytes"),
    ],
)
async def test_a_step_name_the_database_cannot_hold_fails_the_run_naming_it(
    name: str, says: str
) -> None:
    @slayq.function(event="named", retries=3)
    async def named(ctx: slayq.Context[slayq.EmptyEvent]) -> slayq.Workflow:
        yield step.run(name, lambda: 1)

    run = await failed_run(named)
    assert run.attempts == 1  # the same name fails every attempt: not retried
    assert run.error is not None and run.error.type == "StepDefinitionError"
    assert says in run.error.message and repr(name[:20])[:-1] in run.error.message


async def test_a_step_name_of_the_bound_is_fine() -> None:
    name = "é" * (MAX_NAME_BYTES // 2)

    @slayq.function(event="named")
    async def named(ctx: slayq.Context[slayq.EmptyEvent]) -> slayq.Workflow:
        yield step.sleep(name, "1s")

    async with Harness([named]) as h:
        run_id = await h.send_event("named")
        assert run_id is not None
        run = await h.run_until_finished(run_id)
    assert run.status == "completed"


@pytest.mark.parametrize("option", ["event", "queue"])
@pytest.mark.parametrize("bad", ["a\x00b", "q" * (MAX_NAME_BYTES + 1)])
def test_event_and_queue_names_the_database_cannot_hold_are_refused(option: str, bad: str) -> None:
    names = {"event": "ok", "queue": "ok"} | {option: bad}

    async def handler(ctx: slayq.Context[slayq.EmptyEvent]) -> None:
        pass

    with pytest.raises(slayq.FunctionDefinitionError, match=rf"{option} .*(NUL|over 500 bytes)"):
        slayq.function(event=names["event"], queue=names["queue"])(handler)


@pytest.mark.parametrize("option", ["waits_on", "cancel_on"])
def test_matched_event_names_the_database_cannot_hold_are_refused(option: str) -> None:
    async def handler(ctx: slayq.Context[Order]) -> None:
        pass

    rules = {option: [slayq.Match("paid\x00", "order_id")]}
    with pytest.raises(slayq.FunctionDefinitionError, match=rf"{option} event .*NUL"):
        slayq.function(event="ok", schema=Order, **rules)(handler)  # type: ignore[arg-type]


@pytest.mark.parametrize("bad", ["a\x00b", "e" * (MAX_NAME_BYTES + 1)])
async def test_sending_an_event_name_the_database_cannot_hold_is_refused(bad: str) -> None:
    @slayq.function(event="ok")
    async def ok(ctx: slayq.Context[slayq.EmptyEvent]) -> None:
        pass

    async with Harness([ok]) as h:
        with pytest.raises(slayq.UnknownEventError, match=r"NUL|over 500 bytes"):
            await h.send_event(bad)


@pytest.mark.parametrize("key", ["k" * 3000, "a\x00b"])
async def test_an_idempotency_key_the_database_cannot_index_is_refused(key: str) -> None:
    @slayq.function(event="ok")
    async def ok(ctx: slayq.Context[slayq.EmptyEvent]) -> None:
        pass

    async with Harness([ok]) as h:
        with pytest.raises(slayq.InputError, match=r"key .*(NUL|over 500 bytes)"):
            await h.send_event("ok", key=key)
        assert await h.store.send_events([]) == []


async def test_event_data_with_a_nul_names_the_path() -> None:
    @slayq.function(event="order", schema=Order)
    async def order(ctx: slayq.Context[Order]) -> None:
        pass

    data = {"order_id": "o1", "items": [{}, {}, {"name": "bad\x00"}]}
    async with Harness([order]) as h:
        with pytest.raises(slayq.EventDataError, match=r"data\.items\[2\]\.name .*NUL"):
            await h.send_event("order", data)
        with pytest.raises(slayq.EventDataError, match=r"data\.items\[0\] has a key .*NUL"):
            await h.send_event("order", {"order_id": "o1", "items": [{"k\x00": 1}]})


async def test_a_step_sending_event_data_with_a_nul_fails_the_run_naming_the_path() -> None:
    @slayq.function(event="order", schema=Order)
    async def order(ctx: slayq.Context[Order]) -> None:
        pass

    @slayq.function(event="fan", retries=2)
    async def fan(ctx: slayq.Context[slayq.EmptyEvent]) -> slayq.Workflow:
        yield step.send_event("send", "order", {"order_id": "o\x00"})

    async with Harness([order, fan]) as h:
        run_id = await h.send_event("fan")
        assert run_id is not None
        run = await h.run_until_finished(run_id)
    assert (run.status, run.attempts) == ("failed", 1)
    assert run.error is not None and "data.order_id" in run.error.message


async def test_a_match_value_too_long_to_index_is_refused() -> None:
    @slayq.function(
        event="order", schema=Order, cancel_on=[slayq.Match("order/cancelled", "order_id")]
    )
    async def order(ctx: slayq.Context[Order]) -> None:
        pass

    async with Harness([order]) as h:
        with pytest.raises(slayq.EventDataError, match=r"data.order_id .*over 500 bytes"):
            await h.send_event("order", {"order_id": "x" * 3000})


@pytest.mark.parametrize("duration", ["300000 years", "1001y", timedelta(days=366_000)])
async def test_a_sleep_longer_than_the_store_can_hold_fails_the_run_naming_it(
    duration: Any,
) -> None:
    @slayq.function(event="nap", retries=3)
    async def nap(ctx: slayq.Context[slayq.EmptyEvent]) -> slayq.Workflow:
        yield step.run("before", lambda: 1)
        yield step.sleep("forever", duration)

    run = await failed_run(nap)  # the Harness does not raise OverflowError
    assert run.error is not None and run.error.type == "DurationError"
    assert "'forever'" in run.error.message and "1000 years" in run.error.message
    assert [s.name for s in run.steps] == ["before"]


def test_the_longest_duration_is_a_thousand_years() -> None:
    assert step.sleep("ok", "1000 years").delay == timedelta(days=365_250)


async def test_sleep_until_past_the_last_representable_time_is_refused() -> None:
    with pytest.raises(slayq.DurationError, match=r"sleep_until.*out of range"):
        step.sleep_until("late", "9999-12-31T23:00:00-05:00")


@pytest.mark.parametrize(
    ("outcome", "says"),
    [
        (
            Suspend([PendingStep(name="s", kind="sleep", delay=timedelta(days=365))]),
            "step 's': now + 365 days, 0:00:00 is out of range",
        ),
        (
            Failed(error=ErrorInfo(type="E", message="m"), retry_after=timedelta(days=365)),
            "the retry: now + 365 days, 0:00:00 is out of range",
        ),
    ],
)
async def test_a_memory_commit_that_cannot_be_applied_changes_nothing(
    outcome: Suspend | Failed, says: str
) -> None:
    clock = VirtualClock(datetime(9999, 6, 1, tzinfo=UTC))

    @slayq.function(event="nap")
    async def nap(ctx: slayq.Context[slayq.EmptyEvent]) -> slayq.Workflow:
        yield step.sleep("s", "1y")

    store = MemoryStore(clock)
    (run_id,) = await store.send_events([Registry([nap]).outgoing("nap", {})])
    (claim,) = await store.claim(queues=None, limit=1, lease_for=timedelta(minutes=1), owner="t")
    transition = Transition(
        steps=[StepRecord(name="before", kind="run", output=1)], outcome=outcome
    )
    with pytest.raises(slayq.StoreInputError) as raised:
        await store.commit(claim.lease, transition)
    assert str(raised.value) == says
    assert run_id is not None
    run = await store.get_run(run_id)
    assert (run.status, run.steps) == ("running", [])
    # the lease still holds: the failed commit did not touch the run
    await store.commit(claim.lease, Transition(steps=[], outcome=Continue()))
