"""A batch commit is planned once per connection, not on every tick.

psycopg prepares ``COMMIT_BATCH`` on its fifth execution; PostgreSQL then plans each
execution afresh (a *custom* plan) while that looks cheaper than its one generic plan,
and with the batch's parameters (whether the tick also claims every queue, which queues
it claims) a custom plan always looks a little cheaper. Planning the statement took
~450 µs a tick, more than running it: store ticks of 10 runs took 133 µs of PostgreSQL
CPU per run planned each time, 86 µs planned once. The statement is written to be
right for any batch (its rows are JSON documents), so the tick forces a generic plan.
"""

from __future__ import annotations

from typing import Any

import psycopg
import pytest

from slayq.model import Completed, Continue, StepRecord, Transition
from slayq.store.postgres import PostgresStore
from slayq.store.postgres._batch import commit_batch
from slayq.store.protocol import ClaimRequest
from tests.contract.helpers import LEASE, new_run, starting

pytestmark = pytest.mark.anyio

DONE = Transition(steps=[], outcome=Completed(None))
PLANS = (
    "select generic_plans, custom_plans from pg_prepared_statements"
    " where statement like 'with b as (select * from json_to_recordset(%'"
)


async def test_a_batch_commit_is_planned_once_past_the_prepare_threshold(pg_url: str) -> None:
    async with (
        PostgresStore(pg_url) as store,
        await psycopg.AsyncConnection.connect(pg_url, autocommit=True) as conn,
    ):
        await conn.execute("set search_path to slayq")
        claim = ClaimRequest(None, 10, LEASE, "w")
        for _ in range(10):
            await store.send_events([starting(new_run()) for _ in range(10)])
            claims = await store.claim(queues=None, limit=10, lease_for=LEASE, owner="w")
            done: Any = await commit_batch(
                conn, [(c.lease, DONE) for c in claims], [claim], now=None, channel="slayq_runs"
            )
            assert done.errors == [None] * 10
        generic, custom = await (await conn.execute(PLANS)).fetchone() or (0, 0)
        # Prepared past psycopg's threshold: every execution since used the generic plan.
        assert generic >= 4
        assert custom == 0


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
