"""The Slay Q documents' examples, ported, run on the harness's virtual clock."""

from __future__ import annotations

from collections import Counter
from datetime import UTC, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import msgspec
import pytest

import slayq
from slayq import step
from slayq.testing import Harness

pytestmark = pytest.mark.anyio


class ThreeStepEvent(msgspec.Struct):
    test_string: str


def three_step_function(calls: Counter[str]) -> slayq.Function:
    @slayq.function(event="test/event", schema=ThreeStepEvent)
    async def test_event(ctx: slayq.Context[ThreeStepEvent]) -> slayq.Workflow:
        def first() -> str:
            calls["first-step"] += 1
            return "hello"

        def second() -> str:
            calls["second-step"] += 1
            return "world"

        def third() -> str:
            calls["third-step"] += 1
            if ctx.retry == 1:
                raise RuntimeError("Yoinks.")
            return ctx.data.test_string

        val = yield step.run("first-step", first)
        val2 = yield step.run("second-step", second)
        val3 = yield step.run("third-step", third)
        yield slayq.finish(f"{val} {val2} {val3}")

    return test_event


async def test_a_failing_third_step_retries_without_rerunning_the_first_two() -> None:
    calls: Counter[str] = Counter()
    async with Harness([three_step_function(calls)]) as h:
        run_id = await h.send_event("test/event", {"test_string": "slayed"})
        assert run_id is not None
        await h.run_until_idle()
        first = await h.get_run(run_id)
        assert first.status == "queued"
        assert first.attempts == 2
        assert first.error is not None
        assert first.error.message == "Yoinks."
        assert first.error.step == "third-step"
        assert "Traceback" in first.error.traceback
        assert [s.name for s in first.steps] == ["first-step", "second-step"]
        await h.advance("1m")  # past the retry's backoff
        run = await h.get_run(run_id)
    assert (run.status, run.result, run.attempts) == ("completed", "hello world slayed", 2)
    assert calls == {"first-step": 1, "second-step": 1, "third-step": 2}


async def test_sleep_for_a_year_finishes_in_virtual_time() -> None:
    calls: Counter[str] = Counter()

    @slayq.function(event="test/sleep")
    async def sleeper(ctx: slayq.Context[slayq.EmptyEvent]) -> slayq.Workflow:
        val = yield step.run("first-step", lambda: calls.update(["first"]) or "hello")
        yield step.sleep("hush-baby", "1 year")
        val2 = yield step.run("second-step", lambda: calls.update(["second"]) or "world")
        yield slayq.finish(f"{val} {val2}")

    async with Harness([sleeper]) as h:
        started = h.now
        run_id = await h.send_event("test/sleep")
        assert run_id is not None
        await h.run_until_idle()
        assert (await h.get_run(run_id)).status == "sleeping"
        await h.advance("364 days")
        assert (await h.get_run(run_id)).status == "sleeping"
        await h.advance("2 days")
        run = await h.get_run(run_id)
    assert (run.status, run.result) == ("completed", "hello world")
    assert calls == {"first": 1, "second": 1}
    sleep_record = run.steps[1]
    assert sleep_record.finished_at is not None
    assert sleep_record.finished_at - started >= timedelta(days=365.25)


async def test_sleep_until_a_date() -> None:
    @slayq.function(event="test/sleep-until")
    async def sleeper(ctx: slayq.Context[slayq.EmptyEvent]) -> slayq.Workflow:
        yield step.sleep_until("hang-on", "2025-06-01T00:00:00Z")
        yield slayq.finish("awake")

    async with Harness([sleeper], start=datetime(2025, 1, 1, tzinfo=UTC)) as h:
        run_id = await h.send_event("test/sleep-until")
        assert run_id is not None
        await h.advance("150 days")  # 2025-05-31
        assert (await h.get_run(run_id)).status == "sleeping"
        await h.advance("1 day")
        run = await h.get_run(run_id)
    assert (run.status, run.result) == ("completed", "awake")
    assert run.steps[0].finished_at == datetime(2025, 6, 1, tzinfo=UTC)


class WaitsOnTestEvent(msgspec.Struct):
    waiting_for_id: str


@slayq.function(
    event="testing/waits-on-test",
    schema=WaitsOnTestEvent,
    waits_on=[slayq.Match("testing/waited-for-test", "waiting_for_id")],
)
async def waits_on_test(ctx: slayq.Context[WaitsOnTestEvent]) -> slayq.Workflow:
    step1 = yield step.run("step-1-val", lambda: 12)
    step2 = yield step.run("step-2-val", lambda: "cool")
    result = yield step.wait_for_event("waiting-for-something", "testing/waited-for-test", "2m")
    yield slayq.finish({"fired": result is not None, "event": result, "vals": [step1, step2]})


async def test_wait_for_event_is_answered_by_a_matching_event() -> None:
    async with Harness([waits_on_test]) as h:
        run_id = await h.send_event("testing/waits-on-test", {"waiting_for_id": "w1"})
        assert run_id is not None
        await h.run_until_idle()
        assert (await h.get_run(run_id)).status == "waiting"
        assert await h.send_event("testing/waited-for-test", {"waiting_for_id": "nope"}) is None
        await h.run_until_idle()
        assert (await h.get_run(run_id)).status == "waiting"
        await h.send_event("testing/waited-for-test", {"waiting_for_id": "w1", "ok": True})
        await h.run_until_idle()
        run = await h.get_run(run_id)
    assert run.status == "completed"
    assert run.result == {
        "fired": True,
        "event": {"waiting_for_id": "w1", "ok": True},
        "vals": [12, "cool"],
    }


async def test_wait_for_event_times_out_to_none() -> None:
    async with Harness([waits_on_test]) as h:
        run_id = await h.send_event("testing/waits-on-test", {"waiting_for_id": "w1"})
        assert run_id is not None
        await h.advance("119s")
        assert (await h.get_run(run_id)).status == "waiting"
        await h.advance("1s")
        run = await h.get_run(run_id)
    assert run.status == "completed"
    assert run.result == {"fired": False, "event": None, "vals": [12, "cool"]}


async def test_an_event_sent_right_after_the_trigger_is_not_missed() -> None:
    async with Harness([waits_on_test]) as h:
        run_id = await h.send_event("testing/waits-on-test", {"waiting_for_id": "w1"})
        assert run_id is not None
        # Sent before the run even started, let alone reached its wait.
        await h.send_event("testing/waited-for-test", {"waiting_for_id": "w1"})
        await h.run_until_idle()
        run = await h.get_run(run_id)
    assert run.status == "completed"
    assert run.result["fired"] is True


def caller_and_callee(callee_body: Any) -> list[slayq.Function]:
    @slayq.function(event="test/caller", invokes=["test/callee"])
    async def caller(ctx: slayq.Context[slayq.EmptyEvent]) -> slayq.Workflow:
        val = yield step.run("first-step", lambda: "hello")
        try:
            val2 = yield step.invoke("yo", "test/callee", {}, "5m")
        except slayq.InvokeError as exc:
            yield slayq.finish(f"callee failed: {exc}")
        if not val2:
            yield slayq.finish("nobody home")
        yield slayq.finish(f"{val} {val2}")

    @slayq.function(event="test/callee", retries=0)
    async def callee(ctx: slayq.Context[slayq.EmptyEvent]) -> slayq.Workflow:
        result = yield step.run("work", callee_body)
        yield step.sleep("take-your-time", "1m")
        yield slayq.finish(result)

    return [caller, callee]


async def test_invoke_answers_the_callees_result() -> None:
    async with Harness(caller_and_callee(lambda: "world")) as h:
        run_id = await h.send_event("test/caller")
        assert run_id is not None
        run = await h.run_until_finished(run_id)
    assert (run.status, run.result) == ("completed", "hello world")
    assert [s.kind for s in run.steps] == ["run", "invoke"]


async def test_invoke_of_a_slow_callee_times_out_to_none() -> None:
    @slayq.function(event="test/caller", invokes=["test/slow"])
    async def caller(ctx: slayq.Context[slayq.EmptyEvent]) -> slayq.Workflow:
        val = yield step.invoke("yo", "test/slow", {}, timeout="5m")
        yield slayq.finish("nobody home" if val is None else val)

    @slayq.function(event="test/slow")
    async def slow(ctx: slayq.Context[slayq.EmptyEvent]) -> slayq.Workflow:
        yield step.sleep("forever-ish", "1h")
        yield slayq.finish("too late")

    async with Harness([caller, slow]) as h:
        run_id = await h.send_event("test/caller")
        assert run_id is not None
        await h.advance("5m")
        run = await h.get_run(run_id)
        assert (run.status, run.result) == ("completed", "nobody home")
        await h.advance("1h")
        assert (await h.get_run(run_id)).result == "nobody home"


async def test_invoke_of_a_failing_callee_raises_invoke_error_at_the_yield() -> None:
    def explode() -> str:
        raise ValueError("no thumbnail for you")

    async with Harness(caller_and_callee(explode)) as h:
        run_id = await h.send_event("test/caller")
        assert run_id is not None
        run = await h.run_until_finished(run_id)
    assert run.status == "completed"
    assert run.result == "callee failed: step 'yo': ValueError: no thumbnail for you"


class CancelOnTestEvent(msgspec.Struct):
    some_data_id: str


async def test_cancel_on_cancels_a_sleeping_run() -> None:
    calls: Counter[str] = Counter()

    @slayq.function(
        event="testing/cancel-on-test",
        schema=CancelOnTestEvent,
        cancel_on=[slayq.Match("testing/cancel-on-test", "some_data_id")],
    )
    async def cancel_on_test(ctx: slayq.Context[CancelOnTestEvent]) -> slayq.Workflow:
        yield step.sleep("so-tired", "8h")
        yield step.run("and-we-are-back", lambda: calls.update([ctx.data.some_data_id]))

    async with Harness([cancel_on_test]) as h:
        first = await h.send_event("testing/cancel-on-test", {"some_data_id": "a"})
        other = await h.send_event("testing/cancel-on-test", {"some_data_id": "b"})
        assert first is not None
        assert other is not None
        await h.advance("1h")
        second = await h.send_event("testing/cancel-on-test", {"some_data_id": "a"})
        assert second is not None
        await h.advance("8h")
        runs = [await h.get_run(r) for r in (first, other, second)]
    assert [r.status for r in runs] == ["cancelled", "completed", "completed"]
    assert runs[0].finished_at is not None
    assert runs[0].steps == []
    assert calls == {"a": 1, "b": 1}


async def test_send_event_sends_exactly_once_across_retries() -> None:
    received: Counter[str] = Counter()

    class Mail(msgspec.Struct):
        to: str

    @slayq.function(event="flow/start")
    async def flow(ctx: slayq.Context[slayq.EmptyEvent]) -> slayq.Workflow:
        yield step.send_event("notify", "mail/send", {"to": "ops"})
        yield step.send_events("fanout", [("mail/send", {"to": "a"}), ("mail/send", {"to": "b"})])
        yield step.run("flaky", lambda: ctx.attempt >= 3 or 1 / 0)

    @slayq.function(event="mail/send", schema=Mail)
    async def mail(ctx: slayq.Context[Mail]) -> None:
        received[ctx.data.to] += 1

    async with Harness([flow, mail]) as h:
        run_id = await h.send_event("flow/start")
        assert run_id is not None
        run = await h.run_until_finished(run_id)
    assert (run.status, run.attempts) == ("completed", 3)
    assert received == {"ops": 1, "a": 1, "b": 1}


async def test_cron_fires_at_local_times_across_a_dst_change() -> None:
    fired: list[datetime] = []

    @slayq.function(event="cron/nightly", cron="TZ=Europe/Berlin 30 2 * * *")
    async def nightly(ctx: slayq.Context[slayq.EmptyEvent]) -> None:
        fired.append(h.now)

    @slayq.function(event="cron/singapore", cron="TZ=Asia/Singapore 0 3 * * *")
    async def singapore(ctx: slayq.Context[slayq.EmptyEvent]) -> None:
        fired.append(h.now)

    # Berlin springs forward on 2025-03-30 (02:00 -> 03:00): 02:30 does not exist that day.
    async with Harness([nightly], start=datetime(2025, 3, 28, 12, tzinfo=UTC)) as h:
        await h.advance("3 days")
    berlin = [t.astimezone(ZoneInfo("Europe/Berlin")) for t in fired]
    assert [(t.day, t.hour, t.minute) for t in berlin] == [(29, 2, 30), (30, 3, 0), (31, 2, 30)]
    assert [t.utcoffset() for t in berlin] == [
        timedelta(hours=1),
        timedelta(hours=2),
        timedelta(hours=2),
    ]

    fired.clear()
    async with Harness([singapore], start=datetime(2025, 1, 1, tzinfo=UTC)) as h:
        await h.advance("2 days")
    assert fired == [datetime(2025, 1, 1, 19, tzinfo=UTC), datetime(2025, 1, 2, 19, tzinfo=UTC)]
