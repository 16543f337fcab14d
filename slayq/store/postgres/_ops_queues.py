"""Operations on queues, waits, schedules and workers: the SQL and its calls.

The statements keep the conventions of ``sql``. None is on a run's hot path except
what it adds to the claim (paused queues are skipped there, in ``sql.claiming.CLAIM``).
Pausing takes the queue's claim lock (``QUEUE_LOCKS``), as a claim of that queue does:
a claim in flight finishes first, and a later one reads the pause in its snapshot.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from slayq.model import QueueInfo, RunId, ScheduleInfo, WaitInfo, WorkerInfo
from slayq.store.postgres.sql.claiming import PAIRS
from slayq.store.postgres.sql.common import LOCK_NAMES, NOW, QUEUE_LOCKS, TIMED, compact

if TYPE_CHECKING:
    from datetime import datetime

    from psycopg import AsyncConnection

# The match value as the run gave it (the spec's json), not the jsonb used for matching.
LIST_WAITS = compact("""
select p.run_id::text, p.name, p.event, p.match_field, p.spec -> 'match_value', p.expires_at
from pending as p
where p.kind = 'wait' and (%(event)s::text is null or p.event = %(event)s::text)
order by p.expires_at nulls last, p.run_id, p.pos
limit %(limit)s
""")

PAUSE = compact(f"""
with paused as (
    insert into paused_queues (queue, paused_at, paused_by)
    values (%(name)s, {NOW}, %(actor)s)
    on conflict (queue) do nothing
    returning queue
),
audit as (
    insert into audit_log (at, actor, action, target)
    values ({NOW}, %(actor)s, 'pause_queue', %(name)s)
)
select count(*) from paused
""")

# Idle claimers of the queue are told at once (on commit) instead of at their next poll.
RESUME = compact(f"""
with resumed as (delete from paused_queues where queue = %(name)s returning queue),
audit as (
    insert into audit_log (at, actor, action, target)
    values ({NOW}, %(actor)s, 'resume_queue', %(name)s)
)
select count(pg_notify(%(channel)s, queue)) from resumed
""")

# Per (queue, priority) pair of runs_due (a loose index scan), plain and gated (flow
# control) runs apart, as runs_due holds them, counts read from indexes alone: what is
# due now and since when, and what is not due yet from runs_due; of those, the waiting
# ones from runs_waiting (the rest sleep). Running runs come from runs_leased (as many
# as are in flight).
LIST_QUEUES = compact(f"""
with recursive {PAIRS},
counts as (
    select p.queue, p.priority, sum(d.n) as due, min(d.oldest) as oldest,
           sum(later.n + never.n) as later
    from pairs as p
    cross join (values (false), (true)) as g(gated)
    cross join lateral (
        select count(*) as n, min(r.run_at) as oldest from runs as r
        where r.queue = p.queue and r.priority = p.priority and r.status in {TIMED}
          and r.gated = g.gated and r.run_at <= {NOW}
    ) as d
    cross join lateral (
        select count(*) as n from runs as r
        where r.queue = p.queue and r.priority = p.priority and r.status in {TIMED}
          and r.gated = g.gated and r.run_at > {NOW}
    ) as later
    cross join lateral (
        select count(*) as n from runs as r
        where r.queue = p.queue and r.priority = p.priority and r.status in {TIMED}
          and r.gated = g.gated and r.run_at is null
    ) as never
    group by p.queue, p.priority
),
timed as (
    select c.queue, sum(c.due) as due, min(c.oldest) as oldest,
           sum(c.later - w.later) as sleeping, sum(w.later) as waiting
    from counts as c
    cross join lateral (
        select count(*) - count(*) filter (where r.run_at <= {NOW}) as later from runs as r
        where r.queue = c.queue and r.priority = c.priority and r.status = 'waiting'
    ) as w
    group by c.queue
),
running as (select queue, count(*) as n from runs where status = 'running' group by queue),
names as (
    select queue from timed union select queue from running union select queue from paused_queues
)
select n.queue, coalesce(t.due, 0)::bigint, coalesce(r.n, 0)::bigint,
       coalesce(t.sleeping, 0)::bigint, coalesce(t.waiting, 0)::bigint, t.oldest,
       exists (select 1 from paused_queues as x where x.queue = n.queue)
from names as n
left join timed as t on t.queue = n.queue
left join running as r on r.queue = n.queue
order by n.queue collate "C"
""")

# Names in code point order (collate "C"), as MemoryStore sorts them, whatever the
# database's collation.
LIST_SCHEDULES = 'select event, cron, app, next_at from schedules order by event collate "C"'

# Expired leases count too: a stopped worker shows, with its old heartbeat, until its
# runs are taken over.
LIST_WORKERS = compact("""
select lease_owner, count(*), max(heartbeat_at)
from runs
where status = 'running' and lease_owner is not null
group by lease_owner
order by lease_owner collate "C"
""")


async def list_waits(
    conn: AsyncConnection[Any], *, event: str | None, limit: int
) -> list[WaitInfo]:
    cursor = await conn.execute(LIST_WAITS, {"event": event, "limit": limit})
    return [
        WaitInfo(
            run_id=RunId(run_id),
            step=step,
            event=name,
            match_field=field,
            match_value=value,
            expires_at=expires_at,
        )
        for run_id, step, name, field, value, expires_at in await cursor.fetchall()
    ]


async def pause_queue(
    conn: AsyncConnection[Any], name: str, *, actor: str, now: datetime | None
) -> bool:
    async with conn.transaction():
        lock = {"ns": QUEUE_LOCKS, "names": [name], "exclusive": [True]}
        await conn.execute(LOCK_NAMES, lock)
        cursor = await conn.execute(PAUSE, {"name": name, "actor": actor, "now": now})
        row = await cursor.fetchone()
    return row is not None and row[0] > 0


async def resume_queue(
    conn: AsyncConnection[Any], name: str, *, actor: str, now: datetime | None, channel: str
) -> bool:
    params = {"name": name, "actor": actor, "now": now, "channel": channel}
    cursor = await conn.execute(RESUME, params)
    row = await cursor.fetchone()
    return row is not None and row[0] > 0


async def list_queues(conn: AsyncConnection[Any], *, now: datetime | None) -> list[QueueInfo]:
    cursor = await conn.execute(LIST_QUEUES, {"now": now})
    return [
        QueueInfo(
            name=name,
            due=due,
            running=running,
            sleeping=sleeping,
            waiting=waiting,
            oldest_due_at=oldest,
            paused=paused,
        )
        for name, due, running, sleeping, waiting, oldest, paused in await cursor.fetchall()
    ]


async def list_schedules(conn: AsyncConnection[Any]) -> list[ScheduleInfo]:
    cursor = await conn.execute(LIST_SCHEDULES)
    return [
        ScheduleInfo(event=event, cron=cron, app=app, next_at=next_at)
        for event, cron, app, next_at in await cursor.fetchall()
    ]


async def list_workers(conn: AsyncConnection[Any]) -> list[WorkerInfo]:
    cursor = await conn.execute(LIST_WORKERS)
    return [
        WorkerInfo(owner=owner, runs_held=n, last_heartbeat_at=beat)
        for owner, n, beat in await cursor.fetchall()
    ]
