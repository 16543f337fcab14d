"""SQL for committing, leases, reads, schedules and retention (claiming lives in ``_claim``).

The conventions of ``_queries`` hold here too.
"""

from __future__ import annotations

from slayq.store.postgres._history import CURRENT, HISTORY_JSON, STEP_INFO_JSON, ended_attempt
from slayq.store.postgres._queries import HELD, NOW, PAIRS, TIMED, backlog, compact

# -- committing --------------------------------------------------------------------

# Locks the run, checks the lease and adds the commit's counts to its current attempt.
HELD_ROW = compact(f"""
update runs set attempt_replayed = attempt_replayed + %(replayed)s,
                attempt_executed = attempt_executed + %(executed)s
where id = %(id)s::uuid and {HELD}
returning true
""")

# A step without a start (a send) began when it was recorded; without a duration it
# took from its start to now.
_STEP_TIMES = f"""coalesce(t.started_at, {NOW}),
    greatest(coalesce(t.duration, {NOW} - coalesce(t.started_at, {NOW})), interval '0')"""
_STEP_ARRAYS = """unnest(%(names)s::text[], %(kinds)s::text[], %(outputs)s::json[],
           %(errors)s::json[], %(started_ats)s::timestamptz[], %(durations)s::interval[])
    with ordinality as t(name, kind, output, error, started_at, duration, ord)"""

INSERT_STEPS = compact(f"""
insert into steps (run_id, name, kind, output, error, finished_at, started_at, duration, attempt)
select r.id, t.name, t.kind, t.output, t.error, {NOW}, {_STEP_TIMES}, r.attempt
from runs as r, {_STEP_ARRAYS}
where r.id = %(id)s::uuid and r.{HELD}
order by t.ord
""")

TOUCH = f"update runs set updated_at = {NOW} where id = %(id)s::uuid and {HELD}"

RETRY = compact(f"""
with ending as (select {CURRENT} from runs where id = %(id)s::uuid and {HELD}),
{ended_attempt("ending", "'retrying'", "%(error)s::json", now=NOW)},
retried as (
    update runs set
        status = 'queued', error = %(error)s::json, attempt = attempt + 1,
        run_at = {NOW} + %(retry_after)s::interval,
        attempt_started_at = null, attempt_replayed = 0, attempt_executed = 0,
        lease_expires_at = null, lease_owner = null, updated_at = {NOW}
    where id = %(id)s::uuid and {HELD}
    returning queue, run_at
)
select count(pg_notify(%(channel)s, queue)) from retried
where run_at <= {NOW} or {backlog("retried.queue")}
""")

# The whole commit in one statement, for the outcomes that touch no other run and no
# event: Continue, a retry, a suspension on sleeps only, or finishing a run that no
# caller waits for (``finishes``: a run with a parent then changes nothing here and
# takes the transactional path). One statement is one transaction: no BEGIN, no COMMIT.
COMMIT_DIRECT = compact(f"""
with held as (
    select {CURRENT}, {HELD} as ok, parent_run_id is not null as parented
    from runs where id = %(id)s::uuid
    for update
),
go as (select * from held where ok and not (parented and %(finishes)s)),
recorded as (
    insert into steps (run_id, name, kind, output, error, finished_at, started_at, duration,
                       attempt)
    select go.id, t.name, t.kind, t.output, t.error, {NOW}, {_STEP_TIMES}, go.attempt
    from go, {_STEP_ARRAYS}
    order by t.ord
),
{
    ended_attempt(
        "go",
        "%(ended)s",
        "%(error)s::json",
        now=NOW,
        where="%(ended)s::text is not null",
        replayed="e.attempt_replayed + %(replayed)s",
        executed="e.attempt_executed + %(executed)s",
    )
},
naps as (
    select t.*, coalesce(t.until, {NOW} + t.delay) as expires_at
    from unnest(%(nap_names)s::text[], %(nap_untils)s::timestamptz[],
                %(nap_delays)s::interval[], %(nap_specs)s::json[])
         with ordinality as t(name, until, delay, spec, ord)
),
napping as (
    insert into pending (run_id, name, pos, kind, expires_at, spec, started_at)
    select go.id, naps.name, naps.ord, 'sleep', naps.expires_at, naps.spec, {NOW} from go, naps
),
wake as (
    select case when count(*) = 0 then {NOW}
                when bool_or(expires_at is null) then null
                else max(expires_at) end as run_at,
           case when count(*) = 0 then 'queued' else 'sleeping' end as status
    from naps
),
changed as (
    update runs as r set
        updated_at = {NOW},
        status = case %(outcome)s::text when 'continue' then r.status
                                        when 'retry' then 'queued'
                                        when 'sleep' then wake.status
                                        else %(outcome)s::text end,
        result = case when %(outcome)s::text = 'completed' then %(result)s::json
                      else r.result end,
        error = case when %(outcome)s::text in ('failed', 'retry') then %(error)s::json
                     else r.error end,
        attempt = r.attempt + (%(outcome)s::text = 'retry')::int,
        run_at = case %(outcome)s::text when 'continue' then r.run_at
                                        when 'retry' then {NOW} + %(retry_after)s::interval
                                        when 'sleep' then wake.run_at end,
        finished_at = case when %(finishes)s then {NOW} end,
        lease_expires_at = case when %(outcome)s::text = 'continue' then r.lease_expires_at end,
        lease_owner = case when %(ended)s::text is null then r.lease_owner end,
        attempt_started_at = case when %(ended)s::text is null then r.attempt_started_at end,
        attempt_replayed = case when %(ended)s::text is null
                                then r.attempt_replayed + %(replayed)s else 0 end,
        attempt_executed = case when %(ended)s::text is null
                                then r.attempt_executed + %(executed)s else 0 end
    from go, wake
    where r.id = go.id
    returning r.queue, r.status, r.run_at
),
dropped_rules as (
    delete from cancel_rules where %(finishes)s and run_id in (select id from go)
),
notified as (
    select pg_notify(%(channel)s, queue) from changed
    where (status = 'queued' and run_at <= {NOW})
       or (%(outcome)s::text <> 'continue' and {backlog("changed.queue")})
)
select ok, parented, (select count(*) from notified) from held
""")

INSERT_PENDING = compact(f"""
insert into pending (run_id, name, pos, kind, event, match_field, match_value, expires_at, spec,
                     started_at)
select %(id)s::uuid, t.name, t.ord, t.kind, t.event, t.field, t.value,
       coalesce(t.until, {NOW} + t.delay), t.spec, {NOW}
from unnest(
    %(names)s::text[], %(kinds)s::text[], %(events)s::text[], %(fields)s::text[],
    %(values)s::jsonb[], %(untils)s::timestamptz[], %(delays)s::interval[], %(specs)s::json[]
) with ordinality as t(name, kind, event, field, value, until, delay, spec, ord)
where exists (select 1 from runs where id = %(id)s::uuid and {HELD})
""")

# A new wait first looks in the event log, past the run's cursor: the first match
# answers it and moves the cursor, so the next wait looks past that event.
SCAN_LOG = compact(f"""
with hit as (
    select e.seq, e.data
    from runs as r
    join events as e on e.name = %(event)s and e.seq > r.event_cursor
    where r.id = %(id)s::uuid and r.{HELD}
      and (%(field)s::text is null or (e.data -> %(field)s::text)::jsonb = %(value)s::jsonb)
    order by e.seq
    limit 1
),
moved as (update runs set event_cursor = hit.seq from hit where runs.id = %(id)s::uuid),
gone as (
    delete from pending
    where run_id = %(id)s::uuid and name = %(name)s and exists (select 1 from hit)
    returning kind, started_at
)
insert into steps (run_id, name, kind, output, finished_at, started_at, duration, attempt)
select %(id)s::uuid, %(name)s, gone.kind, hit.data, {NOW}, gone.started_at,
       {NOW} - gone.started_at, (select attempt from runs where id = %(id)s::uuid)
from gone, hit
on conflict (run_id, name) do nothing
""")

SUSPEND = compact(f"""
with s as (
    select count(*) as n,
           bool_or(expires_at is null) as forever,
           max(expires_at) as latest,
           coalesce(bool_and(kind = 'sleep'), true) as only_sleeps
    from pending where run_id = %(id)s::uuid
),
ending as (select {CURRENT} from runs where id = %(id)s::uuid and {HELD}),
{ended_attempt("ending", "'suspended'", "null::json", now=NOW)},
suspended as (
    update runs as r set
        status = case when s.n = 0 then 'queued' when s.only_sleeps then 'sleeping'
                      else 'waiting' end,
        run_at = case when s.n = 0 then {NOW} when s.forever then null else s.latest end,
        attempt_started_at = null, attempt_replayed = 0, attempt_executed = 0,
        lease_expires_at = null, lease_owner = null, updated_at = {NOW}
    from s
    where r.id = %(id)s::uuid and r.{HELD}
    returning r.queue, r.status
)
select count(pg_notify(%(channel)s, queue)) from suspended
where status = 'queued' or {backlog("suspended.queue")}
""")

STEP_JSON = """json_build_object('name', s.name, 'kind', s.kind, 'output', s.output,
    'error', s.error, 'finished_at', s.finished_at)"""

# -- leases ------------------------------------------------------------------------

# Run by run, by primary key, fenced as HELD is (see there), locked in id order.
EXTEND = compact(f"""
with held as (
    select r.id
    from (select * from unnest(%(ids)s::uuid[], %(tokens)s::bigint[]) as t(id, token)
          order by id) as t
    cross join lateral (
        select id from runs
        where id = t.id and status collate "C" = 'running' and lease_token = t.token
        for update
    ) as r
)
update runs as r set lease_expires_at = {NOW} + %(lease_for)s::interval, heartbeat_at = {NOW}
where r.id in (select id from held)
returning r.id::text, r.lease_token, r.lease_expires_at
""")

# ``error`` takes the column's own type (json or jsonb): the parameter is left untyped.
RELEASE = compact(f"""
with ending as (select {CURRENT} from runs where id = %(id)s::uuid and {HELD} for update),
{ended_attempt("ending", "'released'", "%(error)s::json", now=NOW)},
released as (
    update runs set status = 'queued', run_at = {NOW} + coalesce(%(delay)s::interval, '0'),
        error = coalesce(%(error)s, error), lease_expires_at = null,
        lease_owner = null, updated_at = {NOW},
        attempt_started_at = null, attempt_replayed = 0, attempt_executed = 0
    where id in (select id from ending)
    returning queue, run_at
)
select count(pg_notify(%(channel)s, queue)) from released where run_at <= {NOW}
""")

# -- reading -----------------------------------------------------------------------

GET_RUN = compact(f"""
select json_build_object(
    'id', r.id, 'event', r.event, 'queue', r.queue, 'status', r.status, 'data', r.data,
    'attempts', r.attempt, 'max_attempts', r.max_attempts,
    'steps', coalesce(
        (select json_agg({STEP_INFO_JSON} order by s.id) from steps as s where s.run_id = r.id),
        '[]'::json),
    'pending', coalesce(
        (select json_agg(p.spec order by p.pos) from pending as p where p.run_id = r.id),
        '[]'::json),
    'created_at', r.created_at, 'updated_at', r.updated_at, 'run_at', r.run_at,
    'result', r.result, 'error', r.error, 'priority', r.priority, 'key', r.key,
    'parent', case when r.parent_run_id is not null then
        json_build_object('run_id', r.parent_run_id, 'step', r.parent_step) end,
    'finished_at', r.finished_at, 'endpoint', r.endpoint, 'history', {HISTORY_JSON},
    'forked_from', r.forked_from, 'flow', r.flow
)::text
from runs as r
where r.id = %(id)s::uuid
""")

# What may hold back a run under flow control (see RunInfo.held_back): per concurrency
# bucket of it, the runs of its queue holding a lease (as the claim counts them), its
# throttle's state if it is a first start (no lease token yet), and the store's now.
FLOW_STATE = compact(f"""
select
    (select coalesce(json_object_agg(b.bucket, (
        select count(*) from runs as h
        cross join lateral json_array_elements(h.flow -> 'concurrency') as c(slot)
        where h.queue = r.queue and h.status = 'running' and h.gated
          and h.lease_expires_at > {NOW} and c.slot ->> 'bucket' = b.bucket)), '{{}}')
     from (select s ->> 'bucket' as bucket
           from json_array_elements(r.flow -> 'concurrency') as s) as b)::text,
    (select t.tat from flow_throttles as t
     where r.lease_token is null and t.bucket = r.flow -> 'throttle' ->> 'bucket'),
    {NOW}
from runs as r
where r.id = %(id)s::uuid
""")

RUN_FOR_UPDATE = "select id from runs where id = %(id)s::uuid for update"

# Gated runs (flow control) count from their due time only while it is ahead: one due
# now and not claimed waits for a slot (freed by a commit, which notifies, or by a lease
# expiring, counted here) or for its throttle (flow_throttles.blocked_until).
NEXT_WAKEUP = compact(f"""
with recursive {PAIRS}
select least(
    (select min(next_at) from schedules),
    (select min(lease_expires_at) from runs
     where status = 'running' and queue not in (select queue from paused_queues)),
    (select min(least(plain.run_at, gated.run_at))
     from pairs as p
     left join lateral (
         select run_at from runs
         where queue = p.queue and priority = p.priority and status in {TIMED} and not gated
           and run_at is not null
         order by run_at
         limit 1
     ) as plain on true
     left join lateral (
         select run_at from runs
         where queue = p.queue and priority = p.priority and status in {TIMED} and gated
           and run_at > {NOW}
         order by run_at
         limit 1
     ) as gated on true
     where p.queue not in (select queue from paused_queues)),
    (select min(blocked_until) from flow_throttles where blocked_until > {NOW})
)
""")

# Due but unclaimed runs per queue, to spot queues that nobody serves: per (queue,
# priority) pair, plain and gated, only the due entries of runs_due are read, not the
# sleeping ones.
DUE_BY_QUEUE = compact(f"""
with recursive {PAIRS}
select p.queue, sum(due.n)::bigint
from pairs as p
cross join (values (false), (true)) as g(gated)
cross join lateral (
    select count(*) as n from runs
    where queue = p.queue and priority = p.priority and status in {TIMED}
      and gated = g.gated and run_at <= {NOW}
) as due
group by p.queue
having sum(due.n) > 0
""")

# -- schedules ---------------------------------------------------------------------

SCHEDULES = "select event, cron, next_at from schedules order by event for update"

# An app's registration drops the schedules it does not keep of the events it runs
# (whoever registered them) and its own of events it no longer runs; no other app's.
DROP_SCHEDULES = compact("""
delete from schedules
where not (event = any(%(kept)s::text[]))
  and (event = any(%(runs)s::text[]) or app = %(app)s)
""")

UPSERT_SCHEDULES = compact("""
insert into schedules (event, cron, template, next_at, app)
select t.*, %(app)s
from unnest(%(events)s::text[], %(crons)s::text[], %(templates)s::json[],
            %(next_ats)s::timestamptz[]) as t
on conflict (event) do update
    set cron = excluded.cron, template = excluded.template, next_at = excluded.next_at,
        app = excluded.app
""")

DUE_SCHEDULES = compact(f"""
select event, cron, template::text, next_at, {NOW}
from schedules
where next_at <= {NOW}
order by event
""")

# Compare-and-set: of several processes firing the same tick, one moves next_at.
ADVANCE_SCHEDULES = compact("""
update schedules as s set next_at = t.next_at
from unnest(%(events)s::text[], %(ticks)s::timestamptz[], %(next_ats)s::timestamptz[])
     as t(event, tick, next_at)
where s.event = t.event and s.next_at = t.tick
returning s.event
""")

# -- retention ---------------------------------------------------------------------

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
