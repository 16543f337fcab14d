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

from slayq.model import Completed, Transition
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
