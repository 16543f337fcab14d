"""A send reads the runs table by index, whatever its size.

``INSERT_RUNS`` answers an idempotency key that a run already holds by joining ``runs``
on (event, key). The planner, guessing 100 rows from ``json_to_recordset``, chose a hash
join over a sequential scan of ``runs`` once the table had some thousands of rows: every
send then read the whole table, so a send's cost grew with every run ever kept. This
counts the scans of ``runs`` one send makes, in its own transaction
(``pg_stat_xact_user_tables``), on a table of 20,000 runs.
"""

from __future__ import annotations

from typing import Any

import psycopg
import pytest

from slayq.store.postgres import PostgresStore
from slayq.store.postgres._ingest import Ingest
from tests.contract.helpers import new_run, starting

pytestmark = pytest.mark.anyio

RUNS = 10_000


async def sequential_scans_of_runs(conn: psycopg.AsyncConnection[Any]) -> int:
    async with conn.transaction():
        ingest = Ingest([starting(new_run("scan/probe", {"n": 1}))], now=None, channel="slayq")
        assert await ingest.try_quiet(conn)
        cursor = await conn.execute(
            "select seq_scan from pg_stat_xact_user_tables where relname = 'runs'"
        )
        row = await cursor.fetchone()
    assert row is not None
    return int(row[0])


async def test_a_send_on_a_big_table_scans_no_runs(pg_url: str) -> None:
    async with PostgresStore(pg_url) as store:
        for _ in range(RUNS // 1000):
            await store.send_events([starting(new_run(queue="filler")) for _ in range(1000)])
    async with await psycopg.AsyncConnection.connect(pg_url, autocommit=True) as conn:
        await conn.execute("set search_path to slayq")
        assert await sequential_scans_of_runs(conn) == 0


async def test_a_flow_controlled_keyed_send_scans_no_runs(pg_url: str) -> None:
    """Admission looks for runs that hold the batch's per-send keys (``KEYED_RUNS``)."""
    from datetime import timedelta

    import msgspec

    from slayq.model import Flow, FlowOnce
    from slayq.store.postgres._admit import admit

    async with PostgresStore(pg_url) as store:
        for _ in range(RUNS // 1000):
            await store.send_events([starting(new_run(queue="filler")) for _ in range(1000)])
    once = Flow(idempotency=FlowOnce(bucket="scan/probe order=1", ttl=timedelta(hours=1)))
    run = msgspec.structs.replace(new_run("scan/probe", key="k-1"), flow=once)
    async with await psycopg.AsyncConnection.connect(pg_url, autocommit=True) as conn:
        await conn.execute("set search_path to slayq")
        async with conn.pipeline() as pipeline, conn.transaction():
            await admit(conn, pipeline, [starting(run)], now=None, channel="slayq")
            cursor = await conn.execute(
                "select seq_scan from pg_stat_xact_user_tables where relname = 'runs'"
            )
        row = await cursor.fetchone()
    assert row is not None and row[0] == 0
