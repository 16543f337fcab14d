"""Functions that never let go: a loop that swallows every error, a handler that hangs."""

from __future__ import annotations

import contextlib
import threading
import time
from typing import Any

import anyio
import pytest

import slayq
from slayq import step
from slayq.model import Completed, Continue
from slayq.runtime.registry import Registry
from slayq.runtime.replay import ERRORS_IN_A_ROW, STEPS_PER_COMMIT, Execution
from slayq.testing import Harness

pytestmark = pytest.mark.anyio


async def finished_run(fn: slayq.Function, data: object = None) -> slayq.RunInfo:
    async with Harness([fn]) as h:
        run_id = await h.send_event(fn.event, data)
        assert run_id is not None
        return await h.run_until_finished(run_id)


async def test_a_function_that_swallows_every_thrown_error_fails_instead_of_spinning() -> None:
    @slayq.function(event="spin")
    async def spin(ctx: slayq.Context[slayq.EmptyEvent]) -> slayq.Workflow:
        while True:
            with contextlib.suppress(Exception):
                yield 42

    with anyio.fail_after(10):
        run = await finished_run(spin)
    assert (run.status, run.attempts) == ("failed", 1)
    assert run.error is not None and run.error.type == "StepDefinitionError"
    assert "spin" in run.error.message
    assert f"{ERRORS_IN_A_ROW} times in a row" in run.error.message
    assert "yielded 42" in run.error.message


async def test_a_loop_reusing_a_step_name_and_catching_the_error_fails() -> None:
    @slayq.function(event="dup-loop")
    async def dup_loop(ctx: slayq.Context[slayq.EmptyEvent]) -> slayq.Workflow:
        while True:
            with contextlib.suppress(slayq.StepDefinitionError):
                yield step.run("same", lambda: 1)

    with anyio.fail_after(10):
        run = await finished_run(dup_loop)
    assert run.status == "failed"
    assert run.error is not None and "'same' is used twice" in run.error.message


async def test_a_function_may_recover_from_a_few_thrown_errors() -> None:
    @slayq.function(event="recover")
    async def recover(ctx: slayq.Context[slayq.EmptyEvent]) -> slayq.Workflow:
        for i in range(ERRORS_IN_A_ROW - 1):
            with contextlib.suppress(slayq.StepDefinitionError):
                yield step.run("same" if i else "first", lambda: 1)
        yield slayq.finish("done")

    run = await finished_run(recover)
    assert (run.status, run.result) == ("completed", "done")


async def test_other_tasks_run_while_a_spinning_function_is_being_failed() -> None:
    ticks = 0

    @slayq.function(event="spin")
    async def spin(ctx: slayq.Context[slayq.EmptyEvent]) -> slayq.Workflow:
        while True:
            with contextlib.suppress(Exception):
                yield 42

    async def ticker() -> None:
        nonlocal ticks
        while True:
            await anyio.lowlevel.checkpoint()
            ticks += 1

    with anyio.fail_after(10):
        async with Harness([spin]) as h, anyio.create_task_group() as group:
            run_id = await h.send_event("spin")
            assert run_id is not None
            group.start_soon(ticker)
            await h.run_until_idle()
            during = ticks
            group.cancel_scope.cancel()
            assert (await h.get_run(run_id)).status == "failed"
    assert during > 0


async def forever() -> None:
    await anyio.sleep_forever()


async def test_an_async_step_over_its_timeout_fails_the_attempt_and_is_retried() -> None:
    calls = 0

    async def hang() -> None:
        nonlocal calls
        calls += 1
        await anyio.sleep_forever()

    @slayq.function(event="hang", retries=1)
    async def hung(ctx: slayq.Context[slayq.EmptyEvent]) -> slayq.Workflow:
        yield step.run("call-api", hang, timeout="50ms")

    with anyio.fail_after(10):
        run = await finished_run(hung)
    assert (run.status, run.attempts, calls) == ("failed", 2, 2)
    assert run.error is not None and run.error.type == "StepTimeoutError"
    assert run.error.step == "call-api"
    assert "'call-api'" in run.error.message and "50ms" in run.error.message


async def test_a_sync_step_over_its_timeout_fails_without_waiting_for_its_thread() -> None:
    release = threading.Event()
    finished = threading.Event()

    def block() -> str:
        release.wait(30)
        finished.set()
        return "late"

    @slayq.function(event="block", retries=0)
    async def blocked(ctx: slayq.Context[slayq.EmptyEvent]) -> slayq.Workflow:
        yield step.run("read-disk", block, timeout="100ms")

    try:
        with anyio.fail_after(10):
            run = await finished_run(blocked)
        assert run.status == "failed"
        assert run.error is not None and run.error.type == "StepTimeoutError"
        assert not finished.is_set()  # the thread still runs: the attempt did not wait
    finally:
        release.set()
    await anyio.to_thread.run_sync(finished.wait, 10)  # and it runs to its end


async def test_the_function_step_timeout_applies_and_a_step_timeout_wins() -> None:
    async def slow() -> str:
        await anyio.sleep(0.2)
        return "slow"

    @slayq.function(event="mixed", retries=0, step_timeout="50ms")
    async def mixed(ctx: slayq.Context[slayq.EmptyEvent]) -> slayq.Workflow:
        first = yield step.run("patient", slow, timeout="5s")
        yield step.run("impatient", forever)
        yield slayq.finish(first)

    with anyio.fail_after(10):
        run = await finished_run(mixed)
    assert run.status == "failed"
    assert [s.name for s in run.steps] == ["patient"]
    assert run.error is not None and run.error.type == "StepTimeoutError"
    assert run.error.step == "impatient" and "50ms" in run.error.message


async def test_a_sync_step_can_be_given_a_timeout_through_the_function() -> None:
    @slayq.function(event="sync", retries=0, step_timeout=0.05)
    async def sync(ctx: slayq.Context[slayq.EmptyEvent]) -> slayq.Workflow:
        yield step.run("nap", time.sleep, 0.5)

    with anyio.fail_after(10):
        run = await finished_run(sync)
    assert run.error is not None and run.error.type == "StepTimeoutError"


async def test_a_function_without_steps_is_one_step_for_its_timeout() -> None:
    @slayq.function(event="plain", retries=0, step_timeout="50ms")
    async def plain(ctx: slayq.Context[slayq.EmptyEvent]) -> None:
        await anyio.sleep_forever()

    with anyio.fail_after(10):
        run = await finished_run(plain)
    assert run.error is not None and run.error.type == "StepTimeoutError"


async def test_a_handler_raising_its_own_timeout_error_is_not_a_step_timeout() -> None:
    def own() -> None:
        raise TimeoutError("the API timed out")

    @slayq.function(event="own", retries=0, step_timeout="10s")
    async def fn(ctx: slayq.Context[slayq.EmptyEvent]) -> slayq.Workflow:
        yield step.run("api", own)

    run = await finished_run(fn)
    assert run.error is not None and run.error.type == "TimeoutError"


@pytest.mark.parametrize("bad", ["0s", "soon", -1])
def test_bad_step_timeouts_are_refused_where_written(bad: Any) -> None:
    with pytest.raises(slayq.DurationError, match="timeout"):
        step.run("x", forever, timeout=bad)
    with pytest.raises(slayq.DurationError, match="step_timeout"):
        slayq.function(event="x", step_timeout=bad)


async def test_a_long_loop_of_sends_is_committed_in_bounded_transitions() -> None:
    @slayq.function(event="sink")
    async def sink(ctx: slayq.Context[slayq.EmptyEvent]) -> None:
        pass

    @slayq.function(event="fan")
    async def fan(ctx: slayq.Context[slayq.EmptyEvent]) -> slayq.Workflow:
        for i in range(STEPS_PER_COMMIT + 10):
            yield step.send_event(f"send-{i}", "sink", {})
        yield slayq.finish("sent")

    execution = Execution(
        fan,
        Registry([fan, sink]),
        run_id=slayq.RunId("r1"),
        data={},
        attempt=1,
        max_attempts=1,
        memo=[],
    )
    first = await execution.advance()
    assert (len(first.steps), len(first.sent), first.outcome) == (
        STEPS_PER_COMMIT,
        STEPS_PER_COMMIT,
        Continue(),
    )
    second = await execution.advance()
    assert (len(second.steps), second.outcome) == (10, Completed("sent"))
