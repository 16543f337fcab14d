"""Operations on runs against real PostgreSQL: through a worker, through the server's ingest
RPC over a real socket, bulk actions meeting runs that change, and migration 0007 on a
database that already has runs."""

from __future__ import annotations

import json
from collections import Counter
from datetime import UTC, datetime, timedelta
from typing import Any

import msgspec
import psycopg
import pytest

import slayq
from examples.app.functions import FUNCTIONS
from slayq import step
from slayq.client import Client
from slayq.errors import InputError, RunNotFoundError, StoreInputError
from slayq.http_store import HttpStore
from slayq.model import RunFilter, RunId
from slayq.runtime.ids import first_id_at, new_run_id
from slayq.store.postgres import PostgresStore, _migrations, _ops_runs
from tests.contract.helpers import new_run, starting
from tests.integration.servers import SECRET
from tests.integration.workers import finished, running

pytestmark = pytest.mark.anyio


class Order(msgspec.Struct):
    n: int


def order_function(calls: Counter[str], broken: list[bool]) -> slayq.Function:
    @slayq.function(event="shop/order", schema=Order, retries=1)
    async def order(ctx: slayq.Context[Order]) -> slayq.Workflow:
        def charge() -> int:
            calls["charge"] += 1
            return ctx.data.n * 10

        def ship() -> str:
            calls["ship"] += 1
            if broken[0]:
                raise RuntimeError("the carrier is down")
            return "shipped"

        def mail() -> str:
            calls["mail"] += 1
            return "mailed"

        total = yield step.run("charge", charge)
        shipped = yield step.run("ship", ship)
        mailed = yield step.run("mail", mail)
        yield slayq.finish([total, shipped, mailed])

    return order


async def test_a_worker_retries_only_the_failed_step_and_reruns_from_a_step(pg_url: str) -> None:
    calls: Counter[str] = Counter()
    broken = [True]
    async with running(PostgresStore(pg_url), [order_function(calls, broken)]) as client:
        run_id = await client.send_event("shop/order", {"n": 4})
        failed = await finished(client, run_id)
        assert (failed.status, failed.attempts, failed.max_attempts) == ("failed", 2, 2)
        assert calls == {"charge": 1, "ship": 2}
        assert run_id is not None

        broken[0] = False
        assert await client.retry(run_id, actor="ops") == run_id
        done = await finished(client, run_id)
        assert (done.status, done.result) == ("completed", [40, "shipped", "mailed"])
        assert (done.attempts, done.max_attempts) == (3, 4)
        assert calls == {"charge": 1, "ship": 3, "mail": 1}

        fork = await client.rerun(run_id, from_step="ship")
        forked = await finished(client, fork)
        assert (forked.status, forked.forked_from) == ("completed", run_id)
        assert [s.name for s in forked.steps] == ["charge", "ship", "mail"]
        assert forked.steps[0] == done.steps[0]  # copied, not run again
        assert calls == {"charge": 1, "ship": 4, "mail": 2}

        page = await client.list_runs(event="shop/order", status="completed")
        assert [run.id for run in page.runs] == [fork, run_id]
        actions = [(e.action, e.actor) for e in await client.list_audit()]
        assert actions == [("rerun", "api"), ("retry", "ops")]


async def test_every_operation_on_runs_goes_through_the_ingest_rpc(server: str) -> None:
    client = Client(FUNCTIONS, store=HttpStore(server, SECRET), endpoint="http://app.test/slay")
    async with client:
        first = await client.send_event("testing/cancel-on-test", {"some_data_id": "a"})
        second = await client.send_event("testing/cancel-on-test", {"some_data_id": "b"})
        assert first is not None and second is not None
        page = await client.list_runs(limit=1)
        assert [run.id for run in page.runs] == [second]
        assert page.next_cursor is not None
        rest = await client.list_runs(limit=1, cursor=page.next_cursor)
        assert ([run.id for run in rest.runs], rest.next_cursor) == ([first], None)
        assert [r.id for r in (await client.list_runs(data={"some_data_id": "a"})).runs] == [first]

        assert await client.cancel(first, actor="cli:ann@host")
        assert await client.retry(first) == first
        assert (await client.get_run(first)).status == "queued"
        fork = await client.rerun(first)
        assert (await client.get_run(fork)).forked_from == first
        assert await client.cancel_runs(event="testing/cancel-on-test", dry_run=True) == 3
        assert await client.cancel_runs(event="testing/cancel-on-test", actor="ops") == 3
        assert await client.retry_runs(status="cancelled", dry_run=True) == 3
        assert await client.retry_runs(status="cancelled") == 3
        audit = await client.list_audit(limit=10)
        assert [(e.action, e.actor) for e in audit] == [
            ("retry_runs", "api"),
            ("cancel_runs", "ops"),
            ("rerun", "api"),
            ("retry", "api"),
            ("cancel", "cli:ann@host"),
        ]

        # Refusals come back as input errors naming what was wrong, changing nothing.
        with pytest.raises(StoreInputError, match="is queued"):
            await client.retry(first)
        with pytest.raises(StoreInputError, match="cursor"):
            await client.list_runs(cursor="bogus")
        bad = RunFilter(status=["lost"])  # type: ignore[list-item]
        with pytest.raises(StoreInputError, match="'lost'"):
            await client.store.list_runs(bad, limit=5, cursor=None)
        with pytest.raises(StoreInputError, match=r"no step 'x'"):
            await client.rerun(first, from_step="x")
        with pytest.raises(RunNotFoundError):
            await client.retry(new_run_id())
        assert len(await client.list_audit()) == 5


async def test_a_bulk_action_skips_a_run_that_changed_after_it_was_listed(
    pg_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The page of candidates is read before they are locked: a run claimed in between
    no longer matches ``status="queued"`` and is left alone."""
    monkeypatch.setattr(_ops_runs, "BULK_BATCH", 2)
    apply = _ops_runs.Bulk._apply
    claimed: list[str] = []

    async def claim_one_first(
        self: _ops_runs.Bulk, conn: psycopg.AsyncConnection[Any], targets: str, params: Any
    ) -> int:
        if not claimed:  # as if a worker's claim had committed just before the lock
            claimed.append(params["ids"][0])
            await conn.execute(
                "update runs set status = 'running' where id = %s::uuid", [claimed[0]]
            )
        return await apply(self, conn, targets, params)

    monkeypatch.setattr(_ops_runs.Bulk, "_apply", claim_one_first)
    store = PostgresStore(pg_url)
    client = Client([order_function(Counter(), [False])], store=store)
    async with client:
        runs = [await client.send_event("shop/order", {"n": i}) for i in range(5)]
        assert await client.cancel_runs(status="queued") == 4
        statuses = {r: (await client.get_run(r)).status for r in runs if r is not None}
    assert statuses.pop(RunId(claimed[0])) == "running"
    assert set(statuses.values()) == {"cancelled"}


async def test_migration_0007_keeps_the_cancel_rules_of_runs_made_before_it(
    pg_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    every = _migrations.load_migrations()
    monkeypatch.setattr(_migrations, "load_migrations", lambda: [m for m in every if m.version < 7])
    await _migrations.migrate(pg_url, schema="before")
    run_id = new_run_id()
    async with await psycopg.AsyncConnection.connect(pg_url, autocommit=True) as conn:
        await conn.execute(
            "insert into before.runs (id, event, data, queue, max_attempts, created_at,"
            " updated_at, run_at, status, finished_at)"
            " values (%s, 'e', '{}', 'general', 1, now(), now(), null, 'cancelled', now())",
            [run_id],
        )
        await conn.execute(
            "insert into before.cancel_rules (run_id, event, field, value)"
            " values (%s, 'stop', 'k', '1')",
            [run_id],
        )
    monkeypatch.setattr(_migrations, "load_migrations", lambda: every)
    async with PostgresStore(pg_url, schema="before") as store:
        await store.retry_run(run_id, actor="t")
        await store.send_events([slayq.model.OutgoingEvent(name="stop", data={"k": 1})])
        assert (await store.get_run(run_id)).status == "cancelled"


async def test_bad_rerun_step_names_are_refused_before_anything_is_stored(pg_url: str) -> None:
    async with Client([order_function(Counter(), [False])], store=PostgresStore(pg_url)) as c:
        run_id = await c.send_event("shop/order", {"n": 1})
        assert run_id is not None
        with pytest.raises(InputError, match=r"its steps: \[\]"):
            await c.rerun(run_id, from_step="charge")
        assert len((await c.list_runs()).runs) == 1


async def test_time_windows_read_a_range_of_run_ids_and_allow_the_clock_margin(
    pg_url: str,
) -> None:
    """On the database's clock, since/until bound the run ids as well as created_at: runs
    whose id time is within ID_CLOCK_MARGIN of their created_at are found, the exact
    created_at filter still decides, and the plan is a range of the primary key."""
    store = PostgresStore(pg_url)
    await store.open()
    client = Client([], store=store)
    now = datetime.now(UTC)
    # name: (created this long ago, id made this much earlier than that)
    made = {
        "2h": (timedelta(hours=2), timedelta(0)),
        "61m": (timedelta(minutes=61), timedelta(0)),
        "ahead": (timedelta(minutes=62), -timedelta(minutes=4)),  # its id says 58m ago
        "behind": (timedelta(minutes=58), timedelta(minutes=4)),  # its id says 62m ago
        "far_behind": (timedelta(minutes=50), timedelta(minutes=15)),  # past the margin
        "10m": (timedelta(minutes=10), timedelta(0)),
        "now": (timedelta(0), timedelta(0)),
    }
    ids: dict[str, RunId] = {}
    try:
        for i, (name, (age, early)) in enumerate(made.items()):
            run_id = first_id_at(now - age - early + timedelta(milliseconds=i))
            run = msgspec.structs.replace(new_run(), id=run_id)
            await store.send_events([starting(run)])
            ids[name] = run_id
        async with await psycopg.AsyncConnection.connect(pg_url, autocommit=True) as conn:
            for name, (age, _) in made.items():
                await conn.execute(
                    "update slayq.runs set created_at = %s where id = %s",
                    [now - age, ids[name]],
                )

        async def listed(**filters: Any) -> list[str]:
            page = await client.list_runs(limit=100, **filters)
            by_id = {v: k for k, v in ids.items()}
            return [by_id[run.id] for run in page.runs]

        everything = ["now", "10m", "ahead", "61m", "behind", "far_behind", "2h"]
        assert await listed() == everything  # by id: the time each was made
        assert await listed(since="1h") == ["now", "10m", "behind"]
        assert await listed(until="1h") == ["ahead", "61m", "2h"]
        assert await listed(since=now - timedelta(minutes=90), until="30m") == [
            "ahead",
            "61m",
            "behind",
            "far_behind",
        ]
        assert await listed(since="1h", status="queued") == ["now", "10m", "behind"]
        # an id made longer than the margin before its run was stored is outside the range
        assert await listed(since="55m") == ["now", "10m"]
        assert await listed(since="55m", until="5m") == ["10m"]

        condition, params = _ops_runs.where(
            RunFilter(since_ago=timedelta(hours=1), until_ago=timedelta(minutes=5))
        )
        async with await psycopg.AsyncConnection.connect(pg_url, autocommit=True) as conn:
            await conn.execute("set search_path = slayq")
            cursor = psycopg.AsyncClientCursor(conn)
            query = _ops_runs.list_query(condition)
            await cursor.execute(
                "explain (format json) " + query, params | {"now": None, "limit": 51}
            )
            row = await cursor.fetchone()
        assert row is not None
        plan = json.dumps(row[0])
        assert '"Index Name": "runs_pkey"' in plan
        assert "(id >= " in plan and "(id < " in plan, plan
    finally:
        await store.aclose()
