"""Restart PostgreSQL under load: workers reconnect and finish every run; sending while
the database is down is a clear error, never a silent drop."""

from __future__ import annotations

import time
from pathlib import Path

import anyio
import pytest

from slayq.client import Client
from slayq.errors import StoreUnavailableError
from slayq.model import RunId
from slayq.store.postgres import PostgresStore
from tests.faults.app import solo, three_steps
from tests.faults.cluster import own_cluster
from tests.faults.processes import (
    read_log,
    send_jobs,
    start_worker,
    stop_all,
    wait_for,
    write_config,
)

pytestmark = pytest.mark.anyio


async def test_workers_finish_every_run_across_a_postgres_restart(tmp_path: Path) -> None:
    config = write_config(tmp_path / "slay-config.json", general=10, solo=1)
    log = tmp_path / "handlers.log"
    with own_cluster() as cluster:
        async with Client([three_steps, solo], store=PostgresStore(cluster.url)) as client:
            workers = [start_worker(cluster.url, config, log) for _ in range(2)]
            try:
                run_ids = await send_jobs(client, 40, step_seconds=0.2)

                async def some_started() -> bool:
                    return len([e for e in read_log(log) if e.phase == "start"]) >= 10

                await wait_for(some_started, seconds=30, what="work to start")
                cluster.stop("fast")
                began = time.monotonic()
                with pytest.raises(StoreUnavailableError):
                    await client.send_event("faults/three-steps", {"n": 99})
                assert time.monotonic() - began < 30
                await anyio.sleep(2)
                cluster.start()

                async def all_completed() -> bool:
                    try:
                        statuses = [(await client.get_run(RunId(r))).status for r in run_ids]
                    except StoreUnavailableError:
                        return False
                    return all(s == "completed" for s in statuses)

                await wait_for(all_completed, seconds=120, what="every run to complete")
            finally:
                stop_all(workers)
    entries = read_log(log)
    assert [e for e in entries if e.committed_already] == []
    assert {(e.run_id, e.step) for e in entries if e.phase == "start"} == {
        (r, s) for r in run_ids for s in ("one", "two", "three")
    }
