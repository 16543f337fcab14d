"""Committing: one run's transition on the full path (``_commit``: steps, retries,
suspensions, sent events), and the batch commit of many runs' transitions in one
statement (``COMMIT_BATCH_CTES``, run by the tick function; ``_batch`` builds its rows)."""

from __future__ import annotations

from slayq.store.postgres.sql.attempts import CURRENT, ended_attempt
from slayq.store.postgres.sql.common import HELD, NOW, backlog, compact

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


# One row per transition (``idx``: its place in the batch), its steps and its sleeps.
# JSON null arrives as SQL null: a result or output of None is stored as 'null'::json.
COMMIT_BATCH_CTES = compact(f"""
b as (
    select * from json_to_recordset(%(runs)s::json) as t(
        idx int, run uuid, token bigint, outcome text, ended text, finishes bool,
        result json, error json, retry_after interval, replayed int, executed int)
),
held as (
    -- Run by run, by primary key, fenced as HELD is (see there), locked in the order of
    -- b's rows: by id (batch_params), so two batches never wait on each other in a cycle.
    select r.*, b.*
    from b
    cross join lateral (
        select id, attempt, attempt_started_at, lease_owner, attempt_replayed,
               attempt_executed, parent_run_id is not null as parented
        from runs
        where id = b.run and status collate "C" = 'running' and lease_token = b.token
        for update
    ) as r
),
go as (select * from held where not (parented and finishes)),
recorded as (
    insert into steps (run_id, name, kind, output, error, finished_at, started_at, duration,
                       attempt)
    select go.id, s.name, s.kind, coalesce(s.output, 'null'::json), s.error, {NOW},
           coalesce(s.started_at, {NOW}),
           greatest(coalesce(s.duration, {NOW} - coalesce(s.started_at, {NOW})), interval '0'),
           go.attempt
    from json_to_recordset(%(steps)s::json) as s(
        idx int, name text, kind text, output json, error json, started_at timestamptz,
        duration interval)
    join go on go.idx = s.idx
),
{
    ended_attempt(
        "go",
        "e.ended",
        "e.error",
        now=NOW,
        where="e.ended is not null",
        replayed="e.attempt_replayed + e.replayed",
        executed="e.attempt_executed + e.executed",
    )
},
naps as (
    select n.idx, n.pos, n.name, n.spec,
           coalesce(n.until, {NOW} + n.delay_us * interval '1 microsecond') as expires_at
    from json_to_recordset(%(naps)s::json) as n(
        idx int, pos int, name text, until timestamptz, delay_us bigint, spec json)
),
napping as (
    insert into pending (run_id, name, pos, kind, expires_at, spec, started_at)
    select go.id, naps.name, naps.pos, 'sleep', naps.expires_at, naps.spec, {NOW}
    from go join naps on naps.idx = go.idx
),
wake as (
    select go.idx,
           case when count(naps.idx) = 0 then {NOW}
                when bool_or(naps.expires_at is null) then null
                else max(naps.expires_at) end as run_at,
           case when count(naps.idx) = 0 then 'queued' else 'sleeping' end as status
    from go left join naps on naps.idx = go.idx
    where go.outcome = 'sleep'
    group by go.idx
),
changed as (
    update runs as r set
        updated_at = {NOW},
        status = case go.outcome when 'continue' then r.status
                                 when 'retry' then 'queued'
                                 when 'sleep' then wake.status
                                 else go.outcome end,
        result = case when go.outcome = 'completed' then coalesce(go.result, 'null'::json)
                      else r.result end,
        error = case when go.outcome in ('failed', 'retry') then go.error else r.error end,
        attempt = r.attempt + (go.outcome = 'retry')::int,
        run_at = case go.outcome when 'continue' then r.run_at
                                 when 'retry' then {NOW} + go.retry_after
                                 when 'sleep' then wake.run_at end,
        finished_at = case when go.finishes then {NOW} end,
        lease_expires_at = case when go.outcome = 'continue' then r.lease_expires_at end,
        lease_owner = case when go.ended is null then r.lease_owner end,
        attempt_started_at = case when go.ended is null then r.attempt_started_at end,
        -- an attempt going on adds this commit's counts; an ended one starts from zero
        attempt_replayed = (r.attempt_replayed + go.replayed) * (go.ended is null)::int,
        attempt_executed = (r.attempt_executed + go.executed) * (go.ended is null)::int
    from go left join wake on wake.idx = go.idx
    where r.id = go.id
    returning r.queue, r.status, r.run_at, go.outcome
),
dropped_rules as (
    delete from cancel_rules where run_id in (select id from go where finishes)
),
-- A run due now, or a slot freed while runs wait: the queue is told, unless this
-- transaction's own claim serves it (it refills the slot itself).
notified as (
    select pg_notify(%(channel)s, q.queue)
    from (select distinct queue from changed
          where not %(claim_all)s and queue <> all(%(claiming)s::text[])
            and ((status = 'queued' and run_at <= {NOW})
                 or (outcome <> 'continue' and {backlog("changed.queue")}))) as q
)""")

# Over ``COMMIT_BATCH_CTES``, a row per transition, in the batch's order: whether its
# lease held, whether it is left to the full path (finishing answers a caller), and how
# many queues were notified (``notified`` runs only if read).
COMMIT_BATCH_ROWS = """select b.idx, held.id is not null, coalesce(held.parented and held.finishes, false),
       (select count(*) from notified)
from b left join held on held.idx = b.idx"""
