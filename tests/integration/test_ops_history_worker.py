"""Attempt history through the in-process worker on a real PostgreSQL."""

from __future__ import annotations

import socket

import pytest

import slayq
from slayq import step
from slayq.store.postgres import PostgresStore
from tests.integration.workers import finished, running

pytestmark = pytest.mark.anyio


async def test_a_retried_run_keeps_each_attempts_error_and_what_it_did(pg_url: str) -> None:
    @slayq.function(event="hist/flaky", retries=2)
    async def flaky(ctx: slayq.Context[slayq.EmptyEvent]) -> slayq.Workflow:
        yield step.run("fetch", lambda: "data")

        def store() -> str:
            if ctx.attempt < 3:
                raise RuntimeError(f"down on attempt {ctx.attempt}")
            return "stored"

        yield step.run("store", store)
        yield slayq.finish("ok")

    async with running(PostgresStore(pg_url), [flaky]) as client:
        run = await finished(client, await client.send_event("hist/flaky"))
    assert (run.status, run.attempts) == ("completed", 3)
    assert [(a.number, a.outcome, a.replayed, a.executed) for a in run.history] == [
        (1, "retrying", 0, 1),
        (2, "retrying", 1, 0),
        (3, "completed", 1, 1),
    ]
    errors = [a.error for a in run.history[:2]]
    assert [(e.type, e.message, e.step) for e in errors if e is not None] == [
        ("RuntimeError", "down on attempt 1", "store"),
        ("RuntimeError", "down on attempt 2", "store"),
    ]
    assert all("Traceback" in e.traceback for e in errors if e is not None)
    host = socket.gethostname()
    assert all(a.owner is not None and host in a.owner for a in run.history)
    assert all(a.ended_at is not None and a.ended_at >= a.started_at for a in run.history)
    fetch, stored = run.steps
    assert (fetch.attempt, stored.attempt) == (1, 3)
    assert fetch.duration is not None and stored.duration is not None
    assert fetch.started_at is not None and fetch.finished_at is not None
    assert fetch.started_at <= fetch.finished_at
