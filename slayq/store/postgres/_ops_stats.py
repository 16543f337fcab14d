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
from slayq.store.postgres.sql.common import NOW, compact

if TYPE_CHECKING:
    from datetime import timedelta

    from psycopg import AsyncConnection


# One statement, so one snapshot (and one NOW) for all three reads, without a
# repeatable-read transaction: behind a transaction pooler the store's operation is
# already inside a transaction, where the isolation level can no longer be set.
def _stats_query(condition: str) -> str:
    return compact(f"""
        select 'now', {NOW}, {NOW} - %(window)s::interval, (
            select count(*) from runs where status = 'running' and lease_expires_at < {NOW}
        ), null::text
        union all
        select 'started', date_trunc('minute', r.created_at), null, count(*), null
        from runs as r where {condition}
        group by 2
        union all
        select 'finished', date_trunc('minute', r.finished_at), null, count(*), r.status
        from runs as r
        where r.finished_at >= {NOW} - %(window)s::interval
          and r.status in ('completed', 'failed', 'cancelled')
        group by 2, 5
    """)


async def run_stats(conn: AsyncConnection[Any], *, window: timedelta, now: Any) -> RunStats:
    condition, filter_params = where(RunFilter(since_ago=window), clock=now)
    params = filter_params | {"window": window, "now": now}
    cursor = await conn.execute(_stats_query(condition), params)
    rows = await cursor.fetchall()
    ((_, clock_now, since, expired, _),) = [row for row in rows if row[0] == "now"]
    minutes = count_minutes(
        [(at, "started", n) for kind, at, _, n, _ in rows if kind == "started"]
        + [(at, status, n) for kind, at, _, n, status in rows if kind == "finished"]
    )
    return RunStats(since=since, now=clock_now, minutes=minutes, expired_leases=int(expired))
