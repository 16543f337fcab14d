"""What the engine reports for the history: memo records replayed per drive and handler
timings from its injected clock; and the history a Harness run ends with."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

import slayq
from slayq import step
from slayq.model import Completed, Continue, StepRecord, Suspend
from slayq.runtime.registry import Registry
from slayq.runtime.replay import Execution
from slayq.testing import Harness

pytestmark = pytest.mark.anyio

T0 = datetime(2025, 6, 1, 12, 0, tzinfo=UTC)


class TickingClock:
    """Each reading is one second after the previous one."""

    def __init__(self) -> None:
        self.readings = 0

    def now(self) -> datetime:
        self.readings += 1
        return T0 + timedelta(seconds=self.readings - 1)


@slayq.function(event="hist/flow")
async def flow(ctx: slayq.Context[slayq.EmptyEvent]) -> slayq.Workflow:
    a = yield step.run("a", lambda: 1)
    yield step.sleep("nap", "1h")
    b = yield step.run("b", lambda: 2)
    yield step.send_event("note", "hist/noted", {"sum": a + b})
    yield slayq.finish(a + b)


@slayq.function(event="hist/noted")
async def noted(ctx: slayq.Context[dict[str, int]]) -> None:
    return None


def execution(memo: list[StepRecord], clock: TickingClock | None = None) -> Execution:
    return Execution(
        flow,
        Registry([flow, noted]),
        run_id=slayq.RunId("r1"),
        data={},
        attempt=1,
        max_attempts=3,
        memo=memo,
        clock=clock,
    )


async def test_a_handler_is_timed_with_the_injected_clock() -> None:
    clock = TickingClock()
    transition = await execution([], clock).advance()
    assert isinstance(transition.outcome, Suspend)  # the sleep rides along with "a"
    (record,) = transition.steps
    assert (record.name, record.started_at, record.duration) == ("a", T0, timedelta(seconds=1))
    assert transition.replayed == 0


async def test_each_drive_counts_the_memo_records_it_answered() -> None:
    memo = [
        StepRecord(name="a", kind="run", output=1),
        StepRecord(name="nap", kind="sleep"),
    ]
    transition = await execution(memo, TickingClock()).advance()
    assert isinstance(transition.outcome, Completed)
    assert ([s.name for s in transition.steps], transition.replayed) == (["b", "note"], 2)
    # A send is no handler: its time is the commit's, given by the store.
    assert (transition.steps[1].started_at, transition.steps[1].duration) == (None, None)


@slayq.function(event="hist/three")
async def three(ctx: slayq.Context[slayq.EmptyEvent]) -> slayq.Workflow:
    for name in ("a", "b", "c"):
        yield step.run(name, lambda: 0)


async def test_a_drive_counts_only_what_it_replayed_itself() -> None:
    run = Execution(
        three,
        Registry([three]),
        run_id=slayq.RunId("r1"),
        data={},
        attempt=1,
        max_attempts=3,
        memo=[StepRecord(name="a", kind="run", output=0)],
    )
    first = await run.advance()
    assert (type(first.outcome), [s.name for s in first.steps], first.replayed) == (
        Continue,
        ["b"],
        1,
    )
    second = await run.advance()
    assert ([s.name for s in second.steps], second.replayed) == (["c"], 0)


async def test_the_harness_records_each_attempt_with_virtual_timings() -> None:
    async with Harness([flow, noted], start=T0) as h:
        run_id = await h.send_event("hist/flow")
        assert run_id is not None
        run = await h.run_until_finished(run_id)
    assert run.status == "completed"
    assert [(a.number, a.outcome, a.owner, a.replayed, a.executed) for a in run.history] == [
        (1, "suspended", "harness", 0, 1),
        (1, "completed", "harness", 2, 2),
    ]
    assert [(a.started_at, a.ended_at) for a in run.history] == [
        (T0, T0),
        (T0 + timedelta(hours=1), T0 + timedelta(hours=1)),
    ]
    # The virtual clock stands still while handlers run: durations are zero.
    steps = {s.name: (s.started_at, s.duration, s.attempt) for s in run.steps}
    assert steps == {
        "a": (T0, timedelta(0), 1),
        "nap": (T0, timedelta(hours=1), 1),
        "b": (T0 + timedelta(hours=1), timedelta(0), 1),
        "note": (T0 + timedelta(hours=1), timedelta(0), 1),
    }
