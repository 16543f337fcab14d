"""``run_stats`` in PostgreSQL: a window of runs per minute, read by index ranges.

Runs started in the window are a range of the primary key (run ids are UUIDv7; the
filter of ``list_runs(since=...)``); runs finished in it are a range of
``runs_finished`` (finished_at); expired leases are the entries of ``runs_leased`` (only
running runs) past their expiry. Nothing reads the rest of the table, so the cost follows
the runs of the window.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from slayq.model import RunFilter, RunStats
from slayq.store._run_stats import count_minutes
from slayq.store.postgres._ops_runs import where
from slayq.store.postgres._queries import NOW, compact

if TYPE_CHECKING:
    from datetime import datetime, timedelta

    from psycopg import AsyncConnection

FINISHED = compact(f"""
select date_trunc('minute', r.finished_at), r.status, count(*)
from runs as r
where r.finished_at >= {NOW} - %(window)s::interval
  and r.status in ('completed', 'failed', 'cancelled')
group by 1, 2
""")

EXPIRED = compact(f"""
select {NOW}, {NOW} - %(window)s::interval,
       (select count(*) from runs where status = 'running' and lease_expires_at < {NOW})
""")


def _started_query(condition: str) -> str:
    return compact(f"""
        select date_trunc('minute', r.created_at), count(*)
        from runs as r where {condition}
        group by 1
    """)


async def run_stats(conn: AsyncConnection[Any], *, window: timedelta, now: Any) -> RunStats:
    # One transaction at repeatable read: the three reads see one snapshot (and NOW, in
    # it, one time).
    async with conn.transaction():
        await conn.execute("set transaction isolation level repeatable read")
        params = {"window": window, "now": now}
        row = await (await conn.execute(EXPIRED, params)).fetchone()
        assert row is not None
        clock_now: datetime = row[0]
        since: datetime = row[1]
        condition, filter_params = where(RunFilter(since_ago=window), clock=now)
        started = await conn.execute(_started_query(condition), filter_params | params)
        started_rows = await started.fetchall()
        finished_rows = await (await conn.execute(FINISHED, params)).fetchall()
    minutes = count_minutes(
        [(at, "started", n) for at, n in started_rows]
        + [(at, status, n) for at, status, n in finished_rows]
    )
    return RunStats(since=since, now=clock_now, minutes=minutes, expired_leases=int(row[2]))
