"""Retention: removing old finished runs and pruning the event log."""

from __future__ import annotations

from slayq.store.postgres.sql.common import NOW, compact

# ``since`` is where the caller knows no finished run is left before (a purge leaves
# thousands of dead index entries that a scan from the start would read again each call).
DELETE_FINISHED = compact(f"""
with doomed as (
    select id from runs
    where finished_at < {NOW} - %(older_than)s::interval
      and finished_at >= coalesce(%(since)s::timestamptz, '-infinity')
    order by finished_at
    limit %(batch)s
    for update skip locked
),
deleted as (delete from runs where id in (select id from doomed) returning finished_at)
select count(*), max(finished_at), {NOW} - %(older_than)s::interval from deleted
""")

# The oldest cursor of the unfinished runs that may wait (an index probe on
# runs_wait_cursor): no wait can see an event at or before it. A batch of the oldest
# events past ``after`` goes if no such run can see them and they are older than the
# grace, or if they are older than the retention whoever could. Returns how many of the
# batch were prunable and the seq up to which the log is pruned.
PRUNE_EVENTS = compact(f"""
with horizon as (
    select min(event_cursor) as seq from runs
    where may_wait and status in ('queued', 'running', 'sleeping', 'waiting') -- as the index
),
oldest as (
    select seq, created_at from events
    where seq > %(after)s
    order by seq
    limit %(batch)s
),
doomed as (
    select o.seq from oldest as o, horizon as h
    where o.created_at < {NOW} - %(older_than)s::interval
       or ((h.seq is null or o.seq <= h.seq) and o.created_at < {NOW} - %(grace)s::interval)
),
deleted as (delete from events where seq in (select seq from doomed) returning 1)
select (select count(*) from doomed), (select count(*) from deleted),
       coalesce((select min(seq) - 1 from oldest where seq not in (select seq from doomed)),
                (select max(seq) from oldest))
""")
