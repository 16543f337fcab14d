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
from slayq.store.postgres._tick import GatedQueues, tick
from slayq.store.postgres.sql.ticking import FOLLOW_UP_NAME, TICK_NAME
from slayq.store.protocol import ClaimRequest, QueueLimit
from tests.contract.helpers import LEASE, new_run, starting
from tests.contract.test_flow_claims import keyed

pytestmark = pytest.mark.anyio

DONE = Transition(steps=[], outcome=Completed(None))
GENERAL = [QueueLimit(["general"], 10)]


async def traced_lines(conn: psycopg.AsyncConnection[Any], body: Any) -> list[str]:
    """The protocol messages the client sent (``F``) while ``body`` ran, as traced."""
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
    return [line for line in lines if line.startswith("F\t")]


async def traced_messages(conn: psycopg.AsyncConnection[Any], body: Any) -> list[str]:
    """The protocol messages the client sent while ``body`` ran, by type."""
    return [line.split("\t")[2].split()[0] for line in await traced_lines(conn, body)]


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


async def test_a_claim_of_queues_with_gated_runs_takes_one_transaction_once_known(
    pg_url: str,
) -> None:
    """Gated runs (flow control) are claimed after the tick. The first tick that finds
    a claim's queues have had gated runs claims them in a transaction of its own; from
    then on, the tick keeps its transaction open for them: one transaction a tick."""
    async with (
        PostgresStore(pg_url) as store,
        await psycopg.AsyncConnection.connect(pg_url, autocommit=True) as conn,
    ):
        await conn.execute("set search_path to slayq, public")
        await conn.execute("set timezone to 'UTC'")
        await store.send_events([starting(keyed(n % 4)) for n in range(8)])
        request = ClaimRequest(GENERAL, 2, LEASE, "w")
        gated_queues = GatedQueues()
        claimed: list[int] = []
        firsts: list[str] = []  # what each tick sent first
        for _ in range(3):

            async def claim() -> None:
                ticked = await tick(
                    conn, None, [request], now=None, channel="slayq", gated_queues=gated_queues
                )
                claimed.append(len(ticked.claimed[0]))

            parsed = [line for line in await traced_lines(conn, claim) if "\tParse\t" in line]
            firsts.append("begin" if '"begin"' in parsed[0] else "tick")
        assert claimed == [2, 2, 2]  # four keys of two slots each: room for all six
        # The first tick is a statement alone (its own transaction), the later ones
        # begin the transaction the gated claim goes on in.
        assert firsts == ["tick", "begin", "begin"], firsts
        assert gated_queues.expected([request])


async def test_a_store_installs_its_tick_function_and_health_reports_it_missing(
    pg_url: str,
) -> None:
    """A database migrated by another version of slayq lacks this version's function:
    ``pending_migrations`` (``slayq health``) names it, and opening a store installs it."""
    async with await psycopg.AsyncConnection.connect(pg_url, autocommit=True) as conn:
        await conn.execute(f"drop function slayq.{TICK_NAME}")
        await conn.execute(f"drop function slayq.{FOLLOW_UP_NAME}")
        await conn.execute(f"drop type slayq.{TICK_NAME}_row")
        assert await pending_migrations(pg_url) == [TICK_NAME]
        async with PostgresStore(pg_url) as store:
            await store.send_events([starting(new_run())])
            claims = await store.claim(queues=None, limit=1, lease_for=LEASE, owner="w")
            assert len(claims) == 1
        assert await pending_migrations(pg_url) == []
        installed = await conn.execute(
            "select count(*) from pg_proc where proname = any(%s)", [[TICK_NAME, FOLLOW_UP_NAME]]
        )
        assert await installed.fetchone() == (2,)
