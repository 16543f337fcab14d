"""The app a worker subprocess runs in the telemetry tests: ``tests.integration.telemetry_app:client``."""

from __future__ import annotations

import logging
import os

import slayq
from slayq import step
from slayq.client import Client
from slayq.store.postgres import PostgresStore

log = logging.getLogger("telemetry_app")


@slayq.function(event="tel/ok")
async def ok(ctx: slayq.Context[slayq.EmptyEvent]) -> slayq.Workflow:
    def greet() -> str:
        log.info("hello from the handler")  # a user's record: it gets run_id and step
        return "hi"

    first = yield step.run("greet", greet)
    second = yield step.run("again", lambda: "there")
    yield slayq.finish(f"{first} {second}")


@slayq.function(event="tel/fail", retries=0)
async def fail(ctx: slayq.Context[slayq.EmptyEvent]) -> slayq.Workflow:
    def boom() -> None:
        raise RuntimeError("boom")

    yield step.run("boom", boom)


@slayq.function(event="tel/nap")
async def nap(ctx: slayq.Context[slayq.EmptyEvent]) -> slayq.Workflow:
    yield step.sleep("nap", "200ms")
    yield step.run("after", lambda: 1)


@slayq.function(event="tel/parked", queue="parked")
async def parked(ctx: slayq.Context[slayq.EmptyEvent]) -> None:
    pass


client = Client(
    [ok, fail, nap, parked],
    store=PostgresStore(os.environ.get("SLAY_Q_DATABASE_URL", "postgresql:///test")),
)
