"""An in-process worker for integration tests: run functions on a store, wait for runs."""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from datetime import timedelta
from typing import Any

import anyio

import slayq
from slayq.client import Client
from slayq.model import RunId, RunInfo
from slayq.runtime.retry import RetryPolicy
from slayq.store.protocol import Store
from slayq.worker import Worker

FAST_RETRY = RetryPolicy(base=timedelta(milliseconds=100), cap=timedelta(seconds=1))


@asynccontextmanager
async def running(
    store: Store, functions: Sequence[slayq.Function], **options: Any
) -> AsyncIterator[Client]:
    """A client of ``functions`` on ``store`` with a worker running them (fast retries)."""
    client = Client(list(functions), store=store)
    await client.open()
    worker = Worker(client, retry_policy=FAST_RETRY, **options)
    try:
        async with anyio.create_task_group() as group:
            group.start_soon(worker.run)
            await worker.started.wait()
            yield client
            worker.stop()
    finally:
        await client.aclose()


async def finished(client: Client, run_id: RunId | None, seconds: float = 20) -> RunInfo:
    """The run once it finished; fails after ``seconds``."""
    assert run_id is not None
    with anyio.fail_after(seconds):
        while True:
            run = await client.get_run(run_id)
            if run.status in ("completed", "failed", "cancelled"):
                return run
            await anyio.sleep(0.02)
