"""A batch commit finds its runs by primary key, not by the index of running runs.

The batch commit (``COMMIT_BATCH_CTES``) fences each run by its lease: the run must be ``running`` with the
lease's token. Joined to the batch's rows, PostgreSQL planned that as a scan of
``runs_leased`` (the partial index of running runs) hashed against the batch: the
statistics said few runs were running, and the planner guesses 100 rows for the batch.
So every commit read every running run of every process, and, as a bitmap scan cannot
mark the entries of finished runs dead, every run that ran since the last vacuum too:
30,080 entries and 1,277 heap pages, 1.4 ms of a 1.6 ms statement, after 30,000 no-op
runs in a benchmark. This makes runs run elsewhere and finished ones, takes the
statistics with few running, goes past psycopg's prepare threshold, and counts the index
entries a batch commit of ten runs read (its backend's statistics, flushed on demand).
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import UTC, datetime
from typing import Any

import psycopg
import pytest

from slayq.model import Completed, PendingStep, StepRecord, Suspend, Transition
from slayq.store.postgres import PostgresStore
from slayq.store.postgres._batch import commit_batch
from slayq.store.postgres._commit import commit
from slayq.store.postgres._tick import tick
from slayq.store.postgres.sql.leases import EXTEND
from slayq.store.protocol import ClaimRequest
from tests.contract.helpers import LEASE, new_run, plain_event, starting

pytestmark = pytest.mark.anyio

DONE = Transition(steps=[], outcome=Completed(None))
FINISHED_RUNS = 3_000
RUNNING_ELSEWHERE = 500

READ = (
    "select indexrelname, idx_tup_read from pg_stat_user_indexes"
    " where indexrelname in ('runs_leased', 'runs_pkey')"
)


async def index_reads(conn: psycopg.AsyncConnection[Any]) -> dict[str, int]:
    """Index entries read so far, counting this connection's last statements: its
    statistics are flushed when it goes idle after a forced flush was asked for."""
    await conn.execute("select pg_stat_force_next_flush()")
    await conn.execute("select pg_stat_clear_snapshot()")
    return {name: int(count) for name, count in await (await conn.execute(READ)).fetchall()}


async def finish_runs(store: PostgresStore, count: int) -> None:
    await store.send_events([starting(new_run()) for _ in range(count)])
    claims = await store.claim(queues=None, limit=count, lease_for=LEASE, owner="w")
    assert len(claims) == count
    batch = await store.commit_batch([(c.lease, DONE) for c in claims], claims=[])
    assert batch.errors == [None] * count


@asynccontextmanager
async def runs_finished_since_vacuum(
    pg_url: str,
) -> AsyncIterator[tuple[PostgresStore, psycopg.AsyncConnection[Any]]]:
    """A store whose runs table holds ``FINISHED_RUNS`` runs finished since the last
    vacuum (autovacuum off), and a connection of the test's own on its schema."""
    async with (
        PostgresStore(pg_url) as store,
        await psycopg.AsyncConnection.connect(pg_url, autocommit=True) as conn,
    ):
        await conn.execute("set search_path to slayq")
        await conn.execute("alter table runs set (autovacuum_enabled = off)")
        for _ in range(FINISHED_RUNS // 1000):
            await finish_runs(store, 1000)
        yield store, conn


async def commit_and_count_reads(
    store: PostgresStore, conn: psycopg.AsyncConnection[Any]
) -> dict[str, int]:
    """Commit ten running runs in one batch on ``conn``; the index entries it read."""
    await store.send_events([starting(new_run()) for _ in range(10)])
    claims = await store.claim(queues=None, limit=10, lease_for=LEASE, owner="w")
    assert len(claims) == 10
    before = await index_reads(conn)
    done = await commit_batch(
        conn, [(c.lease, DONE) for c in claims], [], now=None, channel="slayq_runs"
    )
    after = await index_reads(conn)
    assert done.errors == [None] * 10
    return {name: after[name] - before[name] for name in after}


async def test_a_batch_commit_reads_no_other_run_of_the_index_of_running_runs(
    pg_url: str,
) -> None:
    async with runs_finished_since_vacuum(pg_url) as (store, conn):
        await conn.execute("analyze runs")  # what autovacuum would see: nothing running
        await store.send_events([starting(new_run()) for _ in range(RUNNING_ELSEWHERE)])
        elsewhere = await store.claim(
            queues=None, limit=RUNNING_ELSEWHERE, lease_for=LEASE, owner="elsewhere"
        )
        assert len(elsewhere) == RUNNING_ELSEWHERE
        for _ in range(7):  # past psycopg's prepare threshold: the plan kept
            reads = await commit_and_count_reads(store, conn)
        assert reads["runs_leased"] == 0, reads
        assert reads["runs_pkey"] >= 10, reads


async def test_a_claim_reads_no_entry_of_runs_that_finished_once_their_lease_time_passed(
    pg_url: str,
) -> None:
    """The claim's takeover of expired leases reads ``runs_leased`` by lease expiry. Each
    run finished since the last vacuum left an entry there, whose time passes with the
    lease's: planned as a bitmap scan (by statistics taken while runs ran), every claim
    read all of them, as a bitmap scan cannot mark them dead (an index scan does, once);
    3,500 entries per claim here, and claims slowed until the next vacuum."""
    async with runs_finished_since_vacuum(pg_url) as (store, conn):
        # Statistics taken while some ran, as a busy queue's are; then they finish too.
        await store.send_events([starting(new_run()) for _ in range(RUNNING_ELSEWHERE)])
        elsewhere = await store.claim(
            queues=None, limit=RUNNING_ELSEWHERE, lease_for=LEASE, owner="elsewhere"
        )
        await conn.execute("analyze runs")
        await store.commit_batch([(c.lease, DONE) for c in elsewhere], claims=[])
        later = datetime.now(UTC) + 2 * LEASE  # every lease taken so far has run out
        request = ClaimRequest(None, 10, LEASE, "w")
        reads = []
        for _ in range(7):  # past psycopg's prepare threshold: the plan kept
            await store.send_events([starting(new_run()) for _ in range(10)])
            before = await index_reads(conn)
            ticked = await tick(conn, None, [request], now=later, channel="slayq_runs")
            after = await index_reads(conn)
            reads.append(after["runs_leased"] - before["runs_leased"])
            claims = ticked.claimed[0]
            assert len(claims) == 10
            await store.commit_batch([(c.lease, DONE) for c in claims], claims=[])
        # The first claim may read them (and mark them dead); none after it does.
        assert reads[1:] == [0] * 6, reads


async def test_a_heartbeat_reads_no_other_run_of_the_index_of_running_runs(
    pg_url: str,
) -> None:
    """Extending leases is fenced as a commit is: its runs by key, not every running run
    of every process (each process heartbeats every few seconds)."""
    async with runs_finished_since_vacuum(pg_url) as (store, conn):
        await conn.execute("analyze runs")
        await store.send_events([starting(new_run()) for _ in range(RUNNING_ELSEWHERE + 10)])
        running = await store.claim(
            queues=None, limit=RUNNING_ELSEWHERE + 10, lease_for=LEASE, owner="elsewhere"
        )
        ours = [claim.lease for claim in running[:10]]
        for _ in range(7):  # past psycopg's prepare threshold: the plan kept
            before = await index_reads(conn)
            cursor = await conn.execute(
                EXTEND,
                {
                    "now": None,
                    "lease_for": LEASE,
                    "ids": [lease.run_id for lease in ours],
                    "tokens": [lease.token for lease in ours],
                },
            )
            after = await index_reads(conn)
            assert len(await cursor.fetchall()) == 10
        assert after["runs_leased"] - before["runs_leased"] == 0


@pytest.mark.parametrize(
    "transition",
    [
        Transition(steps=[], outcome=Completed(None), sent=[plain_event("done", {})]),
        Transition(
            steps=[StepRecord(name="first", kind="run", output=1)],
            outcome=Suspend([PendingStep(name="approval", kind="wait", event="approved")]),
        ),
    ],
    ids=["finish-sending-an-event", "wait-for-an-event"],
)
async def test_a_commit_of_one_run_reads_no_other_run_of_the_index_of_running_runs(
    pg_url: str, transition: Transition
) -> None:
    """The commits of one run that take the full path (events sent, waits registered, a
    caller answered) fence by ``HELD``, next to the run's id: found by key, not by a
    scan of ``runs_leased``, which statistics taken while few ran made look smaller."""
    async with runs_finished_since_vacuum(pg_url) as (store, conn):
        await conn.execute("analyze runs")
        await store.send_events([starting(new_run()) for _ in range(RUNNING_ELSEWHERE + 7)])
        running = await store.claim(
            queues=None, limit=RUNNING_ELSEWHERE + 7, lease_for=LEASE, owner="elsewhere"
        )
        for claim in running[:7]:  # past psycopg's prepare threshold: the plan kept
            before = await index_reads(conn)
            await commit(conn, claim.lease, transition, now=None, channel="slayq_runs")
            after = await index_reads(conn)
        assert after["runs_leased"] - before["runs_leased"] == 0
