"""A tick's statements are planned once per connection, not on every tick.

Planned afresh on each execution (a *custom* plan), the batch commit took ~450 µs a
tick, more than running it: store ticks of 10 runs took 133 µs of PostgreSQL CPU per
run planned each time, 86 µs planned once. A statement prepared by psycopg went on
being planned afresh while that looked cheaper than its one generic plan, which with
the batch's parameters it always did. The tick function (``sql.ticking``) plans its
statements with generic plans, kept by the connection: the statements are written to
be right for any batch and any table size (the second test here, and
``test_claim_reads_by_index``, ``test_commit_reads_by_key``).
"""

from __future__ import annotations

from typing import Any

import psycopg
import pytest

from slayq.model import Completed, Continue, StepRecord, Transition
from slayq.store.postgres import PostgresStore
from slayq.store.postgres._batch import commit_batch
from slayq.store.postgres.sql.ticking import TICK_NAME
from tests.contract.helpers import LEASE, new_run, starting

pytestmark = pytest.mark.anyio

DONE = Transition(steps=[], outcome=Completed(None))
SETTINGS = (
    "select p.proconfig from pg_proc as p join pg_namespace as n on n.oid = p.pronamespace"
    " where n.nspname = 'slayq' and p.proname = %s"
)


async def test_the_tick_function_plans_generically_by_index_in_the_store_schema(
    pg_url: str,
) -> None:
    async with (
        PostgresStore(pg_url) as store,
        await psycopg.AsyncConnection.connect(pg_url, autocommit=True) as conn,
    ):
        await store.send_events([starting(new_run()) for _ in range(10)])
        claims = await store.claim(queues=None, limit=10, lease_for=LEASE, owner="w")
        batch = await store.commit_batch([(c.lease, DONE) for c in claims], claims=[])
        assert batch.errors == [None] * 10
        row = await (await conn.execute(SETTINGS, [TICK_NAME])).fetchone()
        assert row is not None
        assert sorted(row[0]) == [
            "enable_bitmapscan=off",
            "enable_seqscan=off",
            "plan_cache_mode=force_generic_plan",
            "search_path=slayq",
        ]


SCANS = "select seq_scan from pg_stat_xact_user_tables where relname = 'runs'"


async def test_a_batch_commit_planned_on_a_small_table_reads_runs_by_key_once_it_grew(
    pg_url: str,
) -> None:
    """The plan kept is made while the tables are small (a new database): it must still
    find the batch's runs by key once runs has grown, not scan it (it did, for the update
    of the runs, with its generic plan: 5,000 rows read to update 10)."""
    async with (
        PostgresStore(pg_url) as store,
        await psycopg.AsyncConnection.connect(pg_url, autocommit=True) as conn,
    ):
        await conn.execute("set search_path to slayq")
        await conn.execute("alter table runs set (autovacuum_enabled = off)")
        await store.send_events([starting(new_run()) for _ in range(10)])
        claims = await store.claim(queues=None, limit=10, lease_for=LEASE, owner="w")
        for i in range(8):  # past psycopg's prepare threshold, on a table of 10 runs
            step = StepRecord(name=f"step {i}", kind="run", output=i)
            more = Transition(steps=[step], outcome=Continue())
            done: Any = await commit_batch(
                conn, [(c.lease, more) for c in claims], [], now=None, channel="slayq_runs"
            )
            assert done.errors == [None] * 10
        for _ in range(5):
            await store.send_events([starting(new_run(queue="filler")) for _ in range(1000)])
        async with conn.transaction():
            before = await (await conn.execute(SCANS)).fetchone() or (0,)
            done = await commit_batch(
                conn, [(c.lease, DONE) for c in claims], [], now=None, channel="slayq_runs"
            )
            after = await (await conn.execute(SCANS)).fetchone() or (0,)
        assert done.errors == [None] * 10
        assert after[0] - before[0] == 0
