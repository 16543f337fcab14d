"""A claim reads steps, pending steps and runs by index, whatever its plans were made on.

psycopg prepares a statement on its fifth execution on a connection, and PostgreSQL may
then keep one generic plan for it, made from the table statistics of that moment: on a
new database, empty tables. The claim's memo read (``MEMOS``) kept a sequential scan of
``steps`` so made, and every claim of a resumed run read every step ever kept, until
autovacuum analyzed the table (a quarter of the database's CPU in a 20,000-run
benchmark). This prepares the claim's statements while the tables are small, grows them
with autovacuum off, then counts the sequential scans one claim of a resumed run makes
(``pg_stat_xact_user_tables``, in the claim's own transaction).
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import psycopg
import pytest

from slayq.model import PendingStep, StepRecord, Suspend, Transition
from slayq.store.postgres import PostgresStore
from slayq.store.postgres._tick import tick
from slayq.store.protocol import ClaimRequest, QueueLimit
from tests.contract.helpers import LEASE, new_run, starting

pytestmark = pytest.mark.anyio

PROBE = ClaimRequest([QueueLimit(["probe"], 100)], 10, LEASE, "probe:1")
FILLER_RUNS = 2_000
STEPS_EACH = 15


async def resume_runs(store: PostgresStore, count: int) -> None:
    """Runs of queue ``probe`` due again with a finished step and a sleep that has ended:
    their claim loads a memo and expires a pending step."""
    await store.send_events([starting(new_run(queue="probe")) for _ in range(count)])
    claims = await store.claim(queues=PROBE.queues, limit=count, lease_for=LEASE, owner="w")
    assert len(claims) == count
    nap = PendingStep(name="nap", kind="sleep", delay=timedelta(0))
    first = StepRecord(name="first", kind="run", output=1)
    for claim in claims:
        await store.commit(claim.lease, Transition(steps=[first], outcome=Suspend([nap])))


SCANS = (
    "select relname, seq_scan from pg_stat_xact_user_tables"
    " where relname in ('runs', 'steps', 'pending')"
)


async def claim_and_count_scans(
    conn: psycopg.AsyncConnection[Any],
) -> tuple[list[list[str]], dict[str, int]]:
    """The claim's memos, and the sequential scans it made of each table: the counts
    are this backend's not yet reported, which may include earlier transactions'."""
    async with conn.pipeline(), conn.transaction():
        before = await conn.execute(SCANS)
        ticked = await tick(conn, None, [PROBE], now=None, channel="slayq")
        after = await conn.execute(SCANS)
    earlier = dict(await before.fetchall())
    scans = {name: int(count) - earlier[name] for name, count in await after.fetchall()}
    return [[step.name for step in claim.memo] for claim in ticked.claimed[0]], scans


async def test_a_claim_of_a_resumed_run_scans_no_table_after_the_tables_grew(
    pg_url: str,
) -> None:
    async with (
        PostgresStore(pg_url) as store,
        await psycopg.AsyncConnection.connect(pg_url, autocommit=True) as conn,
    ):
        await conn.execute("set search_path to slayq")
        for table in ("runs", "steps", "pending"):
            await conn.execute(f"alter table {table} set (autovacuum_enabled = off)")
        # Past psycopg's prepare threshold, while the tables are (nearly) empty.
        for _ in range(7):
            await store.send_events([starting(new_run(queue="probe")) for _ in range(10)])
            memos, _scans = await claim_and_count_scans(conn)
            assert memos == [[]] * 10

        for _ in range(FILLER_RUNS // 1000):
            await store.send_events([starting(new_run(queue="filler")) for _ in range(1000)])
        await conn.execute(
            "insert into steps (run_id, name, kind, output, finished_at, attempt)"
            " select r.id, 's' || g, 'run', '1', now(), 1"
            " from runs as r, generate_series(1, %s) as g where r.queue = 'filler'",
            [STEPS_EACH],
        )
        await conn.execute(
            "insert into pending (run_id, name, pos, kind, expires_at, spec)"
            " select id, 'nap', 1, 'sleep', now() + interval '1 day', '{}'"
            " from runs where queue = 'filler'"
        )

        await resume_runs(store, 10)
        memos, scans = await claim_and_count_scans(conn)
        assert memos == [["first", "nap"]] * 10
        assert scans == {"runs": 0, "steps": 0, "pending": 0}
