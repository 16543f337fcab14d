"""Every function from Slay Q's documents, ported to slayq."""

from __future__ import annotations

import logging

import msgspec

import slayq
from slayq import step

log = logging.getLogger("examples.app")


class TestEvent(msgspec.Struct):
    test_string: str


@slayq.function(event="test/event", schema=TestEvent)
async def test_event(ctx: slayq.Context[TestEvent]) -> slayq.Workflow:
    """Three steps; the third fails on the first run (ctx.retry is 1 then), as in Slay Q."""

    def third() -> str:
        if ctx.retry == 1:
            raise RuntimeError("Yoinks.")
        return ctx.data.test_string

    val = yield step.run("first-step", lambda: "hello")
    val2 = yield step.run("second-step", lambda: "world")
    val3 = yield step.run("third-step", third)
    yield slayq.finish(f"{val} {val2} {val3}")


@slayq.function(event="testing/sleep-test")
async def sleep_test(ctx: slayq.Context[slayq.EmptyEvent]) -> slayq.Workflow:
    val = yield step.run("first-step", lambda: "hello")
    yield step.sleep("hush-baby", "2s")  # Slay Q's example sleeps '1 year'
    val2 = yield step.run("second-step", lambda: "world")
    yield slayq.finish(f"{val} {val2}")


class SleepUntil(msgspec.Struct):
    until: str


@slayq.function(event="testing/sleep-until-test", schema=SleepUntil)
async def sleep_until_test(ctx: slayq.Context[SleepUntil]) -> slayq.Workflow:
    val = yield step.run("first-step", lambda: "hello")
    yield step.sleep_until("hang-on", ctx.data.until)
    val2 = yield step.run("second-step", lambda: "world")
    yield slayq.finish(f"{val} {val2}")


class WaitsOnTestEvent(msgspec.Struct):
    waiting_for_id: str
    # Slay Q's example waits 2 minutes; the demo sends a shorter one to show a timeout.
    timeout: str = "2m"


@slayq.function(
    event="testing/waits-on-test",
    schema=WaitsOnTestEvent,
    waits_on=[slayq.Match("testing/waited-for-test", "waiting_for_id")],
)
async def waits_on_test(ctx: slayq.Context[WaitsOnTestEvent]) -> slayq.Workflow:
    step1 = yield step.run("step-1-val", lambda: 12)
    step2 = yield step.run("step-2-val", lambda: "cool")
    result = yield step.wait_for_event(
        "waiting-for-something", "testing/waited-for-test", ctx.data.timeout
    )
    yield slayq.finish({"fired": result is not None, "vals": [step1, step2]})


@slayq.function(event="test/caller", invokes=["test/callee"])
async def test_caller(ctx: slayq.Context[slayq.EmptyEvent]) -> slayq.Workflow:
    val = yield step.run("first-step", lambda: "hello")
    val2 = yield step.invoke("yo", "test/callee", {}, "5m")
    if not val2:
        yield slayq.finish("nobody home")
    yield slayq.finish(f"{val} {val2}")


@slayq.function(event="test/callee")
async def test_callee(ctx: slayq.Context[slayq.EmptyEvent]) -> str:
    return "world"


class Mail(msgspec.Struct):
    to: str


@slayq.function(event="mail/send", schema=Mail, queue="mail")
async def send_mail(ctx: slayq.Context[Mail]) -> str:
    log.info("mail to %s", ctx.data.to)
    return f"sent to {ctx.data.to}"


@slayq.function(event="testing/send-test")
async def send_test(ctx: slayq.Context[slayq.EmptyEvent]) -> slayq.Workflow:
    yield step.send_event("notify", "mail/send", {"to": "ops"})
    yield step.send_events("fan-out", [("mail/send", {"to": "ann"}), ("mail/send", {"to": "bo"})])
    yield slayq.finish("sent 3")


class CancelOnTestEvent(msgspec.Struct):
    some_data_id: str


@slayq.function(
    event="testing/cancel-on-test",
    schema=CancelOnTestEvent,
    cancel_on=[slayq.Match("testing/cancel-on-test", "some_data_id")],
)
async def cancel_on_test(ctx: slayq.Context[CancelOnTestEvent]) -> slayq.Workflow:
    log.info("cancel on test, retry %s", ctx.retry)
    yield step.sleep("so-tired", "8h")
    yield slayq.finish("and we are back")


@slayq.function(event="testing/cron-test", cron="* * * * *")
async def cron_test(ctx: slayq.Context[slayq.EmptyEvent]) -> str:
    return "tick"


FUNCTIONS = [
    test_event,
    sleep_test,
    sleep_until_test,
    waits_on_test,
    test_caller,
    test_callee,
    send_mail,
    send_test,
    cancel_on_test,
    cron_test,
]
