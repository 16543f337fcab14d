"""The dashboard on PostgreSQL: its pages read the real store, and an open page learns
of a new run from the database's notification, well before its re-check interval."""

from __future__ import annotations

import re

import anyio
import httpx
import pytest

from slayq.client import Client
from slayq.store.postgres import PostgresStore
from slayq.ui import app
from tests.unit.test_ui_live import read_stream
from tests.unit.ui_fixtures import nightly, ship, upload

pytestmark = pytest.mark.anyio


async def test_every_page_renders_against_postgres(pg_url: str) -> None:
    async with Client([ship, upload, nightly], store=PostgresStore(pg_url)) as client:
        shipped = await client.send_event("shop/ship", {"order_id": "o1"})
        waiting = await client.send_event("media/upload", {"file_id": "f1"})
        await client.pause_queue("shipping", actor="test")
        dashboard = app(client.store)
        transport = httpx.ASGITransport(app=dashboard)
        async with httpx.AsyncClient(transport=transport, base_url="http://ui") as http:
            for path in ("/", "/runs", "/waits", "/queues", "/schedules", "/workers", "/audit"):
                page = await http.get(path)
                assert page.status_code == 200, (path, page.text)
            runs = (await http.get("/runs", params={"queue": "shipping"})).text
            assert f'data-run-id="{shipped}" data-status="queued"' in runs
            assert f'data-run-id="{waiting}"' not in runs
            run_page = (await http.get(f"/runs/{shipped}")).text
            assert 'data-testid="run-status">queued<' in run_page
            queues = (await http.get("/queues")).text
            assert 'data-queue="shipping" data-paused="true"' in queues
            overview = (await http.get("/")).text
            assert re.search(r'data-testid="count-due"><span class="n">2<', overview)


async def test_an_open_page_is_pushed_a_new_run_on_the_databases_notification(
    pg_url: str,
) -> None:
    async with Client([ship], store=PostgresStore(pg_url)) as client:
        first = await client.send_event("shop/ship", {"order_id": "o1"})
        # A re-check interval far longer than the test: only a notification pushes.
        dashboard = app(client.store, live_interval=60, heartbeat=60)
        body = ""
        shown = ""

        async def watch() -> None:
            nonlocal body
            body = await read_stream(dashboard, f"src=/runs&fp={shown}", until="event: fragment")

        transport = httpx.ASGITransport(app=dashboard)
        async with httpx.AsyncClient(transport=transport, base_url="http://ui") as http:
            shown = (await http.get("/runs")).headers["x-slayq-fingerprint"]
        async with anyio.create_task_group() as group:
            group.start_soon(watch)
            await anyio.sleep(0.5)  # the stream is listening
            second = await client.send_event("shop/ship", {"order_id": "o2"})
        assert f'data-run-id="{second}"' in body and f'data-run-id="{first}"' in body
