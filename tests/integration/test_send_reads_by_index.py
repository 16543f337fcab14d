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


async def test_a_send_reads_rules_and_waits_by_index_with_plans_made_on_empty_tables(
    pg_url: str,
) -> None:
    """A send asks whether anything cancels or waits on its event's name. A connection
    keeps a statement's plan once made (psycopg prepares it on its fifth run), and a
    plan made while ``cancel_rules`` was empty scanned it whole: once the table had grown
    (and until autovacuum analyzed it), every send read every cancel rule of every run
    (50,000 rows a send here)."""
    async with PostgresStore(pg_url) as store:
        await store.send_events([starting(new_run("scan/first"))])
    async with await psycopg.AsyncConnection.connect(pg_url, autocommit=True) as conn:
        await conn.execute("set search_path to slayq")
        for table in ("cancel_rules", "pending"):
            await conn.execute(f"alter table {table} set (autovacuum_enabled = off)")
        for n in range(20):  # planned while both tables are empty, then kept
            ingest = Ingest([starting(new_run("scan/probe", {"n": n}))], now=None, channel="s")
            assert await ingest.try_quiet(conn)
        await conn.execute(
            "insert into cancel_rules (run_id, event, field, value) "
            "select (select id from runs limit 1), 'other/' || g, 'f', to_jsonb(g) "
            "from generate_series(1, 50000) as g"
        )
        await conn.execute(
            "insert into pending (run_id, name, pos, kind, event, spec) "
            "select (select id from runs limit 1), 'wait-' || g, g, 'wait', 'other/' || g, "
            "'{}'::json from generate_series(1, 50000) as g"
        )
        async with conn.transaction():
            ingest = Ingest([starting(new_run("scan/probe", {"n": 0}))], now=None, channel="s")
            assert await ingest.try_quiet(conn)
            cursor = await conn.execute(
                "select relname, seq_scan from pg_stat_xact_user_tables "
                "where relname in ('cancel_rules', 'pending') order by relname"
            )
            scans: dict[str, int] = dict(await cursor.fetchall())
    assert scans == {"cancel_rules": 0, "pending": 0}
