"""A worker process's telemetry: ``/metrics`` on ``--metrics-port`` and JSON log lines."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import anyio
import pytest

from slayq.client import Client
from slayq.model import RunId, RunInfo
from slayq.store.postgres import PostgresStore
from tests.integration.metrics_scrape import Samples, settled, value
from tests.integration.servers import REPO, free_port, stop, wait_until_up
from tests.integration.telemetry_app import fail, nap, ok, parked

pytestmark = pytest.mark.anyio


async def finished(client: Client, run_id: RunId | None) -> RunInfo:
    assert run_id is not None
    with anyio.fail_after(30):
        while True:
            run = await client.get_run(run_id)
            if run.status in ("completed", "failed", "cancelled"):
                return run
            await anyio.sleep(0.02)


def json_lines(path: Path) -> list[dict[str, Any]]:
    """Every line the worker wrote, each parsed as one JSON object (or the test fails)."""
    lines = [line for line in path.read_text().splitlines() if line.strip()]
    parsed = [json.loads(line) for line in lines]
    assert all(isinstance(p, dict) for p in parsed)
    return parsed


def start_worker(url: str, config: Path, port: int, output: Path) -> subprocess.Popen[bytes]:
    command = [
        sys.executable,
        "-m",
        "slayq.worker",
        "tests.integration.telemetry_app:client",
        str(config),
        "--metrics-port",
        str(port),
        "--metrics-host",
        "127.0.0.1",
        "--log-format",
        "json",
    ]
    with open(output, "ab") as sink:  # the child keeps its own copy
        return subprocess.Popen(
            command,
            cwd=REPO,
            env={**os.environ, "SLAY_Q_DATABASE_URL": url},
            stdout=sink,
            stderr=subprocess.STDOUT,
        )


async def test_worker_metrics_move_with_the_runs_and_logs_are_json(
    pg_url: str, tmp_path: Path
) -> None:
    config = tmp_path / "slay-config.json"
    config.write_text('{"queues": {"general": {"concurrency": 4}}}')
    client = Client([ok, fail, nap, parked], store=PostgresStore(pg_url))
    port = free_port()
    output = tmp_path / "worker.out"
    async with client:
        # Due in a queue the worker does not serve: the queue gauges show them.
        await client.send_events([("tel/parked", {}), ("tel/parked", {})])
        worker = start_worker(pg_url, config, port, output)
        url = f"http://127.0.0.1:{port}/metrics"
        try:
            wait_until_up(url, worker)
            before = await settled(url, lambda s: value(s, "slayq_queue_due", queue="parked") == 2)
            ok_ids = [await client.send_event("tel/ok") for _ in range(3)]
            fail_id = await client.send_event("tel/fail")
            nap_id = await client.send_event("tel/nap")
            for run_id in ok_ids:
                assert (await finished(client, run_id)).status == "completed"
            assert (await finished(client, fail_id)).status == "failed"
            assert (await finished(client, nap_id)).status == "completed"

            def moved(name: str, after: Samples, **labels: str) -> float:
                return value(after, name, **labels) - value(before, name, **labels)

            after = await settled(
                url,
                lambda s: value(s, "slayq_runs_finished_total", event="tel/nap", queue="general",
                                status="completed") == 1
                and value(s, "slayq_runs_in_flight") == 0,
            )  # fmt: skip
            general = {"queue": "general"}
            assert moved("slayq_runs_started_total", after, event="tel/ok", **general) == 3
            assert moved("slayq_runs_started_total", after, event="tel/fail", **general) == 1
            # The nap run is claimed twice (before and after its sleep): started once.
            assert moved("slayq_runs_started_total", after, event="tel/nap", **general) == 1
            finished_ok = moved(
                "slayq_runs_finished_total", after, event="tel/ok", status="completed", **general
            )
            assert finished_ok == 3
            assert (
                moved("slayq_runs_finished_total", after, event="tel/fail", status="failed", **general)
                == 1
            )  # fmt: skip
            assert moved("slayq_attempts_failed_total", after, event="tel/fail", **general) == 1
            assert moved("slayq_attempts_failed_total", after, event="tel/ok", **general) == 0
            assert moved("slayq_steps_executed_total", after, event="tel/ok", kind="run") == 6
            assert moved("slayq_steps_executed_total", after, event="tel/nap", kind="sleep") == 1
            assert moved("slayq_steps_executed_total", after, event="tel/nap", kind="run") == 1
            # One observation per handler run, under the run's function.
            assert moved("slayq_step_duration_seconds_count", after, event="tel/ok") == 6
            assert moved("slayq_step_duration_seconds_count", after, event="tel/fail") == 1
            # Claims: 3 ok + 1 fail + 2 for the nap.
            assert moved("slayq_run_schedule_to_start_seconds_count", after, **general) == 6
            assert value(after, "slayq_runs_in_flight") == 0
            assert value(after, "slayq_queue_due", queue="parked") == 2
            assert not any(name == "run_id" for (_, labels) in after for name, _ in labels)
        finally:
            stop(worker)

    records = json_lines(output)
    assert any(
        r["logger"] == "slayq.worker" and r["message"].startswith("worker ") for r in records
    )
    (failure,) = [r for r in records if r.get("error_type") == "RuntimeError"]
    assert failure["level"] == "WARNING"
    assert failure["run_id"] == fail_id
    assert (failure["event"], failure["step"], failure["attempt"]) == ("tel/fail", "boom", 1)
    hellos = [r for r in records if r["message"] == "hello from the handler"]
    assert sorted(r["run_id"] for r in hellos) == sorted(str(run_id) for run_id in ok_ids)
    for record in hellos:
        assert record["logger"] == "telemetry_app"
        assert (record["step"], record["attempt"], record["event"]) == ("greet", 1, "tel/ok")
        assert record["time"].endswith("Z")
