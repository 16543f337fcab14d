"""Edges found while documenting: each was a bug once."""

from __future__ import annotations

from collections import Counter
from datetime import UTC, datetime
from zoneinfo import ZoneInfo

import msgspec
import pytest

import slayq
from slayq import step
from slayq.runtime.cron import CronSpec
from slayq.runtime.durations import parse_duration
from slayq.testing import Harness

pytestmark = pytest.mark.anyio


class Mail(msgspec.Struct):
    to: str


async def test_send_events_with_one_bad_event_sends_none() -> None:
    got: Counter[str] = Counter()

    @slayq.function(event="mail", schema=Mail)
    async def mail(ctx: slayq.Context[Mail]) -> None:
        got[ctx.data.to] += 1

    @slayq.function(event="fan")
    async def fan(ctx: slayq.Context[slayq.EmptyEvent]) -> slayq.Workflow:
        yield step.send_events("all", [("mail", {"to": "a"}), ("mail", {"too": "typo"})])

    async with Harness([mail, fan]) as h:
        run_id = await h.send_event("fan")
        assert run_id is not None
        await h.advance("1h")
        run = await h.get_run(run_id)
    assert (run.status, run.attempts) == ("failed", 1)
    assert got == {}


class Maybe(msgspec.Struct):
    ref: str | None = None


async def test_an_event_without_the_match_field_matches_nothing() -> None:
    @slayq.function(
        event="job",
        schema=Maybe,
        waits_on=[slayq.Match("ok", "ref")],
        cancel_on=[slayq.Match("stop", "ref")],
    )
    async def job(ctx: slayq.Context[Maybe]) -> slayq.Workflow:
        answer = yield step.wait_for_event("ok", "ok", "1h")
        yield slayq.finish(answer)

    async with Harness([job]) as h:
        run_id = await h.send_event("job", {})
        assert run_id is not None
        await h.run_until_idle()
        # A missing field is not None: such an event could never match, so it is refused.
        for event in ("stop", "ok"):
            with pytest.raises(slayq.EventDataError, match="none of the fields"):
                await h.send_event(event, {"other": 1})
        await h.run_until_idle()
        assert (await h.get_run(run_id)).status == "waiting"
        await h.send_event("ok", {"ref": None})
        await h.run_until_idle()
        run = await h.get_run(run_id)
    assert (run.status, run.result) == ("completed", {"ref": None})


class Renamed(msgspec.Struct, rename="camel"):
    file_id: str


async def test_matching_uses_the_stored_names_of_renamed_fields() -> None:
    @slayq.function(
        event="job",
        schema=Renamed,
        waits_on=[slayq.Match("ok", "file_id")],
        cancel_on=[slayq.Match("stop", "file_id")],
    )
    async def job(ctx: slayq.Context[Renamed]) -> slayq.Workflow:
        answer = yield step.wait_for_event("ok", "ok", "1h")
        yield slayq.finish(answer)

    async with Harness([job]) as h:
        first = await h.send_event("job", {"fileId": "f1"})
        second = await h.send_event("job", {"fileId": "f2"})
        assert first is not None and second is not None
        await h.run_until_idle()
        await h.send_event("ok", {"fileId": "f1"})
        await h.send_event("stop", {"fileId": "f2"})
        await h.run_until_idle()
        runs = [await h.get_run(r) for r in (first, second)]
    assert [r.status for r in runs] == ["completed", "cancelled"]


def test_a_wall_time_repeated_when_clocks_fall_back_fires_once() -> None:
    spec = CronSpec("TZ=Europe/Berlin 30 2 * * *")
    ticks, at = [], datetime(2025, 10, 25, 12, tzinfo=UTC)
    for _ in range(3):
        at = spec.next_after(at)
        ticks.append(at.astimezone(ZoneInfo("Europe/Berlin")))
    assert [(t.day, t.hour, t.minute) for t in ticks] == [(26, 2, 30), (27, 2, 30), (28, 2, 30)]


async def test_an_uncaught_invoke_error_fails_for_good() -> None:
    @slayq.function(event="callee", retries=0)
    async def callee(ctx: slayq.Context[slayq.EmptyEvent]) -> slayq.Workflow:
        yield step.run("boom", lambda: 1 / 0)

    @slayq.function(event="caller", invokes=["callee"], retries=3)
    async def caller(ctx: slayq.Context[slayq.EmptyEvent]) -> slayq.Workflow:
        yield step.invoke("call", "callee", {})

    async with Harness([callee, caller]) as h:
        run_id = await h.send_event("caller")
        assert run_id is not None
        run = await h.run_until_finished(run_id)
    assert (run.status, run.attempts) == ("failed", 1)
    assert run.error is not None and run.error.type == "InvokeError"


@pytest.mark.parametrize("bad", [float("nan"), float("inf"), 1e20, "1e20 years"])
def test_absurd_durations_are_duration_errors(bad: object) -> None:
    with pytest.raises(slayq.DurationError):
        parse_duration(bad)  # type: ignore[arg-type]


async def test_a_step_output_error_names_its_step() -> None:
    @slayq.function(event="bad")
    async def bad(ctx: slayq.Context[slayq.EmptyEvent]) -> slayq.Workflow:
        yield step.run("make", object)

    async with Harness([bad]) as h:
        run_id = await h.send_event("bad")
        assert run_id is not None
        run = await h.run_until_finished(run_id)
    assert run.error is not None and run.error.step == "make"
