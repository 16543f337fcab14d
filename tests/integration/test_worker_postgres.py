"""The in-process worker on a real PostgreSQL: the seed's scenarios, on the real clock."""

from __future__ import annotations

import time
from collections import Counter
from datetime import timedelta

import anyio
import msgspec
import psycopg
import pytest

import slayq
from slayq import step
from slayq.client import Client
from slayq.model import RunId
from slayq.store.postgres import PostgresStore
from tests.integration import workers
from tests.integration.workers import finished, running

pytestmark = pytest.mark.anyio


class Text(msgspec.Struct):
    text: str


async def test_the_three_step_retry_runs_finished_steps_once(pg_url: str) -> None:
    calls: Counter[str] = Counter()

    @slayq.function(event="test/event", schema=Text)
    async def three(ctx: slayq.Context[Text]) -> slayq.Workflow:
        a = yield step.run("first-step", lambda: calls.update(["1"]) or "hello")
        b = yield step.run("second-step", lambda: calls.update(["2"]) or "world")

        def third() -> str:
            calls["3"] += 1
            if ctx.retry == 1:
                raise RuntimeError("Yoinks.")
            return ctx.data.text

        c = yield step.run("third-step", third)
        yield slayq.finish(f"{a} {b} {c}")

    async with running(PostgresStore(pg_url), [three]) as client:
        run = await finished(client, await client.send_event("test/event", {"text": "pg"}))
    assert (run.status, run.result, run.attempts) == ("completed", "hello world pg", 2)
    assert calls == {"1": 1, "2": 1, "3": 2}


async def test_sleep_wait_invoke_and_cancel_on_the_real_clock(pg_url: str) -> None:
    class Ref(msgspec.Struct):
        ref: str

    @slayq.function(event="callee", schema=Ref)
    async def callee(ctx: slayq.Context[Ref]) -> slayq.Workflow:
        yield step.sleep("nap", "300ms")
        yield slayq.finish(ctx.data.ref.upper())

    @slayq.function(
        event="flow",
        schema=Ref,
        invokes=["callee"],
        waits_on=[slayq.Match("approved", "ref")],
        cancel_on=[slayq.Match("abort", "ref")],
    )
    async def flow(ctx: slayq.Context[Ref]) -> slayq.Workflow:
        shout = yield step.invoke("shout", "callee", {"ref": ctx.data.ref}, timeout="10s")
        approval = yield step.wait_for_event("approval", "approved", "10s")
        yield step.sleep("cool-down", "200ms")
        yield slayq.finish({"shout": shout, "by": approval["by"] if approval else None})

    async with running(PostgresStore(pg_url), [callee, flow]) as client:
        ok = await client.send_event("flow", {"ref": "a"})
        doomed = await client.send_event("flow", {"ref": "b"})
        # Sent right away: long before the run reaches its wait. It must not be missed.
        await client.send_event("approved", {"ref": "a", "by": "ann"})
        await client.send_event("abort", {"ref": "b"})
        done = await finished(client, ok)
        cancelled = await finished(client, doomed)
    assert (done.status, done.result) == ("completed", {"shout": "A", "by": "ann"})
    assert [s.name for s in done.steps] == ["shout", "approval", "cool-down"]
    assert cancelled.status == "cancelled"


async def test_an_idle_worker_is_woken_by_notification_not_polling(pg_url: str) -> None:
    @slayq.function(event="ping")
    async def ping(ctx: slayq.Context[slayq.EmptyEvent]) -> str:
        return "pong"

    async with running(
        PostgresStore(pg_url), [ping], poll_interval=timedelta(seconds=60)
    ) as client:
        await anyio.sleep(0.5)  # let the worker go idle, waiting on its 60 s poll
        began = time.monotonic()
        run = await finished(client, await client.send_event("ping"), seconds=10)
        took = time.monotonic() - began
    assert run.result == "pong"
    assert took < 10  # with only the 60 s poll, it could not have run yet


async def test_schedules_fire_once_per_tick_across_processes(pg_url: str) -> None:
    from datetime import UTC, datetime

    from slayq.model import Schedule
    from slayq.runtime.clock import VirtualClock
    from slayq.runtime.registry import Registry

    @slayq.function(event="cron/minute", cron="* * * * *")
    async def tick(ctx: slayq.Context[slayq.EmptyEvent]) -> None:
        return None

    clock = VirtualClock(datetime(2025, 1, 1, 0, 0, 30, tzinfo=UTC))
    stores = [PostgresStore(pg_url, clock=clock) for _ in range(4)]
    schedules: list[Schedule] = Registry([tick]).schedules()
    fired: list[RunId] = []
    try:
        for store in stores:
            await store.open()
            await store.set_schedules(schedules, app="worker", events=["cron/minute"])
        for _ in range(3):
            clock.advance(timedelta(minutes=1))

            async def fire(store: PostgresStore) -> None:
                fired.extend(await store.fire_schedules())

            async with anyio.create_task_group() as group:
                for store in stores:
                    group.start_soon(fire, store)
    finally:
        for store in stores:
            await store.aclose()
    assert len(fired) == 3


async def test_a_worker_and_a_served_app_keep_each_others_schedules(pg_url: str) -> None:
    @slayq.function(event="worker/nightly", cron="0 3 * * *")
    async def nightly(ctx: slayq.Context[slayq.EmptyEvent]) -> None:
        return None

    @slayq.function(event="app/hourly", cron="0 * * * *")
    async def hourly(ctx: slayq.Context[slayq.EmptyEvent]) -> None:
        return None

    async def stored() -> list[tuple[str, str | None]]:
        async with await psycopg.AsyncConnection.connect(pg_url) as conn:
            cursor = await conn.execute("select event, app from slayq.schedules order by event")
            return [(event, app) for event, app in await cursor.fetchall()]

    async with running(PostgresStore(pg_url), [nightly]) as worker_client:
        app = Client([hourly], store=PostgresStore(pg_url), endpoint="http://app.test/slay")
        async with app:  # the app starts while the worker runs: both schedules exist
            assert await stored() == [
                ("app/hourly", "http://app.test/slay"),
                ("worker/nightly", worker_client.app),
            ]
    async with running(PostgresStore(pg_url), [nightly]):  # the worker restarts
        assert [event for event, _ in await stored()] == ["app/hourly", "worker/nightly"]
    assert worker_client.app == workers.__name__  # the module that made the client names it
