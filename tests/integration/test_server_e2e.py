"""End to end: the slayq server and the example app as real processes on loopback."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import anyio
import httpx
import pytest

from tests.integration.servers import (
    free_port,
    start_app,
    start_server,
    stop,
    wait_until_up,
)

pytestmark = pytest.mark.anyio

CONFIG = '{"queues": {"general": {"concurrency": 10}, "mail": {"concurrency": 2}}}'


@dataclass
class Stack:
    url: str
    app: str
    server: str
    tmp: Path
    app_port: int
    server_port: int

    async def trigger(self, event: str, data: dict[str, Any] | None = None) -> str:
        async with httpx.AsyncClient() as http:
            response = await http.post(f"{self.app}/trigger/{event}", json=data or {})
        assert response.status_code == 200, response.text
        run_id: str = response.json()["run_id"]
        return run_id

    async def run(self, run_id: str) -> dict[str, Any]:
        async with httpx.AsyncClient() as http:
            response = await http.get(f"{self.app}/runs/{run_id}")
        assert response.status_code == 200, response.text
        run: dict[str, Any] = response.json()
        return run

    async def finished(self, run_id: str, seconds: float = 30) -> dict[str, Any]:
        with anyio.fail_after(seconds):
            while True:
                run = await self.run(run_id)
                if run["status"] in ("completed", "failed", "cancelled"):
                    return run
                await anyio.sleep(0.05)


@pytest.fixture
def stack(pg_url: str, tmp_path: Path) -> Iterator[Stack]:
    config = tmp_path / "slay-config.json"
    config.write_text(CONFIG)
    app_port, server_port = free_port(), free_port()
    server = start_server(
        pg_url,
        server_port,
        config,
        tmp_path / "server.out",
        cron_url=f"http://127.0.0.1:{app_port}/api/slay-q",
    )
    app = start_app(pg_url, app_port, tmp_path / "app.out")
    try:
        wait_until_up(f"http://127.0.0.1:{server_port}/health", server)
        wait_until_up(f"http://127.0.0.1:{app_port}/runs/x", app)
        yield Stack(
            pg_url,
            f"http://127.0.0.1:{app_port}",
            f"http://127.0.0.1:{server_port}",
            tmp_path,
            app_port,
            server_port,
        )
    finally:
        stop(app, server)


async def test_every_seed_scenario_completes_through_the_server(stack: Stack) -> None:
    three = await stack.trigger("test/event", {"test_string": "e2e"})
    sleep = await stack.trigger("testing/sleep-test")
    until = (datetime.now(UTC) + timedelta(seconds=2)).isoformat()
    sleep_until = await stack.trigger("testing/sleep-until-test", {"until": until})
    waiter = await stack.trigger("testing/waits-on-test", {"waiting_for_id": "w1"})
    await stack.trigger("testing/waited-for-test", {"waiting_for_id": "w1"})
    caller = await stack.trigger("test/caller")
    sender = await stack.trigger("testing/send-test")
    doomed = await stack.trigger("testing/cancel-on-test", {"some_data_id": "c1"})
    await anyio.sleep(0.5)
    survivor = await stack.trigger("testing/cancel-on-test", {"some_data_id": "c1"})

    run = await stack.finished(three, seconds=60)  # one retry, backoff 1-2 s
    assert (run["status"], run["result"], run["attempts"]) == ("completed", "hello world e2e", 2)
    assert (await stack.finished(sleep))["result"] == "hello world"
    assert (await stack.finished(sleep_until))["result"] == "hello world"
    assert (await stack.finished(waiter))["result"] == {"fired": True, "vals": [12, "cool"]}
    assert (await stack.finished(caller))["result"] == "hello world"
    assert (await stack.finished(sender))["result"] == "sent 3"
    assert (await stack.finished(doomed))["status"] == "cancelled"
    assert (await stack.run(survivor))["status"] == "sleeping"


async def test_the_history_of_a_delivered_run_counts_what_the_app_replayed(stack: Stack) -> None:
    # The app answers each delivery with a Transition; its replay counts travel in it.
    run_id = await stack.trigger("testing/sleep-test")
    run = await stack.finished(run_id)
    history = [(a["number"], a["outcome"], a["replayed"], a["executed"]) for a in run["history"]]
    # first-step ran, then the sleep; the resumed attempt replayed both and ran the rest
    assert history == [(1, "suspended", 0, 1), (1, "completed", 2, 1)]
    assert all(a["owner"] for a in run["history"])
    second = next(s for s in run["steps"] if s["name"] == "second-step")
    assert (second["attempt"], second["started_at"] is not None) == (1, True)
    assert second["duration"] is not None
