"""The server's ``/metrics``, scraped over its real port while runs are delivered."""

from __future__ import annotations

import json
from pathlib import Path

import httpx
import pytest

from examples.app.functions import test_callee
from slayq.client import Client
from slayq.store.postgres import PostgresStore
from tests.integration.metrics_scrape import Samples, scrape, settled, value
from tests.integration.servers import free_port, start_app, start_server, stop, wait_until_up

pytestmark = pytest.mark.anyio


async def test_server_metrics_count_deliveries_and_runs(pg_url: str, tmp_path: Path) -> None:
    config = tmp_path / "slay-config.json"
    config.write_text('{"queues": {"general": {"concurrency": 4}}}')
    app_port, server_port = free_port(), free_port()
    server = start_server(
        pg_url, server_port, config, tmp_path / "server.out", "--log-format", "json"
    )
    app = start_app(pg_url, app_port, tmp_path / "app.out")
    metrics = f"http://127.0.0.1:{server_port}/metrics"
    try:
        wait_until_up(f"http://127.0.0.1:{server_port}/health", server)
        wait_until_up(f"http://127.0.0.1:{app_port}/runs/x", app)
        before = await scrape(metrics)
        async with httpx.AsyncClient() as http:
            for _ in range(3):
                response = await http.post(f"http://127.0.0.1:{app_port}/trigger/test/callee")
                assert response.status_code == 200, response.text
        # A run whose app is down: delivered to nothing, no attempt spent.
        nowhere = f"http://127.0.0.1:{free_port()}/api/slay-q"
        async with Client([test_callee], store=PostgresStore(pg_url), endpoint=nowhere) as dead:
            await dead.send_event("test/callee")

        labels = {"event": "test/callee"}

        def moved(samples: Samples, name: str, **more: str) -> float:
            return value(samples, name, **labels, **more) - value(before, name, **labels, **more)

        after = await settled(
            metrics,
            lambda s: (
                moved(s, "slayq_runs_finished_total", queue="general", status="completed") == 3
                and moved(s, "slayq_deliveries_total", outcome="unreachable") >= 1
            ),
        )
        assert moved(after, "slayq_deliveries_total", outcome="delivered") == 3
        assert moved(after, "slayq_runs_started_total", queue="general") == 3
        assert moved(after, "slayq_attempts_failed_total", queue="general") == 0
        # The undeliverable run spent no attempt and did not finish.
        assert moved(after, "slayq_runs_finished_total", queue="general", status="failed") == 0
        assert (
            value(after, "slayq_run_schedule_to_start_seconds_count", queue="general")
            - value(before, "slayq_run_schedule_to_start_seconds_count", queue="general")
            >= 4
        )
    finally:
        stop(app, server)
    # Every line the server wrote (its own and uvicorn's) is one JSON object.
    lines = (tmp_path / "server.out").read_text().splitlines()
    records = [json.loads(line) for line in lines if line.strip()]
    assert any(r["logger"] == "slayq.server" and "serving queues" in r["message"] for r in records)
    assert any(r["logger"].startswith("uvicorn") for r in records)
    undelivered = [r for r in records if r["message"].startswith("could not deliver run")]
    assert undelivered and all(r["event"] == "test/callee" for r in undelivered)
