"""The tick function: one statement and one round trip per tick, installed by the store.

A tick (a batch's commits, then the claims into the slots they freed) was a pipelined
transaction of seven statements and two syncs: the claim's rows had to come back before
the statements they call for could be sent. The tick function (``sql.ticking``) takes it
all in one call. These tests read what the client sends from libpq's protocol trace.
"""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any

import psycopg
import pytest
from psycopg import pq

from slayq.model import Completed, Transition
from slayq.store.postgres import PostgresStore, pending_migrations
from slayq.store.postgres._batch import commit_batch
from slayq.store.postgres.sql.ticking import TICK_NAME
from slayq.store.protocol import ClaimRequest, QueueLimit
from tests.contract.helpers import LEASE, new_run, starting

pytestmark = pytest.mark.anyio

DONE = Transition(steps=[], outcome=Completed(None))
GENERAL = [QueueLimit(["general"], 10)]


async def traced_messages(conn: psycopg.AsyncConnection[Any], body: Any) -> list[str]:
    """The protocol messages the client sent (``F``) while ``body`` ran, by type."""
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "trace"
        with path.open("w") as trace:
            conn.pgconn.trace(trace.fileno())
            conn.pgconn.set_trace_flags(pq.Trace.SUPPRESS_TIMESTAMPS | pq.Trace.REGRESS_MODE)
            try:
                await body()
            finally:
                conn.pgconn.untrace()
        lines = path.read_text().splitlines()
    return [line.split("\t")[2].split()[0] for line in lines if line.startswith("F\t")]


async def test_a_tick_of_ten_commits_and_a_claim_is_one_statement_and_one_round_trip(
    pg_url: str,
) -> None:
    async with (
        PostgresStore(pg_url) as store,
        await psycopg.AsyncConnection.connect(pg_url, autocommit=True) as conn,
    ):
        await conn.execute("set search_path to slayq")
        await store.send_events([starting(new_run()) for _ in range(20)])
        claims = await store.claim(queues=GENERAL, limit=10, lease_for=LEASE, owner="w")
        assert len(claims) == 10
        done: Any = None

        async def tick() -> None:
            nonlocal done
            request = ClaimRequest(GENERAL, 10, LEASE, "w")
            commits = [(c.lease, DONE) for c in claims]
            done = await commit_batch(conn, commits, [request], now=None, channel="slayq")

        sent = await traced_messages(conn, tick)
        assert done.errors == [None] * 10
        assert len(done.claimed[0]) == 10  # the other ten, into the slots freed
        assert sent.count("Sync") == 1, sent
        assert sent.count("Execute") == 1, sent


async def test_a_store_installs_its_tick_function_and_health_reports_it_missing(
    pg_url: str,
) -> None:
    """A database migrated by another version of slayq lacks this version's function:
    ``pending_migrations`` (``slayq health``) names it, and opening a store installs it."""
    async with await psycopg.AsyncConnection.connect(pg_url, autocommit=True) as conn:
        await conn.execute(f"drop function slayq.{TICK_NAME}")
        await conn.execute(f"drop type slayq.{TICK_NAME}_row")
        assert await pending_migrations(pg_url) == [TICK_NAME]
        async with PostgresStore(pg_url) as store:
            await store.send_events([starting(new_run())])
            claims = await store.claim(queues=None, limit=1, lease_for=LEASE, owner="w")
            assert len(claims) == 1
        assert await pending_migrations(pg_url) == []
        installed = await conn.execute(
            "select count(*) from pg_proc where proname = %s", [TICK_NAME]
        )
        assert await installed.fetchone() == (1,)
