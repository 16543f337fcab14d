"""``/live``: the event stream pushes a page's live region when it changes, and says
nothing (but a heartbeat) while it does not. Driven as raw ASGI, so that the test reads
the stream as it comes and then disconnects."""

from __future__ import annotations

from typing import Any

import anyio
import pytest

from slayq.ui import app
from tests.unit.ui_fixtures import make_world

pytestmark = pytest.mark.anyio


async def read_stream(dashboard: Any, query: str, *, until: str, seconds: float = 5) -> str:
    """The body of GET /live?<query> until ``until`` appears in it; then disconnect."""
    received = b""
    gone = anyio.Event()

    async def receive() -> dict[str, Any]:
        await gone.wait()
        return {"type": "http.disconnect"}

    async def send(message: dict[str, Any]) -> None:
        nonlocal received
        if message["type"] == "http.response.start":
            assert message["status"] == 200
        elif message["type"] == "http.response.body":
            received += message.get("body", b"")
            if until in received.decode():
                gone.set()

    scope = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": "GET",
        "scheme": "http",
        "path": "/live",
        "raw_path": b"/live",
        "root_path": "",
        "query_string": query.encode(),
        "headers": [(b"host", b"test")],
        "client": ("127.0.0.1", 1),
        "server": ("test", 80),
    }
    with anyio.fail_after(seconds):
        await dashboard(scope, receive, send)
    return received.decode()


async def test_the_stream_pushes_the_region_then_only_changes() -> None:
    world = await anyio.to_thread.run_sync(make_world)
    dashboard = app(world.harness.client.store, live_interval=0.05, heartbeat=0.2)
    body = await read_stream(dashboard, "src=/runs%3Fstatus%3Dfailed", until="event: fragment")
    assert body.startswith("retry: 3000\n\n")
    assert f'<tr data-run-id="{world.failed}" data-status="failed">' in body
    fingerprint = body.split("id: ")[1].split("\n")[0]
    # Told what it shows, the stream sends nothing new but heartbeats...
    quiet = await read_stream(
        dashboard, f"src=/runs%3Fstatus%3Dfailed&fp={fingerprint}", until=": heartbeat"
    )
    assert "event: fragment" not in quiet
    # ...until the page's region changes.
    await world.harness.retry(world.failed)
    changed = await read_stream(
        dashboard, f"src=/runs%3Fstatus%3Dfailed&fp={fingerprint}", until="event: fragment"
    )
    assert f'data-run-id="{world.failed}"' not in changed  # no longer failed
    assert "no runs match" in changed


async def test_a_src_that_is_not_a_page_is_refused() -> None:
    world = await anyio.to_thread.run_sync(make_world)
    dashboard = app(world.harness.client.store)
    from starlette.testclient import TestClient

    with TestClient(dashboard) as client:
        assert client.get("/live", params={"src": "http://evil.example/"}).status_code == 400
        assert client.get("/live", params={"src": "/nope"}).status_code == 400
