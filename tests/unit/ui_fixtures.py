"""A dashboard over a test harness with a few runs in it, for the route tests."""

from __future__ import annotations

import base64
import re
from dataclasses import dataclass

import anyio
import msgspec

import slayq
from slayq import step
from slayq.model import RunId
from slayq.testing import Harness
from slayq.ui import app, basic_auth

BROKEN = {"on": True}


class Order(msgspec.Struct):
    order_id: str


@slayq.function(event="shop/ship", schema=Order, retries=1, queue="shipping")
async def ship(ctx: slayq.Context[Order]) -> slayq.Workflow:
    charged = yield step.run("charge", lambda: f"charged {ctx.data.order_id}")

    def send() -> str:
        if BROKEN["on"]:
            raise RuntimeError("the carrier is down")
        return "shipped"

    shipped = yield step.run("ship", send)
    yield slayq.finish([charged, shipped])


class Upload(msgspec.Struct):
    file_id: str


@slayq.function(
    event="media/upload",
    schema=Upload,
    waits_on=[slayq.Match("media/approved", "file_id")],
)
async def upload(ctx: slayq.Context[Upload]) -> slayq.Workflow:
    ok = yield step.wait_for_event("approval", "media/approved", timeout="1d", match="file_id")
    yield slayq.finish(ok)


@slayq.function(event="reports/nightly", cron="0 3 * * *")
async def nightly(ctx: slayq.Context[slayq.EmptyEvent]) -> slayq.Workflow:
    yield slayq.finish("done")


@dataclass
class World:
    harness: Harness
    failed: RunId
    waiting: RunId

    def drive(self) -> None:
        anyio.run(self.harness.run_until_idle)

    def run(self, run_id: str) -> slayq.RunInfo:
        return anyio.run(self.harness.get_run, RunId(run_id))


def make_world() -> World:
    BROKEN["on"] = True

    async def build() -> World:
        harness = Harness([ship, upload, nightly])
        await harness.__aenter__()
        failed = await harness.send_event("shop/ship", {"order_id": "o1"})
        waiting = await harness.send_event("media/upload", {"file_id": "f1"})
        assert failed is not None and waiting is not None
        await harness.run_until_finished(failed)  # both attempts fail
        return World(harness, failed, waiting)

    return anyio.run(build)


def token_of(html: str) -> str:
    found = re.search(r'name="csrf-token" content="([^"]+)"', html)
    assert found, "the page carries no CSRF token"
    return found.group(1)


def basic(user: str, password: str) -> dict[str, str]:
    raw = base64.b64encode(f"{user}:{password}".encode()).decode()
    return {"Authorization": f"Basic {raw}"}


__all__ = ["World", "app", "basic", "basic_auth", "make_world", "token_of"]
