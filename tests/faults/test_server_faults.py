"""The server and an app as real processes on loopback, with faults injected.

The app is ``tests.faults.app:app``: its handlers log each start and check the store,
so a step that ran again after it was committed would show.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

import anyio
import anyio.lowlevel
import pytest

import slayq
from slayq.client import Client
from slayq.store.postgres import PostgresStore
from tests.faults.app import solo, three_steps
from tests.faults.processes import all_finished, kill_9, read_log, send_jobs, wait_for, write_config
from tests.integration.servers import SECRET, free_port, spawn, start_server, stop, wait_until_up

pytestmark = pytest.mark.anyio


def start_fault_app(url: str, port: int, log: Path, **env: str):  # type: ignore[no-untyped-def]
    return spawn(
        [
            sys.executable,
            "-m",
            "uvicorn",
            "tests.faults.app:app",
            "--port",
            str(port),
            "--host",
            "127.0.0.1",
            "--log-level",
            "warning",
        ],
        {
            "SLAY_Q_DATABASE_URL": url,
            "SLAY_Q_SECRET": SECRET,
            "FAULT_LOG": str(log),
            "APP_URL": f"http://127.0.0.1:{port}",
            **env,
        },
        log.with_suffix(".app.out"),
    )


def app_client(url: str, port: int) -> Client:
    return Client(
        [three_steps, solo],
        store=PostgresStore(url),
        endpoint=f"http://127.0.0.1:{port}/api/slay-q",
    )


async def test_kill_9_of_the_server_mid_delivery_reruns_no_committed_step(
    pg_url: str, tmp_path: Path
) -> None:
    config = write_config(tmp_path / "slay-config.json", general=10, solo=1)
    log = tmp_path / "handlers.log"
    app_port, server_port = free_port(), free_port()
    app = start_fault_app(pg_url, app_port, log)
    server = start_server(
        pg_url, server_port, config, tmp_path / "server.out", "--delivery-timeout", "10s"
    )
    restarted = None
    try:
        wait_until_up(f"http://127.0.0.1:{server_port}/health", server)
        async with app_client(pg_url, app_port) as client:
            run_ids = await send_jobs(client, 30, step_seconds=0.2)
            await wait_for(lambda: _started(log, 5), seconds=30, what="deliveries to start")
            kill_9(server)
            restarted = start_server(pg_url, server_port, config, tmp_path / "server2.out")
            await wait_for(lambda: all_finished(client, run_ids), seconds=120, what="all runs")
            runs = [await client.get_run(r) for r in run_ids]
    finally:
        stop(app, server, *([restarted] if restarted else []))
    for run in runs:
        n = run.data["n"]
        assert run.result == [f"one:{n}", f"two:{n}", f"three:{n}"]
    assert [e for e in read_log(log) if e.committed_already] == []


async def test_an_app_that_is_down_for_a_while_then_back_loses_nothing(
    pg_url: str, tmp_path: Path
) -> None:
    config = write_config(tmp_path / "slay-config.json", general=10, solo=1)
    log = tmp_path / "handlers.log"
    app_port, server_port = free_port(), free_port()
    server = start_server(pg_url, server_port, config, tmp_path / "server.out")
    app = None
    try:
        wait_until_up(f"http://127.0.0.1:{server_port}/health", server)
        async with app_client(pg_url, app_port) as client:
            run_ids = await send_jobs(client, 10, step_seconds=0.0)

            async def errors_recorded() -> bool:
                runs = [await client.get_run(r) for r in run_ids]
                return all(r.error is not None and r.error.type == "DeliveryError" for r in runs)

            await wait_for(errors_recorded, seconds=30, what="delivery errors on every run")
            assert {(await client.get_run(r)).status for r in run_ids} == {"queued"}
            app = start_fault_app(pg_url, app_port, log)
            await wait_for(lambda: all_finished(client, run_ids), seconds=90, what="all runs")
    finally:
        stop(server, *([app] if app else []))
    assert len([e for e in read_log(log) if e.phase == "start"]) == 30


async def test_an_app_answering_500_then_200_finishes_every_run(
    pg_url: str, tmp_path: Path
) -> None:
    config = write_config(tmp_path / "slay-config.json", general=10, solo=1)
    log = tmp_path / "handlers.log"
    app_port, server_port = free_port(), free_port()
    app = start_fault_app(pg_url, app_port, log, FAIL_FIRST="8")
    server = start_server(pg_url, server_port, config, tmp_path / "server.out")
    try:
        wait_until_up(f"http://127.0.0.1:{server_port}/health", server)
        async with app_client(pg_url, app_port) as client:
            run_ids = await send_jobs(client, 5, step_seconds=0.0)
            await wait_for(lambda: all_finished(client, run_ids), seconds=90, what="all runs")
            runs = [await client.get_run(r) for r in run_ids]
    finally:
        stop(app, server)
    # An app answering 500 ran no handler: no attempt was spent on it.
    assert [r.attempts for r in runs] == [1] * 5
    assert "Likely fix: the app failed or is deploying" in (tmp_path / "server.out").read_text()
    assert [e for e in read_log(log) if e.committed_already] == []


async def _started(log: Path, count: int) -> bool:
    await anyio.lowlevel.checkpoint()
    return len([e for e in read_log(log) if e.phase == "start"]) >= count


@slayq.function(event="faults/not-in-the-app", retries=1)
async def not_in_the_app(ctx: slayq.Context[slayq.EmptyEvent]) -> None:
    pass


async def test_a_wrong_secret_or_a_missing_function_spends_no_attempt_and_says_why(
    pg_url: str, tmp_path: Path
) -> None:
    config = write_config(tmp_path / "slay-config.json", general=10, solo=1)
    log = tmp_path / "handlers.log"
    app_port, server_port = free_port(), free_port()
    app = start_fault_app(pg_url, app_port, log, SLAY_Q_SECRET="not-the-servers-secret-0123")
    server = start_server(pg_url, server_port, config, tmp_path / "server.out")
    fixed = None
    try:
        wait_until_up(f"http://127.0.0.1:{server_port}/health", server)
        client = Client(
            [three_steps, solo, not_in_the_app],
            store=PostgresStore(pg_url),
            endpoint=f"http://127.0.0.1:{app_port}/api/slay-q",
        )
        async with client:
            run_ids = await send_jobs(client, 3, step_seconds=0.0)
            missing = await client.send_event("faults/not-in-the-app")
            assert missing is not None

            async def refused_three_times() -> bool:
                output = (tmp_path / "server.out").read_text()
                return output.count("wrong SLAY_Q_SECRET?") >= 8

            await wait_for(refused_three_times, seconds=60, what="two refusals of each run")
            for run_id in run_ids:
                run = await client.get_run(run_id)
                # Between two refused deliveries a run waits (queued); it may be being
                # delivered again right now (running). Either way no attempt was spent.
                assert run.status in ("queued", "running")
                assert run.attempts == 1
                assert run.error is not None
                assert "401" in run.error.message
                assert "wrong SLAY_Q_SECRET?" in run.error.message
            stop(app)
            fixed = start_fault_app(pg_url, app_port, log)
            started = time.monotonic()
            await wait_for(lambda: all_finished(client, run_ids), seconds=90, what="all runs")
            assert time.monotonic() - started < 75  # the backoff is capped at a minute
            for run_id in run_ids:
                assert (await client.get_run(run_id)).attempts == 1

            async def missing_reported() -> bool:
                run = await client.get_run(missing)
                return run.error is not None and "404" in run.error.message

            await wait_for(missing_reported, seconds=60, what="the 404 on the run")
            run = await client.get_run(missing)
            assert run.status in ("queued", "running")  # waiting, or being delivered again
            assert run.attempts == 1  # retries=1: a spent attempt would have failed it
            assert run.error is not None
            assert "function not registered in the app?" in run.error.message
    finally:
        stop(server, app, *([fixed] if fixed else []))
    output = (tmp_path / "server.out").read_text()
    assert "WARNING slayq.server.delivery: could not deliver run" in output
    assert "function not registered in the app?" in output
