"""The benchmark modes in bench/ still run: each on its smallest sizes (their figures are
not checked here; speed lives in bench/, not in timed tests)."""

from __future__ import annotations

from datetime import timedelta

import psycopg
import pytest

from bench.bulk_runs import QUEUES, load_runs
from slayq.store.postgres import PostgresStore
from slayq.store.protocol import QueueLimit

pytestmark = pytest.mark.anyio


async def test_bulk_runs_loads_runs_the_store_reads_and_claims(pg_url: str) -> None:
    written = await load_runs(pg_url, finished=400, sleeping=30, queued=5)
    assert written["runs"] == 435
    async with await psycopg.AsyncConnection.connect(pg_url) as conn:
        cursor = await conn.execute(
            "select status, count(*) from slayq.runs group by status order by status"
        )
        by_status: dict[str, int] = dict(await cursor.fetchall())
        cursor = await conn.execute(
            "select id::text from slayq.runs where status = 'failed' order by id limit 1"
        )
        failed = await cursor.fetchone()
    assert by_status == {
        "cancelled": 12,
        "completed": 360,
        "failed": 28,
        "queued": 5,
        "sleeping": 30,
    }
    assert failed is not None
    async with PostgresStore(pg_url) as store:
        run = await store.get_run(failed[0])
        assert [(a.number, a.outcome) for a in run.history] == [
            (1, "retrying"),
            (2, "retrying"),
            (3, "failed"),
        ]
        # Only the queued runs are due: finished ones are done, sleeping ones due later.
        claims = await store.claim(
            queues=[QueueLimit(names=QUEUES, concurrency=100)],
            limit=100,
            lease_for=timedelta(minutes=1),
            owner="test",
        )
    assert len(claims) == 5
