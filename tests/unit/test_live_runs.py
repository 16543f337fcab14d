"""The receiver's cache of live runs: its bounds, its misses, and its event loops."""

from __future__ import annotations

import logging
from collections import Counter
from datetime import UTC, datetime

import anyio
import pytest

import slayq
from slayq import step
from slayq.errors import ConfigError
from slayq.model import Claim, Continue, Lease, RunId
from slayq.runtime.registry import Registry
from slayq.runtime.replay import Execution
from slayq.transport.live import LiveRun, LiveRuns

pytestmark = pytest.mark.anyio

AT = datetime(2025, 3, 1, 12, 0, tzinfo=UTC)


def registry(closed: Counter[str]) -> Registry:
    @slayq.function(event="test/steps")
    async def steps(ctx: slayq.Context[slayq.EmptyEvent]) -> slayq.Workflow:
        try:
            for n in range(3):
                yield step.run(f"s{n}", lambda: "ok")
        finally:
            closed[ctx.run_id] += 1

    return Registry([steps])


def claim(run: str, token: int = 1) -> Claim:
    return Claim(
        lease=Lease(RunId(run), token, AT),
        event="test/steps",
        data={},
        queue="general",
        attempt=1,
        max_attempts=3,
        memo=[],
    )


async def paused(reg: Registry, run: str, token: int = 1) -> LiveRun:
    """A run that answered Continue after its first step, as the receiver keeps it."""
    c = claim(run, token)
    execution = Execution.start(reg, c)
    transition = await execution.advance()
    assert isinstance(transition.outcome, Continue)
    return LiveRun(c, execution, memo_size=1)


async def test_the_least_recently_kept_run_is_closed_past_the_count() -> None:
    closed: Counter[str] = Counter()
    reg = registry(closed)
    live = LiveRuns(max_runs=2)
    for run in ("a", "b", "c"):
        assert await live.keep(await paused(reg, run))
    assert len(live) == 2
    assert closed == {"a": 1}  # its generator was closed: its finally ran
    assert await live.take("a", 1, 1) is None
    taken = await live.take("b", 1, 1)
    assert taken is not None
    assert len(live) == 1  # taken out while a delivery drives it
    await taken.execution.aclose()
    await live.aclose()
    assert closed == {"a": 1, "b": 1, "c": 1}


async def test_runs_idle_past_the_limit_are_closed_at_the_next_delivery() -> None:
    closed: Counter[str] = Counter()
    reg = registry(closed)
    now = [0.0]
    live = LiveRuns(idle=30, clock=lambda: now[0])
    await live.keep(await paused(reg, "old"))
    now[0] = 20
    await live.keep(await paused(reg, "young"))
    now[0] = 31
    assert await live.take("nobody", 1, 1) is None
    assert closed == {"old": 1}
    assert await live.take("young", 1, 1) is not None


async def test_a_continue_for_another_lease_or_point_misses_and_keeps_the_run() -> None:
    closed: Counter[str] = Counter()
    live = LiveRuns()
    await live.keep(await paused(registry(closed), "r", token=5))
    assert await live.take("r", 6, 1) is None  # another lease
    assert await live.take("r", 5, 2) is None  # the server counts another memo
    assert len(live) == 1 and not closed
    assert await live.take("r", 5, 1) is not None


async def test_a_new_claim_of_the_run_closes_the_kept_one() -> None:
    closed: Counter[str] = Counter()
    live = LiveRuns()
    await live.keep(await paused(registry(closed), "r", token=5))
    await live.discard("r")
    assert closed == {"r": 1}
    assert len(live) == 0


async def test_with_no_room_nothing_is_kept_and_the_run_is_closed() -> None:
    closed: Counter[str] = Counter()
    live = LiveRuns(max_runs=0)
    assert not await live.keep(await paused(registry(closed), "r"))
    assert closed == {"r": 1}


def test_a_run_kept_on_one_event_loop_is_never_resumed_on_another(
    caplog: pytest.LogCaptureFixture,
) -> None:
    # A sync view running asyncio.run per request: each delivery gets a new loop, which
    # closes its generators as it ends. Resuming one would end the run as if it returned.
    closed: Counter[str] = Counter()
    reg = registry(closed)
    live = LiveRuns()

    async def first() -> None:
        await live.keep(await paused(reg, "r"))

    async def second() -> LiveRun | None:
        return await live.take("r", 1, 1)

    anyio.run(first)
    assert closed == {"r": 1}  # the ended loop closed the kept generator
    with caplog.at_level(logging.WARNING):
        assert anyio.run(second) is None
    assert not live.enabled  # it stops keeping runs, and says why once
    assert len(live) == 0
    assert "new event loop each" in caplog.text


@pytest.mark.parametrize(
    ("options", "match"),
    [
        ({"max_runs": -1}, "live_runs must be a whole number"),
        ({"max_runs": True}, "live_runs must be a whole number"),
        ({"idle": 0}, "live_idle must be a positive number"),
        ({"idle": "1m"}, "live_idle must be a positive number"),
    ],
)
def test_bad_bounds_are_refused(options: dict[str, object], match: str) -> None:
    with pytest.raises(ConfigError, match=match):
        LiveRuns(**options)  # type: ignore[arg-type]
