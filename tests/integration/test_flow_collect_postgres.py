"""Debounce and batch on PostgreSQL: an in-process worker on the real clock, and a send
racing a claim that holds the pending run's row."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from datetime import timedelta

import anyio
import msgspec
import psycopg
import pytest

import slayq
from slayq.model import RunId
from slayq.store.postgres import PostgresStore
from tests.integration.workers import finished, running

pytestmark = pytest.mark.anyio


class Usage(msgspec.Struct):
    account: str
    n: int


class Edit(msgspec.Struct):
    doc: str
    rev: int


@slayq.function(
    event="usage/recorded",
    schema=Usage,
    batch=slayq.Batch(max_size=3, timeout="300ms", key="account"),
)
async def record(ctx: slayq.Context[Usage]) -> slayq.Workflow:
    yield slayq.finish([e.n for e in ctx.events])


@slayq.function(
    event="doc/edited",
    schema=Edit,
    debounce=slayq.Debounce(period="300ms", timeout="10s", key="doc"),
)
async def reindex(ctx: slayq.Context[Edit]) -> slayq.Workflow:
    yield slayq.finish(ctx.data.rev)


async def test_a_worker_runs_batches_of_events(pg_url: str) -> None:
    async with running(PostgresStore(pg_url), [record]) as client:
        ids = await client.send_events(
            [("usage/recorded", {"account": "a", "n": n}) for n in range(7)]
        )
        results = [(await finished(client, run_id)).result for run_id in dict.fromkeys(ids)]
    assert results == [[0, 1, 2], [3, 4, 5], [6]]


async def test_a_batch_filled_by_later_sends_wakes_an_idle_worker(pg_url: str) -> None:
    """The send that fills a batch makes it due at once and tells the queue's listeners:
    the worker polls every 30 s and the batch's timeout is 30 s, yet it runs now."""

    @slayq.function(
        event="usage/slow",
        schema=Usage,
        batch=slayq.Batch(max_size=3, timeout="30s"),
    )
    async def slow(ctx: slayq.Context[Usage]) -> slayq.Workflow:
        yield slayq.finish([e.n for e in ctx.events])

    store = PostgresStore(pg_url)
    async with running(store, [slow], poll_interval=timedelta(seconds=30)) as client:
        ids = [await client.send_event("usage/slow", {"account": "a", "n": n}) for n in range(3)]
        assert ids == [ids[0]] * 3
        run = await finished(client, ids[0], seconds=10)
    assert run.result == [0, 1, 2]


async def test_a_worker_runs_a_burst_of_edits_once(pg_url: str) -> None:
    async with running(PostgresStore(pg_url), [reindex]) as client:
        ids = [await client.send_event("doc/edited", {"doc": "d", "rev": rev}) for rev in range(5)]
        assert ids == [ids[0]] * 5
        run = await finished(client, ids[0])
        assert (run.status, run.result) == ("completed", 4)
        page = await client.list_runs(event="doc/edited")
    assert [r.id for r in page.runs] == [ids[0]]


async def _claim_holding_the_row(
    pg_url: str, run_id: RunId, send: Callable[[], Awaitable[RunId | None]]
) -> RunId | None:
    """``send`` while another transaction has the run's row locked, as a claim does
    between leasing the run and committing; it commits once ``send`` waits for it."""
    async with await psycopg.AsyncConnection.connect(pg_url) as claimer:
        await claimer.execute("set search_path to slayq")
        await claimer.execute(
            "update runs set status = 'running', lease_token = nextval('lease_tokens') "
            "where id = %s",
            [run_id],
        )
        answer: list[RunId | None] = []

        async def sending() -> None:
            answer.append(await send())

        async with anyio.create_task_group() as group:
            group.start_soon(sending)
            for _ in range(1000):  # ten seconds at most
                if await _waiting_for_a_lock(pg_url):
                    break
                await anyio.sleep(0.01)
            else:
                raise AssertionError("the send never waited for the claim's row lock")
            await claimer.commit()
    return answer[0]


async def _waiting_for_a_lock(pg_url: str) -> bool:
    async with await psycopg.AsyncConnection.connect(pg_url) as conn:
        cursor = await conn.execute(
            "select count(*) from pg_stat_activity "
            "where datname = current_database() and wait_event_type = 'Lock'"
        )
        row = await cursor.fetchone()
    return row is not None and row[0] > 0


async def test_a_debounce_that_waited_for_a_claim_starts_a_new_run(pg_url: str) -> None:
    async with slayq.Client([reindex], store=PostgresStore(pg_url)) as client:
        first = await client.send_event("doc/edited", {"doc": "d", "rev": 1})
        assert first is not None

        async def send() -> RunId | None:
            return await client.send_event("doc/edited", {"doc": "d", "rev": 2})

        second = await _claim_holding_the_row(pg_url, first, send)
        assert second not in (None, first)
        assert (await client.get_run(first)).data == {"doc": "d", "rev": 1}
        assert second is not None
        assert (await client.get_run(second)).data == {"doc": "d", "rev": 2}


async def test_a_batch_that_waited_for_a_claim_is_closed(pg_url: str) -> None:
    async with slayq.Client([record], store=PostgresStore(pg_url)) as client:
        first = await client.send_event("usage/recorded", {"account": "a", "n": 1})
        assert first is not None

        async def send() -> RunId | None:
            return await client.send_event("usage/recorded", {"account": "a", "n": 2})

        second = await _claim_holding_the_row(pg_url, first, send)
        assert second not in (None, first)
        assert (await client.get_run(first)).data == {"events": [{"account": "a", "n": 1}]}
        assert second is not None
        assert (await client.get_run(second)).data == {"events": [{"account": "a", "n": 2}]}
