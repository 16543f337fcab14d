"""An example Starlette app served by ``python -m slayq.server``.

    SLAY_Q_DATABASE_URL=postgresql://postgres@127.0.0.1:5432/test SLAY_Q_SECRET=... \\
        uvicorn examples.app.main:app --port 3000

``POST /trigger/<event>`` with a JSON body sends an event; ``GET /runs/<id>`` shows a run;
the slayq server delivers runs to ``/api/slay-q``.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import AsyncIterator

import msgspec
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

import slayq
from examples.app.functions import FUNCTIONS
from slayq.store.postgres import PostgresStore

APP_URL = os.environ.get("APP_URL", "http://127.0.0.1:3000")

client = slayq.Client(
    FUNCTIONS,
    # Unset, the store refuses to start and says how to get a database (`slayq dev`).
    store=PostgresStore(os.environ.get("SLAY_Q_DATABASE_URL", "")),
    endpoint=f"{APP_URL}/api/slay-q",
)


def _json(value: object, status: int = 200) -> Response:
    return Response(msgspec.json.encode(value), status_code=status, media_type="application/json")


async def trigger(request: Request) -> Response:
    body = await request.body()
    try:
        data = msgspec.json.decode(body) if body else {}
        run_id = await client.send_event(request.path_params["event"], data)
    except (slayq.InputError, msgspec.DecodeError) as exc:
        return _json({"error": str(exc)}, 400)
    return _json({"run_id": run_id})


async def show_run(request: Request) -> Response:
    try:
        return _json(await client.get_run(request.path_params["run_id"]))
    except slayq.RunNotFoundError as exc:
        return _json({"error": str(exc)}, 404)


@contextlib.asynccontextmanager
async def lifespan(app: Starlette) -> AsyncIterator[None]:
    client.check_receiver()  # no SLAY_Q_SECRET: stop here, with the fix in the message
    async with client:  # runs migrations, registers the cron schedules
        yield


app = Starlette(
    routes=[
        Route("/trigger/{event:path}", trigger, methods=["POST"]),
        Route("/runs/{run_id}", show_run, methods=["GET"]),
        Route("/api/slay-q", client.asgi, methods=["POST"]),
    ],
    lifespan=lifespan,
)
