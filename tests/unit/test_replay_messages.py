"""The replayer's edges and its error messages, word for word.

Messages are part of the interface: each names what went wrong and the fix. Pinning them
whole keeps a change to one deliberate (and kills the mutants that garble them).
"""

from __future__ import annotations

import contextlib
from typing import Any

import anyio
import pytest

import slayq
from slayq import step
from slayq.model import Completed, Continue, Failed, RunId, StepRecord, Suspend
from slayq.runtime.limits import SizeLimits
from slayq.runtime.registry import Registry
from slayq.runtime.replay import ERRORS_IN_A_ROW, Execution
from slayq.testing import Harness

pytestmark = pytest.mark.anyio


def execution(
    fn: slayq.Function, memo: list[StepRecord] | None = None, **options: Any
) -> Execution:
    registry = Registry([fn], limits=options.pop("limits", SizeLimits()))
    return Execution(
        fn, registry, run_id=RunId("r1"), data={}, attempt=1, max_attempts=1, memo=memo or []
    )


async def failure(fn: slayq.Function, memo: list[StepRecord] | None = None, **kw: Any) -> str:
    transition = await execution(fn, memo, **kw).advance()
    assert isinstance(transition.outcome, Failed), transition
    return transition.outcome.error.message


async def test_yielding_something_else_than_a_step() -> None:
    @slayq.function(event="e")
    async def odd(ctx: slayq.Context[slayq.EmptyEvent]) -> slayq.Workflow:
        yield 42

    assert await failure(odd) == (
        f"{odd.name} yielded 42; a function may yield only step commands (step.run, "
        "step.sleep, ...) and slayq.finish(value)"
    )


async def test_a_duplicate_step_name() -> None:
    @slayq.function(event="e")
    async def dup(ctx: slayq.Context[slayq.EmptyEvent]) -> slayq.Workflow:
        yield step.sleep("pause", "1s")
        yield step.sleep("pause", "1s")

    memo = [StepRecord(name="pause", kind="sleep")]
    assert await failure(dup, memo) == (
        "step name 'pause' is used twice in run r1: step names must be unique within a run. "
        'In a loop, put the index or item id in the name, like step.run(f"pause-{i}", ...)'
    )


async def test_a_step_replayed_as_another_kind() -> None:
    @slayq.function(event="e")
    async def drift(ctx: slayq.Context[slayq.EmptyEvent]) -> slayq.Workflow:
        yield step.sleep("pause", "1m")

    memo = [StepRecord(name="pause", kind="run")]
    assert await failure(drift, memo) == (
        "run r1 replayed step 'pause' as a sleep step, but the memo recorded it as a run "
        "step. The function's code changed while this run was in flight, or depends on more "
        "than its data and step results"
    )


async def test_a_diverging_step_names_its_position() -> None:
    @slayq.function(event="e")
    async def drift(ctx: slayq.Context[slayq.EmptyEvent]) -> slayq.Workflow:
        yield step.run("a", lambda: 1)
        yield step.run("c", lambda: 1)

    memo = [StepRecord(name="a", kind="run", output=1), StepRecord(name="b", kind="run")]
    assert await failure(drift, memo) == (
        f"run r1 of {drift.name} met step 'c' (run) where the memo recorded step 'b' (run) "
        "at position 2. The function's code changed while this run was in flight, or its "
        "steps depend on more than its data and step results (the clock, randomness, a "
        "read outside a step)"
    )


async def test_an_undeclared_wait_says_what_to_declare() -> None:
    @slayq.function(event="e")
    async def waits(ctx: slayq.Context[slayq.EmptyEvent]) -> slayq.Workflow:
        yield step.wait_for_event("w", "paid", timeout="1h")

    assert await failure(waits) == (
        f"step.wait_for_event('w', 'paid'): {waits.name} must declare what it waits for; "
        "add waits_on=[slayq.Match('paid', '<field>')] to its @slayq.function"
    )


class Order(slayq.EmptyEvent):
    order_id: str = ""


async def test_a_wait_on_an_undeclared_field_names_it() -> None:
    @slayq.function(event="e", schema=Order, waits_on=[slayq.Match("paid", "order_id")])
    async def waits(ctx: slayq.Context[Order]) -> slayq.Workflow:
        yield step.wait_for_event("w", "paid", timeout="1h", match="other")

    assert await failure(waits) == (
        f"step.wait_for_event('w', 'paid'): {waits.name} must declare what it waits for; "
        "add waits_on=[slayq.Match('paid', 'other')] to its @slayq.function"
    )


async def test_a_step_output_that_is_not_json() -> None:
    @slayq.function(event="e")
    async def bad(ctx: slayq.Context[slayq.EmptyEvent]) -> slayq.Workflow:
        yield step.run("make", object)

    message = await failure(bad)
    assert message.startswith("step 'make' is a object, which cannot be stored as JSON (")
    assert message.endswith(
        "); return dicts, lists, strings, numbers, msgspec Structs or dataclasses"
    )


@pytest.mark.parametrize("kind", ["workflow", "plain"])
async def test_a_result_that_is_not_json(kind: str) -> None:
    @slayq.function(event="e")
    async def workflow(ctx: slayq.Context[slayq.EmptyEvent]) -> slayq.Workflow:
        yield slayq.finish(object())

    @slayq.function(event="e")
    async def plain(ctx: slayq.Context[slayq.EmptyEvent]) -> object:
        return object()

    message = await failure(workflow if kind == "workflow" else plain)
    assert message.startswith("the run's result is a object, which cannot be stored as JSON")


async def test_a_step_output_may_be_exactly_the_limit() -> None:
    size = len(b'"' + b"x" * 98 + b'"')

    @slayq.function(event="e")
    async def big(ctx: slayq.Context[slayq.EmptyEvent]) -> slayq.Workflow:
        yield step.run("fits", lambda: "x" * 98)
        yield step.run("over", lambda: "x" * 99)

    ex = execution(big, limits=SizeLimits(step_output_bytes=size))
    first = await ex.advance()
    assert first.outcome == Continue() and [s.output for s in first.steps] == ["x" * 98]
    second = await ex.advance()
    assert isinstance(second.outcome, Failed)
    assert second.outcome.error.message == (
        "step 'over' is 0.1 KiB of JSON, over the limit of 0.1 KiB "
        "(SizeLimits.step_output_bytes); store large values elsewhere and return a reference"
    )


async def test_an_exception_that_cannot_be_described() -> None:
    class Broken(Exception):
        def __str__(self) -> str:
            raise KeyError("no")

    def explode() -> None:
        raise Broken

    @slayq.function(event="e")
    async def broken(ctx: slayq.Context[slayq.EmptyEvent]) -> slayq.Workflow:
        yield step.run("explode", explode)

    name = Broken.__qualname__
    assert await failure(broken) == f"<{name}: describing it raised KeyError>"


async def test_a_failure_keeps_the_whole_traceback() -> None:
    def explode() -> None:
        raise ValueError("boom")

    @slayq.function(event="e")
    async def fn(ctx: slayq.Context[slayq.EmptyEvent]) -> slayq.Workflow:
        yield step.run("explode", explode)

    transition = await execution(fn).advance()
    assert isinstance(transition.outcome, Failed)
    trace = transition.outcome.error.traceback
    assert trace.startswith("Traceback (most recent call last):\n  File ")
    assert 'raise ValueError("boom")\n' in trace and trace.endswith("ValueError: boom\n")


@pytest.mark.parametrize("kind", ["step", "plain"])
async def test_a_timeout_message_names_the_step_and_the_limit(kind: str) -> None:
    @slayq.function(event="e", step_timeout="20ms")
    async def plain(ctx: slayq.Context[slayq.EmptyEvent]) -> None:
        await anyio.sleep_forever()

    @slayq.function(event="e")
    async def stepped(ctx: slayq.Context[slayq.EmptyEvent]) -> slayq.Workflow:
        yield step.run("api", anyio.sleep_forever, timeout="1.5s")

    if kind == "plain":
        expected = f"{plain.name} ran past its timeout of 20ms"
        message = await failure(plain)
    else:
        expected = "step 'api' ran past its timeout of 1.5s"
        message = await failure(stepped)
    assert message == f"{expected}; the attempt failed (it is retried like any failure)"


async def test_advance_after_the_run_stopped_says_so() -> None:
    @slayq.function(event="e")
    async def done(ctx: slayq.Context[slayq.EmptyEvent]) -> slayq.Workflow:
        yield slayq.finish(1)

    ex = execution(done)
    assert [ex.finished] == [False]
    await ex.advance()
    assert [ex.finished] == [True]
    with pytest.raises(RuntimeError) as raised:
        await ex.advance()
    assert str(raised.value) == "this execution has finished; start a new one to drive the run"


async def test_an_error_raised_while_closing_the_generator_is_ignored() -> None:
    @slayq.function(event="e")
    async def stubborn(ctx: slayq.Context[slayq.EmptyEvent]) -> slayq.Workflow:
        try:
            yield step.sleep("nap", "1m")
        finally:
            raise ValueError("cleanup failed")

    transition = await execution(stubborn).advance()
    assert isinstance(transition.outcome, Suspend)


@pytest.mark.parametrize(
    ("step_first", "errors", "status"),
    [
        (False, ERRORS_IN_A_ROW - 1, "completed"),
        (False, ERRORS_IN_A_ROW, "failed"),
        (True, ERRORS_IN_A_ROW - 1, "completed"),
    ],
)
async def test_the_bound_on_thrown_errors_is_exact(
    step_first: bool, errors: int, status: str
) -> None:
    @slayq.function(event="e")
    async def swallow(ctx: slayq.Context[slayq.EmptyEvent]) -> slayq.Workflow:
        if step_first:
            yield step.sleep("nap", "0s")
        for _ in range(errors):
            with contextlib.suppress(slayq.StepDefinitionError):
                yield 42
        yield slayq.finish("done")

    memo = [StepRecord(name="nap", kind="sleep")] if step_first else []
    transition = await execution(swallow, memo).advance()
    got = "completed" if isinstance(transition.outcome, Completed) else "failed"
    assert got == status, transition.outcome


async def test_a_parallel_group_after_a_step_waits_for_the_next_advance() -> None:
    @slayq.function(event="e")
    async def fan(ctx: slayq.Context[slayq.EmptyEvent]) -> slayq.Workflow:
        yield step.run("a", lambda: 1)
        yield step.parallel(step.run("b", lambda: 2), step.run("c", lambda: 3))

    ex = execution(fan)
    first = await ex.advance()
    assert ([s.name for s in first.steps], first.outcome) == (["a"], Continue())
    second = await ex.advance()
    assert [s.name for s in second.steps] == ["b", "c"]


async def coroutine_of(value: int) -> int:
    await anyio.lowlevel.checkpoint()
    return value


async def test_a_sync_handler_returning_an_awaitable_is_awaited() -> None:
    @slayq.function(event="e")
    async def fn(ctx: slayq.Context[slayq.EmptyEvent]) -> slayq.Workflow:
        value = yield step.run("lazy", lambda: coroutine_of(7))
        yield slayq.finish(value)

    transition = await execution(fn).advance()
    assert transition.outcome == Completed(7)


class AsyncHandler:
    async def __call__(self, value: int) -> int:
        await anyio.lowlevel.checkpoint()
        return value


async def test_async_handlers_do_not_wait_for_a_worker_thread() -> None:
    """Sync handlers may hold every worker thread; async ones must still run."""
    limiter = anyio.to_thread.current_default_thread_limiter()
    holders = [object() for _ in range(int(limiter.total_tokens))]

    @slayq.function(event="e", step_timeout="2s")
    async def fn(ctx: slayq.Context[slayq.EmptyEvent]) -> slayq.Workflow:
        a = yield step.run("function", coroutine_of, 1)
        b = yield step.run("object", AsyncHandler(), 2)
        yield slayq.finish([a, b])

    for holder in holders:
        await limiter.acquire_on_behalf_of(holder)
    try:
        async with Harness([fn]) as h:
            run_id = await h.send_event("e")
            assert run_id is not None
            run = await h.run_until_finished(run_id)
    finally:
        for holder in holders:
            limiter.release_on_behalf_of(holder)
    assert (run.status, run.result) == ("completed", [1, 2])
