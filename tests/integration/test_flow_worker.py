"""Flow control with a real in-process worker on PostgreSQL, on the real clock."""

from __future__ import annotations

import time
from collections import Counter

import anyio
import msgspec
import pytest

import slayq
from slayq import step
from slayq.store.postgres import PostgresStore
from tests.integration.workers import finished, running

pytestmark = pytest.mark.anyio


class Sync(msgspec.Struct):
    customer_id: int
    n: int


async def test_a_concurrency_key_holds_each_customer_to_its_limit(pg_url: str) -> None:
    in_flight: Counter[int] = Counter()
    peak: Counter[int] = Counter()
    most_at_once = 0
    done_at: dict[tuple[int, int], float] = {}

    async def work(customer: int, n: int) -> None:
        nonlocal most_at_once
        in_flight[customer] += 1
        peak[customer] = max(peak[customer], in_flight[customer])
        most_at_once = max(most_at_once, sum(in_flight.values()))
        try:
            await anyio.sleep(0.1)
        finally:
            in_flight[customer] -= 1
            done_at[(customer, n)] = time.monotonic()

    @slayq.function(
        event="sync/requested",
        schema=Sync,
        concurrency=slayq.Concurrency(limit=2, key="customer_id"),
    )
    async def sync(ctx: slayq.Context[Sync]) -> slayq.Workflow:
        yield step.run("work", work, ctx.data.customer_id, ctx.data.n)

    # Customer 1 sends a backlog first; customers 2 to 6 send one run each after it.
    events = [("sync/requested", {"customer_id": 1, "n": n}) for n in range(12)]
    events += [("sync/requested", {"customer_id": c, "n": 0}) for c in range(2, 7)]
    async with running(PostgresStore(pg_url), [sync], concurrency=10) as client:
        ids = await client.send_events(events)
        runs = [await finished(client, run_id, seconds=30) for run_id in ids]
    assert {run.status for run in runs} == {"completed"}
    assert max(peak.values()) <= 2
    assert peak[1] == 2
    assert most_at_once > 2  # the other customers ran beside customer 1's two
    backlog_done = max(at for (customer, _), at in done_at.items() if customer == 1)
    assert all(done_at[(c, 0)] < backlog_done for c in range(2, 7))
