"""The app that fault tests run in worker subprocesses: ``tests.faults.app:client``.

Each handler appends one line to the file named by ``FAULT_LOG`` when it starts (and one
when it ends): ``start <run> <step> <pid> <committed-already> <time>``. "committed-already"
is read from the store at handler start: it must never be 1, whatever the faults.
"""

from __future__ import annotations

import os
import time
from typing import Any

import anyio
import msgspec

import slayq
from slayq import step
from slayq.client import Client
from slayq.store.postgres import PostgresStore

LOG = os.environ.get("FAULT_LOG", "/dev/null")


class Job(msgspec.Struct):
    n: int
    step_seconds: float = 0.2


def _log(line: str) -> None:
    fd = os.open(LOG, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(fd, (line + "\n").encode())  # one write under PIPE_BUF: atomic with O_APPEND
    finally:
        os.close(fd)


def _handler(ctx: slayq.Context[Job], name: str):  # type: ignore[no-untyped-def]
    async def handler() -> str:
        run = await client.get_run(ctx.run_id)
        committed = int(any(s.name == name for s in run.steps))
        _log(f"start {ctx.run_id} {name} {os.getpid()} {committed} {time.time():.6f}")
        await anyio.sleep(ctx.data.step_seconds)
        _log(f"end {ctx.run_id} {name} {os.getpid()} {committed} {time.time():.6f}")
        return f"{name}:{ctx.data.n}"

    return handler


@slayq.function(event="faults/three-steps", schema=Job)
async def three_steps(ctx: slayq.Context[Job]) -> slayq.Workflow:
    results = []
    for name in ("one", "two", "three"):
        results.append((yield step.run(name, _handler(ctx, name))))
    yield slayq.finish(results)


@slayq.function(event="faults/solo", schema=Job, queue="solo")
async def solo(ctx: slayq.Context[Job]) -> slayq.Workflow:
    yield step.run("only", _handler(ctx, "only"))


client = Client([three_steps, solo], store=PostgresStore(os.environ.get("SLAY_Q_DATABASE_URL", "")))


# Served over HTTP for the server's fault tests: uvicorn tests.faults.app:app
def _http_app() -> Any:
    from starlette.applications import Starlette
    from starlette.responses import Response
    from starlette.routing import Route

    failures_left = [int(os.environ.get("FAIL_FIRST", "0"))]
    receiver = client.asgi

    async def flaky(scope: Any, receive: Any, send: Any) -> None:
        # Answers 500 to the first FAIL_FIRST deliveries, as an app mid-deploy might.
        if scope["type"] == "http" and failures_left[0] > 0:
            failures_left[0] -= 1
            await Response("deploying", status_code=500)(scope, receive, send)
            return
        await receiver(scope, receive, send)

    return Starlette(routes=[Route("/api/slay-q", _Asgi(flaky), methods=["POST"])])


class _Asgi:
    def __init__(self, inner: Any) -> None:
        self.inner = inner

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        await self.inner(scope, receive, send)


app = _http_app()
