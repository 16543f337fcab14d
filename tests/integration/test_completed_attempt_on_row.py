"""The attempt that completes a run stays on the run's row: no ``attempts`` row is written
for it (the hot path's saving), and history reads the same as if one were."""

from __future__ import annotations

from datetime import timedelta

import psycopg
import pytest

from slayq.model import Completed, Continue, ErrorInfo, Failed, StepRecord, Transition
from slayq.store.postgres import PostgresStore
from tests.contract.helpers import claim_all, new_run, starting

pytestmark = pytest.mark.anyio

BOOM = ErrorInfo(type="RuntimeError", message="boom")


async def attempt_rows(url: str) -> int:
    async with await psycopg.AsyncConnection.connect(url) as conn:
        cursor = await conn.execute("select count(*) from slayq.attempts")
        row = await cursor.fetchone()
    assert row is not None
    return int(row[0])


async def test_a_completing_attempt_is_kept_on_the_run_row(pg_url: str) -> None:
    async with PostgresStore(pg_url) as store:
        (run_id,) = await store.send_events([starting(new_run(max_attempts=3))])
        assert run_id is not None
        (first,) = await claim_all(store, owner="host-a:1")
        await store.commit(first.lease, Transition(steps=[], outcome=Failed(BOOM, timedelta(0))))
        (second,) = await claim_all(store, owner="host-b:2")
        step = StepRecord(name="a", kind="run", output=1)
        await store.commit(second.lease, Transition(steps=[step], outcome=Continue()))
        await store.commit(second.lease, Transition(steps=[], outcome=Completed("ok"), replayed=1))
        run = await store.get_run(run_id)
    # One row: the failed attempt. The completing one lives on the run's row.
    assert await attempt_rows(pg_url) == 1
    assert [(a.number, a.outcome, a.owner) for a in run.history] == [
        (1, "retrying", "host-a:1"),
        (2, "completed", "host-b:2"),
    ]
    last = run.history[-1]
    assert (last.ended_at, last.replayed, last.executed, last.error) == (
        run.finished_at,
        1,
        1,
        None,
    )
    assert last.started_at is not None
    assert run.finished_at is not None
    assert last.started_at <= run.finished_at
