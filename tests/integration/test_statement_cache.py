"""The hot path's statements stay within psycopg's statement cache.

psycopg caches the parsing of a statement (placeholders to ``$n``) only while it is at
most ``MAX_CACHED_STATEMENT_LENGTH`` bytes and is given at most
``MAX_CACHED_STATEMENT_PARAMS`` parameters; past either, every execution parses it again
(about 50 us for the claim), a cost no test of behaviour sees. Grown statements have
crossed the line twice already; this test makes the next one fail here.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import timedelta
from typing import Any

import msgspec
import psycopg._queries as pg_queries
import pytest

from slayq.model import (
    Completed,
    Continue,
    Flow,
    FlowRate,
    FlowSlot,
    PendingStep,
    StepRecord,
    Suspend,
    Transition,
)
from slayq.store.postgres import PostgresStore
from slayq.store.protocol import ClaimRequest
from tests.contract.helpers import LEASE, claim_all, new_run, starting

pytestmark = pytest.mark.anyio


@pytest.fixture
def uncached(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The statements psycopg had to parse without its cache, as they began."""
    seen: list[str] = []
    original: Callable[..., Any] = pg_queries._query2pg_nocache

    def spy(query: bytes, *args: Any, **kwargs: Any) -> Any:
        seen.append(query[:80].decode(errors="replace"))
        return original(query, *args, **kwargs)

    monkeypatch.setattr(pg_queries, "_query2pg_nocache", spy)
    return seen


async def test_claims_commits_and_sends_parse_from_the_cache(
    pg_url: str, uncached: list[str]
) -> None:
    async with PostgresStore(pg_url) as store:
        runs = [new_run(max_attempts=3) for _ in range(4)]
        await store.send_events([starting(run) for run in runs])
        await store.send_events([starting(new_run())])
        claims = await claim_all(store, limit=10)
        first, second, third, fourth, fifth = claims
        step = StepRecord(name="a", kind="run", output={"x": 1})
        await store.commit(first.lease, Transition(steps=[step], outcome=Continue()))
        await store.commit(first.lease, Transition(steps=[], outcome=Completed("done")))
        nap = PendingStep(name="nap", kind="sleep", delay=timedelta(seconds=1))
        await store.commit(second.lease, Transition(steps=[step], outcome=Suspend([nap])))
        wait = PendingStep(name="w", kind="wait", event="e", delay=timedelta(seconds=1))
        await store.commit(third.lease, Transition(steps=[], outcome=Suspend([wait])))
        await store.extend_leases([fourth.lease, fifth.lease], LEASE)
        await store.release(fourth.lease)
        # The worker's path: a batch of commits, then a claim in its transaction.
        more = [new_run() for _ in range(3)]
        await store.send_events([starting(run) for run in more])
        sixth, seventh, eighth = await claim_all(store, limit=3)
        request = ClaimRequest(queues=None, limit=2, lease_for=LEASE, owner="w")
        batch = [
            (sixth.lease, Transition(steps=[step], outcome=Continue())),
            (seventh.lease, Transition(steps=[step], outcome=Suspend([nap]))),
            (eighth.lease, Transition(steps=[step], outcome=Completed({"ok": True}))),
        ]
        result = await store.commit_batch(batch, claims=[request])
        assert result.errors == [None, None, None]
        # Flow control: a run under a concurrency key and a throttle takes the gated claim.
        slot = FlowSlot(bucket="test/run k=1", limit=1)
        rate = FlowRate(bucket="test/run", interval=timedelta(seconds=1), burst=0)
        gated = msgspec.structs.replace(new_run(), flow=Flow(concurrency=[slot], throttle=rate))
        await store.send_events([starting(gated)])
        assert [c.lease.run_id for c in await claim_all(store)] == [gated.id]
        await store.next_wakeup()
        await store.fire_schedules()
        await store.delete_finished(timedelta(days=7))
    assert uncached == []
