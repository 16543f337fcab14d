"""Pausing a queue stops every worker process from claiming it; resuming restarts them.

Two worker subprocesses serve the queue. Runs they held when it was paused go on to
finish; no other run starts while it is paused; after the resume both claim again.
"""

from __future__ import annotations

import time
from collections.abc import AsyncGenerator
from contextlib import aclosing
from pathlib import Path
from typing import cast

import anyio
import pytest

from slayq.client import Client
from slayq.store.postgres import PostgresStore
from tests.faults.app import solo, three_steps
from tests.faults.processes import (
    all_finished,
    read_log,
    send_jobs,
    start_worker,
    stop_all,
    wait_for,
    write_config,
)

pytestmark = pytest.mark.anyio


async def test_a_paused_queue_is_claimed_by_no_worker_until_resumed(
    pg_url: str, tmp_path: Path
) -> None:
    config = write_config(tmp_path / "slay-config.json", general=4)
    log = tmp_path / "handlers.log"
    workers = [start_worker(pg_url, config, log) for _ in range(2)]
    pids = {w.pid for w in workers}
    try:
        async with Client([three_steps, solo], store=PostgresStore(pg_url)) as client:
            run_ids = await send_jobs(client, 24, step_seconds=0.3)

            async def both_working() -> bool:
                return {e.pid for e in read_log(log)} == pids

            await wait_for(both_working, seconds=60, what="both workers to run handlers")
            assert await client.pause_queue("general", actor="test") is True
            paused_at = time.time()
            held = {r for r in run_ids if (await client.get_run(r)).status != "queued"}
            assert len(held) < len(run_ids)
            # Several poll intervals: the held runs finish, nothing else starts.
            await wait_for(lambda: all_finished(client, sorted(held)), seconds=30, what="held runs")
            await anyio.sleep(3)
            started = {e.run_id for e in read_log(log) if e.phase == "start"}
            assert started == held
            statuses = {(await client.get_run(r)).status for r in set(run_ids) - held}
            assert statuses == {"queued"}
            (general,) = await client.list_queues()
            assert (general.paused, general.due, general.running) == (True, 24 - len(held), 0)

            assert await client.resume_queue("general", actor="test") is True
            resumed_at = time.time()

            async def new_start() -> bool:
                return any(e.run_id not in held for e in read_log(log))

            await wait_for(new_start, seconds=5, what="a claim after the resume")
            first = min(e.at for e in read_log(log) if e.run_id not in held)
            await wait_for(lambda: all_finished(client, run_ids), seconds=60, what="all runs")
    finally:
        stop_all(workers)
    after = [e for e in read_log(log) if e.run_id not in held]
    assert {e.pid for e in after} == pids  # both workers claimed again
    assert min(e.at for e in after) > paused_at
    print(f"\nfirst claim {first - resumed_at:.3f}s after the resume")


async def test_resuming_notifies_the_queue_so_idle_claimers_wake_at_once(pg_url: str) -> None:
    store = PostgresStore(pg_url)
    heard: list[str] = []
    try:
        listening = cast("AsyncGenerator[str, None]", store.listen())  # an async generator
        async with aclosing(listening) as notifications:

            async def listen() -> None:
                async for queue in notifications:
                    heard.append(queue)
                    return

            with anyio.fail_after(10):
                async with anyio.create_task_group() as tasks:
                    tasks.start_soon(listen)
                    # Until the listener (connecting in its task) hears one: pausing says
                    # nothing, so every notification comes from a resume.
                    while not heard:
                        await store.pause_queue("mail", actor="test")
                        await store.resume_queue("mail", actor="test")
                        await anyio.sleep(0.1)
    finally:
        await store.aclose()
    assert heard == ["mail"]
