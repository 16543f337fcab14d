"""Promises of the replayer that mutation testing found no test pinning.

Each test here kills mutants of ``slayq/runtime/replay.py`` that every other test let
through: see ``scripts/mutation`` and docs/testing.md.
"""

from __future__ import annotations

import random
from datetime import timedelta
from typing import Any

import msgspec
import pytest

import slayq
from slayq import step
from slayq.model import (
    Completed,
    Continue,
    Failed,
    PendingStep,
    RunId,
    StepRecord,
    Suspend,
    Transition,
)
from slayq.runtime.registry import Registry
from slayq.runtime.replay import Execution
from slayq.runtime.retry import RetryPolicy
from slayq.testing import Harness

pytestmark = pytest.mark.anyio


def execution(
    fn: slayq.Function, memo: list[StepRecord] | None = None, **options: Any
) -> Execution:
    return Execution(
        fn,
        Registry([fn]),
        run_id=RunId("r1"),
        data=options.pop("data", {}),
        attempt=options.pop("attempt", 1),
        max_attempts=options.pop("max_attempts", 3),
        memo=memo or [],
        **options,
    )


def names(transition: Transition) -> list[str]:
    return [s.name for s in transition.steps]


async def test_advance_runs_one_new_handler_then_returns_so_it_is_committed() -> None:
    calls: list[str] = []

    def handler(name: str) -> str:
        calls.append(name)
        return name

    @slayq.function(event="three")
    async def three(ctx: slayq.Context[slayq.EmptyEvent]) -> slayq.Workflow:
        for name in ("a", "b", "c"):
            yield step.run(name, handler, name)
        yield slayq.finish("done")

    ex = execution(three)
    first = await ex.advance()
    assert (names(first), first.outcome, calls) == (["a"], Continue(), ["a"])
    second = await ex.advance()
    assert (names(second), second.outcome, calls) == (["b"], Continue(), ["a", "b"])
    third = await ex.advance()
    assert (names(third), third.outcome) == (["c"], Completed("done"))


async def test_advance_may_be_allowed_more_handlers_per_commit() -> None:
    @slayq.function(event="three")
    async def three(ctx: slayq.Context[slayq.EmptyEvent]) -> slayq.Workflow:
        for name in ("a", "b", "c"):
            yield step.run(name, lambda: 1)

    ex = execution(three, max_new_steps=2)
    assert names(await ex.advance()) == ["a", "b"]
    assert names(await ex.advance()) == ["c"]


async def test_replayed_steps_do_not_count_as_new_handlers() -> None:
    @slayq.function(event="three")
    async def three(ctx: slayq.Context[slayq.EmptyEvent]) -> slayq.Workflow:
        for name in ("a", "b", "c"):
            yield step.run(name, lambda: 1)

    memo = [StepRecord(name="a", kind="run", output=1)]
    transition = await execution(three, memo).advance()
    assert (names(transition), transition.outcome) == (["b"], Continue())


async def test_a_sleep_right_after_a_step_rides_in_the_same_transition() -> None:
    @slayq.function(event="ride")
    async def ride(ctx: slayq.Context[slayq.EmptyEvent]) -> slayq.Workflow:
        yield step.run("a", lambda: 1)
        yield step.sleep("nap", "1m")

    transition = await execution(ride).advance()
    assert names(transition) == ["a"]
    assert transition.outcome == Suspend(
        [PendingStep(name="nap", kind="sleep", delay=timedelta(minutes=1))]
    )


async def test_a_failing_member_of_parallel_fails_the_attempt_with_its_own_error() -> None:
    def boom() -> None:
        raise ValueError("boom")

    @slayq.function(event="par")
    async def par(ctx: slayq.Context[slayq.EmptyEvent]) -> slayq.Workflow:
        yield step.parallel(step.run("bad", boom), step.run("good", lambda: 2))

    transition = await execution(par).advance()
    assert names(transition) == ["good"]
    assert isinstance(transition.outcome, Failed)
    error = transition.outcome.error
    assert (error.type, error.message, error.step) == ("ValueError", "boom", "bad")
    assert transition.outcome.retry_after is not None


async def test_memo_records_left_over_at_finish_fail_for_good() -> None:
    @slayq.function(event="short")
    async def short(ctx: slayq.Context[slayq.EmptyEvent]) -> slayq.Workflow:
        yield step.run("a", lambda: 1)

    memo = [StepRecord(name="a", kind="run", output=1), StepRecord(name="b", kind="run")]
    transition = await execution(short, memo).advance()
    assert isinstance(transition.outcome, Failed)
    assert transition.outcome.error.type == "NondeterminismError"
    assert "'b'" in transition.outcome.error.message
    assert transition.outcome.retry_after is None


async def test_a_memo_on_a_function_without_steps_fails_for_good() -> None:
    @slayq.function(event="plain")
    async def plain(ctx: slayq.Context[slayq.EmptyEvent]) -> str:
        return "x"

    memo = [StepRecord(name="a", kind="run", output=1)]
    transition = await execution(plain, memo).advance()
    assert isinstance(transition.outcome, Failed)
    assert transition.outcome.error.type == "NondeterminismError"
    assert "'a'" in transition.outcome.error.message
    assert transition.outcome.retry_after is None


@pytest.mark.parametrize("ending", ["suspend", "finish", "fail"])
async def test_the_generator_is_closed_when_the_run_stops(ending: str) -> None:
    closed: list[bool] = []

    @slayq.function(event="gen")
    async def gen(ctx: slayq.Context[slayq.EmptyEvent]) -> slayq.Workflow:
        try:
            if ending == "suspend":
                yield step.sleep("nap", "1m")
            elif ending == "fail":
                raise RuntimeError("failed")
            yield slayq.finish("ok")
        finally:
            closed.append(True)

    ex = execution(gen)
    transition = await ex.advance()
    expected: type = {"suspend": Suspend, "finish": Completed, "fail": Failed}[ending]
    assert isinstance(transition.outcome, expected)
    assert closed == [True]
    assert ex.finished


async def test_advance_after_the_run_stopped_raises() -> None:
    @slayq.function(event="done")
    async def done(ctx: slayq.Context[slayq.EmptyEvent]) -> slayq.Workflow:
        yield slayq.finish(1)

    ex = execution(done)
    await ex.advance()
    with pytest.raises(RuntimeError, match="has finished"):
        await ex.advance()


async def test_the_context_carries_the_run() -> None:
    seen: dict[str, Any] = {}

    @slayq.function(event="ctx/seen", retries=4)
    async def fn(ctx: slayq.Context[slayq.EmptyEvent]) -> slayq.Workflow:
        seen.update(
            event=ctx.event,
            run_id=ctx.run_id,
            attempt=ctx.attempt,
            retry=ctx.retry,
            max_attempts=ctx.max_attempts,
        )
        yield slayq.finish(None)

    async with Harness([fn]) as h:
        run_id = await h.send_event("ctx/seen")
        assert run_id is not None
        await h.run_until_finished(run_id)
    assert seen == {
        "event": "ctx/seen",
        "run_id": run_id,
        "attempt": 1,
        "retry": 1,
        "max_attempts": 5,
    }


class Shipment(msgspec.Struct):
    order_id: str
    parcel_id: str


async def test_wait_for_event_match_picks_one_of_the_declared_fields() -> None:
    @slayq.function(
        event="ship",
        schema=Shipment,
        waits_on=[slayq.Match("scan", "order_id"), slayq.Match("scan", "parcel_id")],
    )
    async def ship(ctx: slayq.Context[Shipment]) -> slayq.Workflow:
        scan = yield step.wait_for_event("scan", "scan", timeout="1d", match="parcel_id")
        yield slayq.finish(scan)

    transition = await execution(ship, data={"order_id": "o1", "parcel_id": "p1"}).advance()
    assert isinstance(transition.outcome, Suspend)
    (pending,) = transition.outcome.pending
    assert (pending.match_field, pending.match_value) == ("parcel_id", "p1")

    async with Harness([ship]) as h:
        run_id = await h.send_event("ship", {"order_id": "o1", "parcel_id": "p1"})
        assert run_id is not None
        await h.run_until_idle()
        await h.send_event("scan", {"order_id": "o1", "parcel_id": "other"})
        await h.run_until_idle()
        assert (await h.get_run(run_id)).status == "waiting"
        await h.send_event("scan", {"order_id": "x", "parcel_id": "p1"})
        run = await h.run_until_finished(run_id)
    assert run.result == {"order_id": "x", "parcel_id": "p1"}


async def test_a_wait_with_two_declared_fields_and_no_match_says_to_choose() -> None:
    @slayq.function(
        event="ship",
        schema=Shipment,
        waits_on=[slayq.Match("scan", "order_id"), slayq.Match("scan", "parcel_id")],
    )
    async def ship(ctx: slayq.Context[Shipment]) -> slayq.Workflow:
        yield step.wait_for_event("scan", "scan", timeout="1d")

    transition = await execution(ship, data={"order_id": "o", "parcel_id": "p"}).advance()
    assert isinstance(transition.outcome, Failed)
    assert transition.outcome.error.message == (
        f"step.wait_for_event('scan', 'scan'): {ship.name} must declare what it waits for; "
        "add waits_on=[slayq.Match('scan', '<field>')] to its @slayq.function and pass "
        "match=... to choose one field"
    )


async def test_the_backoff_jitter_is_drawn_from_the_given_random_source() -> None:
    def boom() -> None:
        raise ValueError("boom")

    @slayq.function(event="flaky")
    async def flaky(ctx: slayq.Context[slayq.EmptyEvent]) -> slayq.Workflow:
        yield step.run("call", boom)

    policy = RetryPolicy(base=timedelta(seconds=100))
    delays = set()
    for seed in (1, 2):
        transition = await execution(
            flaky, attempt=2, retry_policy=policy, rng=random.Random(seed)
        ).advance()
        assert isinstance(transition.outcome, Failed)
        expected = policy.delay(2, random.Random(seed))
        assert transition.outcome.retry_after == expected
        delays.add(expected)
    assert len(delays) == 2


async def test_the_last_attempt_is_not_retried() -> None:
    @slayq.function(event="flaky")
    async def flaky(ctx: slayq.Context[slayq.EmptyEvent]) -> slayq.Workflow:
        if ctx.attempt > 0:
            raise ValueError("boom")
        yield slayq.finish(None)

    last = await execution(flaky, attempt=3, max_attempts=3).advance()
    before = await execution(flaky, attempt=2, max_attempts=3).advance()
    assert isinstance(last.outcome, Failed) and last.outcome.retry_after is None
    assert isinstance(before.outcome, Failed) and before.outcome.retry_after is not None
