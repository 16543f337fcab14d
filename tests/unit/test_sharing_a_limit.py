"""A queue's concurrency is cluster-wide. A worker that holds all of it refills the slots
its commits free in the same batch, so once a second it leaves them for a moment to the
other workers serving the queue: a second worker gets runs too instead of starving."""

from __future__ import annotations

from datetime import timedelta

import anyio
import pytest

import slayq
from slayq import step
from slayq.client import Client
from slayq.model import RunId
from slayq.store.memory import MemoryStore
from slayq.store.protocol import QueueLimit
from slayq.worker import Worker

pytestmark = pytest.mark.anyio

LIMIT = [QueueLimit(names=["general"], concurrency=2)]


async def all_completed(client: Client, ids: list[RunId]) -> None:
    for run_id in ids:
        while True:
            if (await client.get_run(run_id)).status == "completed":
                break
            await anyio.sleep(0.05)


async def test_a_second_worker_gets_runs_of_a_limit_the_first_holds() -> None:
    @slayq.function(event="t/work")
    async def work(ctx: slayq.Context[slayq.EmptyEvent]) -> slayq.Workflow:
        yield step.run("nap", anyio.sleep, 0.02)

    client = Client([work], store=MemoryStore())
    ids = [await client.send_event("t/work") for _ in range(160)]
    first = Worker(client, queues=LIMIT, owner="first", poll_interval=timedelta(seconds=1))
    second = Worker(client, queues=LIMIT, owner="second", poll_interval=timedelta(milliseconds=10))
    with anyio.fail_after(30):
        async with anyio.create_task_group() as group:
            group.start_soon(first.run)
            await first.started.wait()
            await anyio.sleep(0.1)  # the first holds both slots, refilling them as runs end
            group.start_soon(second.run)
            await all_completed(client, [i for i in ids if i])
            first.stop()
            second.stop()
    owners = {(await client.get_run(i)).history[0].owner for i in ids if i}
    assert owners == {"first", "second"}


async def test_a_worker_leaving_its_slots_to_others_waits_without_spinning() -> None:
    """While a group's freed slots are left to others (SHARE_GRACE), the ticker sleeps
    until they are its own again: it used to wake at once, again and again, for all of it
    (some 900 times per share in a benchmark)."""

    @slayq.function(event="t/quick")
    async def quick(ctx: slayq.Context[slayq.EmptyEvent]) -> slayq.Workflow:
        yield step.run("noop", lambda: None)

    client = Client([quick], store=MemoryStore())
    ids = [await client.send_event("t/quick") for _ in range(2)]
    worker = Worker(client, queues=[QueueLimit(names=["general"], concurrency=1)])
    waits = 0
    wait_for_tick = worker._wait_for_tick

    async def counted() -> None:
        nonlocal waits
        waits += 1
        await wait_for_tick()

    worker._wait_for_tick = counted  # type: ignore[method-assign]
    with anyio.fail_after(10):
        async with anyio.create_task_group() as group:
            group.start_soon(worker.run)
            # The first run's final commit frees the one slot it holds: that tick leaves
            # it to others for SHARE_GRACE, then the second run is claimed.
            await all_completed(client, [i for i in ids if i])
            worker.stop()
    assert waits < 20
