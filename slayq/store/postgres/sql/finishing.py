"""Finishing runs (a cancel, a failed takeover, an invoked run's end) and resolving
pending steps, which wake the runs that waited on them."""

from __future__ import annotations

from slayq.store.postgres.sql.attempts import CURRENT, ended_attempt
from slayq.store.postgres.sql.common import FINISHED, HELD, NOW, TIMED, backlog, compact


def finish_runs(targets: str) -> str:
    """Finish the unfinished runs selected by ``targets`` (a query of ``id``s)."""
    return compact(f"""
with targets as ({targets}),
-- locked before the update reads it: a run a worker holds ends its attempt too
locked as (
    select {CURRENT}, status = 'running' as held from runs
    where id in (select id from targets) and status not in {FINISHED}
    order by id
    for update
),
ending as (select * from locked where held),
{ended_attempt("ending", "%(status)s::text", "%(error)s::json", now=NOW)},
finished as (
    update runs set
        status = %(status)s,
        result = coalesce(%(result)s::json, result),
        error = coalesce(%(error)s::json, error),
        finished_at = {NOW}, updated_at = {NOW},
        run_at = null, lease_expires_at = null, lease_owner = null,
        attempt_started_at = null, attempt_replayed = 0, attempt_executed = 0
    where id in (select id from locked)
    returning id, queue
),
dropped_pending as (delete from pending where run_id in (select id from finished)),
dropped_rules as (delete from cancel_rules where run_id in (select id from finished)),
notified as (
    select pg_notify(%(channel)s, q.queue) from (select distinct queue from finished) as q
    where {backlog("q.queue")}
)
select id::text, (select count(*) from notified) from finished
""")


FINISH_HELD = finish_runs(f"select id from runs where id = %(id)s::uuid and {HELD}")
FINISH_IDS = finish_runs("select unnest(%(ids)s::uuid[]) as id")


LOCK_PARENTS = compact(f"""
select id from runs
where id in (
    select parent_run_id from runs
    where id = any(%(ids)s::uuid[]) and parent_run_id is not null and status in {FINISHED}
)
order by id
for update
""")


def resolve_pending(gone: str) -> str:
    """Resolve pending steps: ``gone`` deletes them, returning (run_id, name, kind, pos,
    output, error, ord, seq, started_at): ``ord`` orders the records of one run (then ``pos``),
    ``seq`` is the logged event that answered (the run's event cursor moves past it).
    They become step records, and each run is due again when no pending step is left,
    else at the latest expiry of those left."""
    return compact(f"""
with gone as ({gone}),
recorded as (
    insert into steps (run_id, name, kind, output, error, finished_at, started_at, duration,
                       attempt)
    select g.run_id, g.name, g.kind, g.output, g.error, {NOW}, g.started_at,
           {NOW} - g.started_at, r.attempt
    from gone as g join runs as r on r.id = g.run_id
    order by g.run_id, g.ord, g.pos
    on conflict (run_id, name) do nothing
),
remaining as (
    select g.run_id, g.seq,
           count(p.run_id) as n,
           bool_or(p.run_id is not null and p.expires_at is null) as forever,
           max(p.expires_at) as latest,
           coalesce(bool_and(p.kind = 'sleep'), true) as only_sleeps
    from (select run_id, max(seq) as seq from gone group by run_id) as g
    left join pending as p
      on p.run_id = g.run_id
     and not exists (select 1 from gone as d where d.run_id = p.run_id and d.name = p.name)
    group by g.run_id, g.seq
),
woken as (
    update runs as r set
        updated_at = {NOW},
        event_cursor = greatest(r.event_cursor, coalesce(s.seq, r.event_cursor)),
        status = case when r.status not in {TIMED} then r.status
                      when s.n = 0 then 'queued'
                      when s.only_sleeps then 'sleeping'
                      else 'waiting' end,
        -- a running run here is one a claim in this transaction took while a callee's
        -- failure answered it: MemoryStore rescheduled it before it was claimed
        run_at = case when r.status in {FINISHED} then r.run_at
                      when s.n = 0 then {NOW}
                      when s.forever then null
                      else s.latest end
    from remaining as s
    where r.id = s.run_id
    returning r.queue, r.status
)
select count(pg_notify(%(channel)s, q.queue))
from (select distinct queue from woken where status = 'queued') as q
""")


RESOLVE_PARENTS = resolve_pending(
    f"""
    delete from pending as p
    using runs as c
    where c.id = any(%(ids)s::uuid[]) and c.parent_run_id is not null
      and c.status in {FINISHED}
      and p.run_id = c.parent_run_id and p.name = c.parent_step
    returning p.run_id, p.name, p.kind, p.pos,
        case when c.status = 'completed' then c.result end as output,
        case when c.status = 'completed' then null
             when c.status = 'cancelled' then %(cancelled)s::json
             else coalesce(c.error, %(cancelled)s::json) end as error,
        0 as ord, null::bigint as seq, p.started_at
    """
)
