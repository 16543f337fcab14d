"""``kill -9`` workers in the middle of step handlers while others run.

Every run must still complete, with every step's result, and no handler may start for a
step that was already committed (the handlers check the store when they start).
"""

from __future__ import annotations

import time
from collections import Counter
from pathlib import Path

import anyio
import pytest

from slayq.client import Client
from slayq.store.postgres import PostgresStore
from tests.faults.app import solo, three_steps
from tests.faults.processes import (
    all_finished,
    busy_pids,
    kill_9,
    read_log,
    send_jobs,
    start_worker,
    stop_all,
    wait_for,
    write_config,
)

pytestmark = pytest.mark.anyio


@pytest.mark.parametrize("configured", [True, False], ids=["config", "claiming-ahead"])
async def test_kill_9_mid_step_loses_nothing_and_reruns_no_committed_step(
    pg_url: str, tmp_path: Path, configured: bool
) -> None:
    """With a config file, and without one: workers then serve every queue and claim
    ahead, and each kill also takes down runs claimed but not started."""
    config = write_config(tmp_path / "slay-config.json", general=10, solo=1) if configured else None
    log = tmp_path / "handlers.log"
    workers = [start_worker(pg_url, config, log) for _ in range(3)]
    kills = 0
    try:
        async with Client([three_steps, solo], store=PostgresStore(pg_url)) as client:
            run_ids = await send_jobs(client, 120, step_seconds=0.3)
            # Four times: catch a worker inside a handler, kill -9 it, start a replacement.
            deadline = time.monotonic() + 60
            while kills < 4 and time.monotonic() < deadline:
                busy = busy_pids(log)
                victim = next((w for w in workers if w.pid in busy and w.poll() is None), None)
                if victim is None:
                    await anyio.sleep(0.05)
                    continue
                kill_9(victim)
                kills += 1
                workers.remove(victim)
                workers.append(start_worker(pg_url, config, log))
                await anyio.sleep(0.5)
            await wait_for(lambda: all_finished(client, run_ids), seconds=120, what="all runs")
            runs = [await client.get_run(r) for r in run_ids]
    finally:
        stop_all(workers)

    assert kills == 4, "the test did not manage to kill workers mid-step"
    assert [r.status for r in runs] == ["completed"] * 120
    for run in runs:
        n = run.data["n"]
        assert run.result == [f"one:{n}", f"two:{n}", f"three:{n}"]
    entries = read_log(log)
    starts = [e for e in entries if e.phase == "start"]
    assert [e for e in starts if e.committed_already] == []
    # Each of the 360 steps started at least once; the extra starts are the handlers that
    # were cut off by a kill before their commit.
    per_step = Counter((e.run_id, e.step) for e in starts)
    assert len(per_step) == 360
    interrupted = sum(per_step.values()) - 360
    assert interrupted >= 1
    print(f"\n{kills} kills, {interrupted} handler starts re-run after a kill, 0 after commit")


async def test_a_cluster_wide_limit_of_one_holds_across_two_workers(
    pg_url: str, tmp_path: Path
) -> None:
    config = write_config(tmp_path / "slay-config.json", general=10, solo=1)
    log = tmp_path / "handlers.log"
    workers = [start_worker(pg_url, config, log) for _ in range(2)]
    try:
        async with Client([three_steps, solo], store=PostgresStore(pg_url)) as client:
            run_ids = await send_jobs(client, 30, step_seconds=0.05, event="faults/solo")
            await wait_for(lambda: all_finished(client, run_ids), seconds=60, what="all runs")
    finally:
        stop_all(workers)
    entries = sorted(read_log(log), key=lambda e: (e.at, e.phase != "end"))
    running, most, pids = 0, 0, set()
    for entry in entries:
        running += 1 if entry.phase == "start" else -1
        most = max(most, running)
        pids.add(entry.pid)
    assert most == 1
    assert len([e for e in entries if e.phase == "start"]) == 30
    assert len(pids) == 2, "both workers should have taken part"


async def test_sigterm_drains_in_flight_runs(pg_url: str, tmp_path: Path) -> None:
    config = write_config(tmp_path / "slay-config.json", general=10, solo=1)
    log = tmp_path / "handlers.log"
    worker = start_worker(pg_url, config, log)
    try:
        async with Client([three_steps, solo], store=PostgresStore(pg_url)) as client:
            run_ids = await send_jobs(client, 5, step_seconds=0.5)
            await wait_for(lambda: _started(log, 5), seconds=30, what="the first steps to start")
            began = time.monotonic()
            stop_all([worker])
            assert worker.returncode == 0
            assert time.monotonic() - began < 6  # within --grace 5s
            statuses = {(await client.get_run(r)).status for r in run_ids}
            # Runs not finished within the grace period were handed back (queued), not stuck.
            assert statuses <= {"completed", "queued"}
            replacement = start_worker(pg_url, config, log)
            try:
                await wait_for(lambda: all_finished(client, run_ids), seconds=60, what="runs")
            finally:
                stop_all([replacement])
    finally:
        stop_all([worker])
    assert [e for e in read_log(log) if e.committed_already] == []


async def _started(log: Path, count: int) -> bool:
    return len([e for e in read_log(log) if e.phase == "start"]) >= count
