"""list_runs on a large table, and what indexes on runs cost sends, claims and commits.

    .venv/bin/python -m bench.bench_list_runs [--runs 1000000] [--rounds 3] [--cycles 3]

On a scratch database (dropped at the end): ``--runs`` runs made by INSERT ... SELECT
generate_series, one a second up to now, with UUIDv7 ids of their creation time (20
events and a rare one, 5 queues, 1% failed, a customer id in each run's data), then
``EXPLAIN (ANALYZE, BUFFERS)`` of the statements list_runs sends for each filter, with the
opt-in GIN index on data present for the data filter; then ``send_events`` batches of
1,000 new runs, and those runs' claim and commit (runs/s and WAL bytes per run), with
each index set of ``INDEX_SETS`` in turn, alternated ``--cycles`` times (medians of
``--rounds`` batches each). Prints the plans' summary lines and one JSON line of figures.
"""

from __future__ import annotations

import argparse
import json
import os
import secrets
import statistics
import time
from datetime import UTC, datetime, timedelta
from typing import Any

import anyio
import psycopg
from psycopg.conninfo import make_conninfo

from slayq.model import Completed, NewRun, OutgoingEvent, RunFilter, RunId, Transition
from slayq.runtime.ids import new_run_id
from slayq.store.postgres import PostgresStore, _ops_runs
from slayq.store.protocol import QueueLimit

LEASE = timedelta(minutes=5)
DONE = Transition(steps=[], outcome=Completed(None))

ADMIN_URL = os.environ.get("SLAY_Q_TEST_DATABASE_URL", "postgresql://postgres@127.0.0.1:5432/test")

FILL = """
insert into runs (id, event, data, queue, max_attempts, attempt, status, created_at,
                  updated_at, run_at, finished_at, may_wait, cancel_on)
select (lpad(to_hex((extract(epoch from t.at) * 1000)::bigint), 12, '0') || '7'
        || substr(md5(i::text), 1, 3) || '8' || substr(md5(i::text), 4, 15))::uuid,
       case when i %% 100000 = 7 then 'app/rare' else 'app/event-' || (i %% 20) end,
       json_build_object('customer', json_build_object('id', i %% 50000), 'order', i),
       'queue-' || (i %% 5), 3, 1, s.status, t.at, now(),
       case when s.status = 'queued' then now() end,
       case when s.status in ('failed', 'completed') then now() end, false, null
from generate_series(1, %(runs)s) as i
cross join lateral (select now() - (%(runs)s - i) * interval '1 second' as at) as t
cross join lateral (
    select case when i %% 100 = 0 then 'failed' when i %% 1000 = 1 then 'queued'
                else 'completed' end as status
) as s
"""

INDEX_DEFS = {
    # migration 0007 as first written
    "runs_listed": "create index runs_listed on runs (created_at, id)",
    "runs_status_listed": "create index runs_status_listed on runs (status, created_at, id)",
    "runs_event_listed": "create index runs_event_listed on runs (event, created_at, id)",
    "runs_children_old": "create index runs_children_old on runs (parent_run_id, created_at, id)"
    " where parent_run_id is not null",
    # migration 0007 now
    "runs_failed_listed": "create index runs_failed_listed on runs (id)"
    " where status in ('failed', 'cancelled')",
    "runs_children": "create index runs_children on runs (parent_run_id, id)"
    " where parent_run_id is not null",
    # opt-in (docs/operations.md)
    "runs_data": "create index runs_data on runs using gin ((data::jsonb) jsonb_path_ops)",
}
INDEX_SETS = {
    "0007_first": [
        "runs_listed",
        "runs_status_listed",
        "runs_event_listed",
        "runs_children_old",
        "runs_data",
    ],
    "0007_now": ["runs_failed_listed", "runs_children"],
    "0007_now_with_gin": ["runs_failed_listed", "runs_children", "runs_data"],
    "no_0007_indexes": [],
}


def list_statement(f: RunFilter, after: RunId | None = None) -> tuple[str, dict[str, Any]]:
    condition, params = _ops_runs.where(f, after=after)
    return _ops_runs.list_query(condition), params | {"now": None, "limit": 51}


async def explain(
    conn: psycopg.AsyncConnection[Any], label: str, f: RunFilter, after: RunId | None = None
) -> dict[str, Any]:
    query, params = list_statement(f, after)
    cursor = psycopg.AsyncClientCursor(conn)
    await cursor.execute("explain (analyze, buffers, format json) " + query, params)
    row = await cursor.fetchone()
    assert row is not None
    plan = row[0][0]
    top = plan["Plan"]
    nodes = []

    def walk(node: dict[str, Any]) -> None:
        nodes.append(
            f"{node['Node Type']}" + (f" on {node['Index Name']}" if "Index Name" in node else "")
        )
        for child in node.get("Plans", []):
            walk(child)

    walk(top)
    figures = {
        "ms": round(plan["Execution Time"], 2),
        "shared_hit": top.get("Shared Hit Blocks", 0),
        "shared_read": top.get("Shared Read Blocks", 0),
        "plan": " > ".join(nodes),
    }
    print(label, json.dumps(figures))
    return figures


def batch(n: int, queue: str | None = None) -> list[OutgoingEvent]:
    events = []
    for i in range(n):
        run = NewRun(
            id=new_run_id(),
            event=f"app/event-{i % 20}",
            data={"customer": {"id": i % 50000}, "order": i},
            queue=queue or f"queue-{i % 5}",
        )
        events.append(OutgoingEvent(name=run.event, data=run.data, run=run))
    return events


async def insert_rate(store: PostgresStore, rounds: int) -> float:
    times = []
    for _ in range(rounds):
        events = batch(1000)
        started = time.perf_counter()
        await store.send_events(events)
        times.append(time.perf_counter() - started)
    return round(1000 / statistics.median(times))


async def set_indexes(conn: psycopg.AsyncConnection[Any], present: list[str]) -> None:
    """Drop the indexes not in ``present`` and create those missing (kept ones stay)."""
    cursor = await conn.execute(
        "select indexname from pg_indexes where schemaname = 'slayq' and tablename = 'runs'"
    )
    existing = {row[0] for row in await cursor.fetchall()}
    for name, definition in INDEX_DEFS.items():
        if name in existing and name not in present:
            await conn.execute(f"drop index {name}")
        elif name in present and name not in existing:
            await conn.execute(definition)


async def churn(
    store: PostgresStore, conn: psycopg.AsyncConnection[Any], rounds: int
) -> tuple[float, float]:
    """Runs per second through claim and commit (Completed), and WAL bytes per run: the
    updates of a run's life, each of which writes every index of runs (a status change is
    never HOT) and every partial index whose predicate the new row meets."""
    times, wal = [], []
    for _ in range(rounds):
        done = 0
        # a queue of its own, so that the table's older queued runs are not claimed
        await store.send_events(batch(1000, queue="churn"))
        limit = [QueueLimit(names=["churn"], concurrency=1000)]
        lsn = await (await conn.execute("select pg_current_wal_lsn()")).fetchone()
        started = time.perf_counter()
        while claims := await store.claim(queues=limit, limit=100, lease_for=LEASE, owner="b"):
            for claim in claims:
                await store.commit(claim.lease, DONE)
                done += 1
        times.append(time.perf_counter() - started)
        assert done == 1000, done
        assert lsn is not None
        row = await (
            await conn.execute("select pg_current_wal_lsn() - %s::pg_lsn", [lsn[0]])
        ).fetchone()
        assert row is not None
        wal.append(float(row[0]) / 1000)
    return round(1000 / statistics.median(times)), round(statistics.median(wal))


async def main(runs: int, rounds: int, cycles: int) -> None:
    name = f"slayq_bench_list_{secrets.token_hex(4)}"
    async with await psycopg.AsyncConnection.connect(ADMIN_URL, autocommit=True) as admin:
        await admin.execute(f'create database "{name}"')
    url = make_conninfo(ADMIN_URL, dbname=name)
    figures: dict[str, Any] = {"runs": runs}
    try:
        store = PostgresStore(url)
        await store.open()
        async with await psycopg.AsyncConnection.connect(url, autocommit=True) as conn:
            await conn.execute("set search_path = slayq")
            started = time.perf_counter()
            await conn.execute(FILL, {"runs": runs})
            await conn.execute("vacuum analyze runs")
            figures["fill_s"] = round(time.perf_counter() - started, 1)
            await conn.execute("set jit = off")
            await set_indexes(conn, [*INDEX_SETS["0007_now_with_gin"]])
            await conn.execute("vacuum analyze runs")
            now = datetime.now(UTC)
            explained = {
                "no_filter": await explain(conn, "no filter", RunFilter()),
                "status_failed": await explain(conn, "status=failed", RunFilter(status=["failed"])),
                "status_completed": await explain(
                    conn, "status=completed", RunFilter(status=["completed"])
                ),
                "status_queued": await explain(conn, "status=queued", RunFilter(status=["queued"])),
                "event": await explain(conn, "event=X", RunFilter(event="app/event-7")),
                "event_rare": await explain(conn, "event=rare", RunFilter(event="app/rare")),
                "queue": await explain(conn, "queue=X", RunFilter(queue="queue-3")),
                "data_gin": await explain(
                    conn, "data containment (GIN)", RunFilter(data={"customer": {"id": 4242}})
                ),
                "status_event": await explain(
                    conn, "failed+event", RunFilter(status=["failed"], event="app/event-0")
                ),
                "since_1h": await explain(
                    conn, "since 1h", RunFilter(since_ago=timedelta(hours=1))
                ),
                "since_1h_rare": await explain(
                    conn,
                    "since 1h, event=rare",
                    RunFilter(since_ago=timedelta(hours=1), event="app/rare"),
                ),
                "window_day": await explain(
                    conn,
                    "a day 5 days ago",
                    RunFilter(since=now - timedelta(days=6), until=now - timedelta(days=5)),
                ),
            }
            cursor = await conn.execute(
                "select id::text from runs order by id desc offset %s limit 1", [runs // 2]
            )
            row = await cursor.fetchone()
            assert row is not None
            explained["deep_cursor"] = await explain(
                conn, "cursor halfway", RunFilter(), RunId(row[0])
            )
            explained["deep_cursor_failed"] = await explain(
                conn, "failed, cursor halfway", RunFilter(status=["failed"]), RunId(row[0])
            )
            await conn.execute("drop index runs_data")
            explained["data_no_gin"] = await explain(
                conn, "data containment (no GIN)", RunFilter(data={"customer": {"id": 4242}})
            )
            figures["explain"] = explained
            sizes = await conn.execute(
                "select c.relname, pg_relation_size(c.oid) from pg_class c"
                " join pg_namespace n on n.oid = c.relnamespace"
                " where n.nspname = 'slayq' and c.relname = any(%s)",
                [[*INDEX_DEFS]],
            )
            figures["index_mb"] = {k: round(v / 2**20, 1) for k, v in await sizes.fetchall()}

            await insert_rate(store, 2)  # warm up
            await churn(store, conn, 1)
            # Alternate the index sets, so that a noisy neighbour does not favour one.
            rates: dict[str, list[float]] = {}
            for _ in range(cycles):
                for label, present in INDEX_SETS.items():
                    await set_indexes(conn, present)
                    # the same start for every set: a checkpoint after the index builds, then
                    # a round unmeasured (the first writes of a page after a checkpoint
                    # carry the whole page)
                    await conn.execute("checkpoint")
                    await churn(store, conn, 1)
                    rates.setdefault(f"send_events_runs_per_s_{label}", []).append(
                        await insert_rate(store, rounds)
                    )
                    per_s, wal = await churn(store, conn, rounds)
                    rates.setdefault(f"claim_commit_runs_per_s_{label}", []).append(per_s)
                    rates.setdefault(f"claim_commit_wal_bytes_per_run_{label}", []).append(wal)
            figures |= {k: round(statistics.median(v)) for k, v in rates.items()}
            figures["per_cycle"] = rates
        await store.aclose()
    finally:
        async with await psycopg.AsyncConnection.connect(ADMIN_URL, autocommit=True) as admin:
            await admin.execute(f'drop database "{name}" with (force)')
    print(json.dumps({k: v for k, v in figures.items() if k != "explain"}))


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=1_000_000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--cycles", type=int, default=3)
    args = parser.parse_args()
    anyio.run(main, args.runs, args.rounds, args.cycles)
