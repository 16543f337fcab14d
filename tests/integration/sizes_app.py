"""An app whose runs outgrow the body limits, served by uvicorn for the server tests:
``uvicorn tests.integration.sizes_app:app`` with ``APP_URL``, ``SLAY_Q_DATABASE_URL``,
``SLAY_Q_SECRET`` and ``APP_BODY_LIMIT`` (like ``12MiB``) in the environment.

Each handler appends its step name to ``SIZES_LOG``, so a handler that ran twice shows.
"""

from __future__ import annotations

import os

import msgspec
from starlette.applications import Starlette
from starlette.routing import Route

import slayq
from slayq import step
from slayq.client import Client
from slayq.store.postgres import PostgresStore
from slayq.transport.wire import Limits, parse_size

LOG = os.environ.get("SIZES_LOG", "/dev/null")
BLOB = 400_000  # bytes of event data per fanned-out event


class Sized(msgspec.Struct):
    count: int = 1
    size: int = 1000
    nap_after: int | None = None  # sleep a second after this step: resume from the memo


class Blob(msgspec.Struct):
    blob: str


def _ran(name: str) -> None:
    with open(LOG, "a") as log:
        log.write(name + "\n")


@slayq.function(event="sizes/fan-out", schema=Sized, retries=3)
async def fan_out(ctx: slayq.Context[Sized]) -> slayq.Workflow:
    def make() -> int:
        _ran("make")
        return ctx.data.count

    count = yield step.run("make", make)
    yield step.send_events("fan-out", [("sizes/sink", {"blob": "x" * BLOB})] * count)
    yield slayq.finish(count)


@slayq.function(event="sizes/sink", schema=Blob)
async def sink(ctx: slayq.Context[Blob]) -> int:
    return len(ctx.data.blob)


@slayq.function(event="sizes/outputs", schema=Sized, retries=3)
async def outputs(ctx: slayq.Context[Sized]) -> slayq.Workflow:
    """``count`` steps, each returning ``size`` bytes: the memo grows with each one.

    The memo is delivered once per attempt; ``nap_after`` makes the run sleep after that
    step, so that it resumes with a delivery of its whole memo.
    """
    for n in range(ctx.data.count):

        def make(name: str = f"step-{n}") -> str:
            _ran(name)
            return "y" * ctx.data.size

        yield step.run(f"step-{n}", make)
        if n == ctx.data.nap_after:
            yield step.sleep("nap", "1s")
    yield slayq.finish("done")


APP_URL = os.environ.get("APP_URL", "http://127.0.0.1:3000")
client = Client(
    [fan_out, sink, outputs],
    store=PostgresStore(os.environ.get("SLAY_Q_DATABASE_URL", "")),
    endpoint=f"{APP_URL}/api/slay-q",
    body_limits=Limits(body_bytes=parse_size(os.environ.get("APP_BODY_LIMIT", "8MiB"))),
)


app = Starlette(routes=[Route("/api/slay-q", client.asgi, methods=["POST"])])
