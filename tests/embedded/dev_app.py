"""The app ``slayq dev`` runs in the tests: no endpoint, so its in-process worker runs it."""

from __future__ import annotations

import os

import msgspec

import slayq
from slayq import step
from slayq.store.postgres import PostgresStore


class Greet(msgspec.Struct):
    name: str


@slayq.function(event="dev/greet", schema=Greet)
async def greet(ctx: slayq.Context[Greet]) -> slayq.Workflow:
    hello = yield step.run("hello", lambda: "hello")
    yield slayq.finish(f"{hello} {ctx.data.name}")


client = slayq.Client([greet], store=PostgresStore(os.environ.get("SLAY_Q_DATABASE_URL", "")))
