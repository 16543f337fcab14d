"""Values PostgreSQL cannot hold, produced by a function, on the worker and a real database.

Before, each of these reached the database at commit: the commit raised, the run stayed
``running`` until its lease expired, the handler before it ran again on every attempt,
and the run ended ``LeaseExpired`` with the real error only in a log. Now the engine
refuses them where they are produced, and the run fails at once with an error naming them.
"""

from __future__ import annotations

from collections import Counter

import msgspec
import pytest

import slayq
from slayq import step
from slayq.store.postgres import PostgresStore
from tests.integration.workers import finished, running

pytestmark = pytest.mark.anyio


class Order(msgspec.Struct):
    id: str


async def test_values_the_database_cannot_hold_fail_the_run_at_once_naming_them(
    pg_url: str,
) -> None:
    calls: Counter[str] = Counter()

    def count(name: str) -> str:
        calls[name] += 1
        return name

    @slayq.function(event="test/nul-step", retries=3)
    async def nul_step(ctx: slayq.Context[slayq.EmptyEvent]) -> slayq.Workflow:
        yield step.run("first", count, "first")
        yield step.run("bad\x00name", count, "bad")

    @slayq.function(event="test/forever", retries=3)
    async def forever(ctx: slayq.Context[slayq.EmptyEvent]) -> slayq.Workflow:
        yield step.run("before", count, "before")
        yield step.sleep("nap", "300000 years")

    @slayq.function(event="test/long-name", retries=3)
    async def long_name(ctx: slayq.Context[slayq.EmptyEvent]) -> slayq.Workflow:
        yield step.run("x" * 3000, count, "long")

    async with running(PostgresStore(pg_url), [nul_step, forever, long_name]) as client:
        runs = {
            event: await finished(client, await client.send_event(event, {}))
            for event in ("test/nul-step", "test/forever", "test/long-name")
        }
    for event, run in runs.items():
        assert (run.status, run.attempts) == ("failed", 1), event
        assert run.error is not None
    assert runs["test/nul-step"].error is not None
    assert "NUL" in runs["test/nul-step"].error.message
    assert runs["test/forever"].error is not None
    assert "300000 years" in runs["test/forever"].error.message
    assert runs["test/long-name"].error is not None
    assert "3000 bytes" in runs["test/long-name"].error.message
    # Committed handlers ran once; the refused steps never ran at all.
    assert calls == {"first": 1, "before": 1}


async def test_an_idempotency_key_too_long_to_index_is_refused_at_send(pg_url: str) -> None:
    @slayq.function(event="test/keyed", schema=Order)
    async def keyed(ctx: slayq.Context[Order]) -> None:
        return None

    async with running(PostgresStore(pg_url), [keyed]) as client:
        with pytest.raises(slayq.InputError, match=r"key .* over 500 bytes"):
            await client.send_event("test/keyed", {"id": "1"}, key="k" * 3000)
