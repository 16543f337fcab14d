"""SQL for claiming, committing, leases, reads, schedules and retention.

The conventions of ``_queries`` hold here too.
"""

from __future__ import annotations

from slayq.store.postgres._queries import FINISHED, HELD, NOW, TIMED, compact

# -- committing --------------------------------------------------------------------

HELD_ROW = f"select {HELD} from runs where id = %(id)s::uuid for update"

INSERT_STEPS = compact(f"""
insert into steps (run_id, name, kind, output, error, finished_at)
select %(id)s::uuid, t.name, t.kind, t.output, t.error, {NOW}
from unnest(%(names)s::text[], %(kinds)s::text[], %(outputs)s::jsonb[], %(errors)s::jsonb[])
     with ordinality as t(name, kind, output, error, ord)
where exists (select 1 from runs where id = %(id)s::uuid and {HELD})
order by t.ord
""")

TOUCH = f"update runs set updated_at = {NOW} where id = %(id)s::uuid and {HELD}"

RETRY = compact(f"""
with retried as (
    update runs set
        status = 'queued', error = %(error)s::jsonb, attempt = attempt + 1,
        run_at = {NOW} + %(retry_after)s::interval,
        lease_expires_at = null, lease_owner = null, updated_at = {NOW}
    where id = %(id)s::uuid and {HELD}
    returning queue, run_at
)
select count(pg_notify(%(channel)s, queue)) from retried where run_at <= {NOW}
""")

# The whole commit in one statement, for the outcomes that touch no other run:
# Continue, a retry, or finishing a run that no caller waits for (``finishes`` says the
# outcome finishes the run; a run with a parent then changes nothing here and takes the
# transactional path). One statement is one transaction: no BEGIN, no COMMIT.
COMMIT_DIRECT = compact(f"""
with held as (
    select id, {HELD} as ok, parent_run_id is not null as parented
    from runs where id = %(id)s::uuid
    for update
),
go as (select id from held where ok and not (parented and %(finishes)s)),
recorded as (
    insert into steps (run_id, name, kind, output, error, finished_at)
    select go.id, t.name, t.kind, t.output, t.error, {NOW}
    from go,
         unnest(%(names)s::text[], %(kinds)s::text[], %(outputs)s::jsonb[],
                %(errors)s::jsonb[]) with ordinality as t(name, kind, output, error, ord)
    order by t.ord
),
changed as (
    update runs as r set
        updated_at = {NOW},
        status = case %(outcome)s::text when 'continue' then r.status
                                        when 'retry' then 'queued'
                                        else %(outcome)s::text end,
        result = case when %(outcome)s::text = 'completed' then %(result)s::jsonb
                      else r.result end,
        error = case when %(outcome)s::text in ('failed', 'retry') then %(error)s::jsonb
                     else r.error end,
        attempt = r.attempt + (%(outcome)s::text = 'retry')::int,
        run_at = case %(outcome)s::text when 'continue' then r.run_at
                                        when 'retry' then {NOW} + %(retry_after)s::interval end,
        finished_at = case when %(finishes)s then {NOW} end,
        lease_expires_at = case when %(outcome)s::text = 'continue' then r.lease_expires_at end,
        lease_owner = case when %(outcome)s::text = 'continue' then r.lease_owner end
    from go
    where r.id = go.id
    returning r.queue, r.status, r.run_at
),
dropped_rules as (
    delete from cancel_rules where %(finishes)s and run_id in (select id from go)
),
notified as (
    select pg_notify(%(channel)s, queue) from changed
    where status = 'queued' and run_at <= {NOW}
)
select ok, parented, (select count(*) from notified) from held
""")

INSERT_PENDING = compact(f"""
insert into pending (run_id, name, pos, kind, event, match_field, match_value, expires_at, spec)
select %(id)s::uuid, t.name, t.ord, t.kind, t.event, t.field, t.value,
       coalesce(t.until, {NOW} + t.delay), t.spec
from unnest(
    %(names)s::text[], %(kinds)s::text[], %(events)s::text[], %(fields)s::text[],
    %(values)s::jsonb[], %(untils)s::timestamptz[], %(delays)s::interval[], %(specs)s::jsonb[]
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
      and (%(field)s::text is null or e.data -> %(field)s::text = %(value)s::jsonb)
    order by e.seq
    limit 1
),
moved as (update runs set event_cursor = hit.seq from hit where runs.id = %(id)s::uuid),
gone as (
    delete from pending
    where run_id = %(id)s::uuid and name = %(name)s and exists (select 1 from hit)
    returning kind
)
insert into steps (run_id, name, kind, output, finished_at)
select %(id)s::uuid, %(name)s, gone.kind, hit.data, {NOW} from gone, hit
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
suspended as (
    update runs as r set
        status = case when s.n = 0 then 'queued' when s.only_sleeps then 'sleeping'
                      else 'waiting' end,
        run_at = case when s.n = 0 then {NOW} when s.forever then null else s.latest end,
        lease_expires_at = null, lease_owner = null, updated_at = {NOW}
    from s
    where r.id = %(id)s::uuid and r.{HELD}
    returning r.queue, r.status
)
select count(pg_notify(%(channel)s, queue)) from suspended where status = 'queued'
""")

# -- claiming ----------------------------------------------------------------------

# Queue groups: ``member`` lists every (queue, group) to count held slots by,
# ``route`` the group whose slots each queue uses. Due runs come from a loose scan over
# the (queue, priority) pairs of the runs_due index, then each pair's due runs in
# order, so a million runs sleeping until next year cost nothing here.
CLAIM = compact(f"""
with recursive
member as (select * from unnest(%(member_queues)s::text[], %(member_groups)s::int[]) as m(queue, grp)),
held as (
    select m.grp, count(*) as n
    from member as m
    join runs as r on r.queue = m.queue
    where r.status = 'running' and r.lease_expires_at > {NOW}
    group by m.grp
),
route as (
    select q.queue, q.grp, greatest(g.concurrency - coalesce(h.n, 0), 0) as free
    from unnest(%(route_queues)s::text[], %(route_groups)s::int[]) as q(queue, grp)
    join unnest(%(concurrency)s::int[]) with ordinality as g(concurrency, grp) on g.grp = q.grp
    left join held as h on h.grp = q.grp
),
pairs(queue, priority) as (
    (select queue, priority from runs where status in {TIMED} order by queue, priority limit 1)
    union all
    select nxt.queue, nxt.priority
    from pairs as p
    cross join lateral (
        select queue, priority from runs
        where status in {TIMED} and (queue, priority) > (p.queue, p.priority)
        order by queue, priority
        limit 1
    ) as nxt
),
due as (
    select d.*
    from pairs as p
    left join route as c on c.queue = p.queue
    cross join lateral (
        select r.id, r.queue, r.priority, r.run_at, r.seq
        from runs as r
        where r.queue = p.queue and r.priority = p.priority
          and r.status in {TIMED} and r.run_at <= {NOW}
        order by r.run_at, r.seq
        limit case when %(all)s then %(limit)s else least(%(limit)s, coalesce(c.free, 0)) end
        for update of r skip locked
    ) as d
    where %(all)s or c.queue is not null
),
expired as (
    -- every lease that ran out: few, as there are only as many as runs in flight
    select r.id, r.queue, r.priority, r.run_at, r.seq, r.attempt >= r.max_attempts as exhausted
    from runs as r
    where r.status = 'running' and r.lease_expires_at <= {NOW}
      and (%(all)s or r.queue in (select queue from route))
    for update of r skip locked
),
ranked as (
    select c.*, coalesce(c.run_at, {NOW}) as due_at, k.free,
           -- claimable runs of the group up to this one; an exhausted run is not claimed
           count(*) filter (where not c.exhausted) over (
               partition by k.grp order by c.priority, coalesce(c.run_at, {NOW}), c.seq
               rows unbounded preceding
           ) as nth_in_group
    from (select *, false as exhausted from due union all select * from expired) as c
    left join route as k on k.queue = c.queue
),
placed as (
    select r.*,
           (%(all)s or r.nth_in_group <= r.free) and not r.exhausted as fits,
           count(*) filter (where (%(all)s or r.nth_in_group <= r.free) and not r.exhausted)
               over (order by r.priority, r.due_at, r.seq rows unbounded preceding) as nth
    from ranked as r
),
-- As MemoryStore walks due runs in order: a run is claimed while the limit and its
-- group's slots last; a run whose lease ran out on its last attempt fails instead, if
-- the walk reaches it (no slot is spent on it).
chosen as (select * from placed where fits and nth <= %(limit)s),
doomed as (
    select * from placed
    where exhausted and (%(all)s or nth_in_group < free) and nth < %(limit)s
),
claimed as (
    update runs as r set
        status = 'running',
        lease_token = nextval('lease_tokens'),
        lease_owner = %(owner)s,
        lease_expires_at = {NOW} + %(lease_for)s::interval,
        updated_at = {NOW},
        -- taking over an expired lease: its holder is presumed dead, an attempt is spent
        attempt = case when r.status = 'running' then r.attempt + 1 else r.attempt end,
        error = case when r.status = 'running' then %(lease_expired)s::jsonb else r.error end
    from chosen as c
    where r.id = c.id
    returning r.id, r.lease_token, r.lease_expires_at, r.event, r.data, r.queue, r.attempt,
              r.max_attempts, c.priority, c.due_at, c.seq
)
select id::text, lease_token, lease_expires_at, event, data, queue, attempt, max_attempts,
       null::text as parent, priority, due_at, seq
from claimed
union all
select d.id::text, null, null, null, null, null, null, null, r.parent_run_id::text,
       d.priority, d.due_at, d.seq
from doomed as d
join runs as r on r.id = d.id
order by priority, due_at, seq
""")

# A claimed run that was suspended: whatever is still pending has expired (it was due)
# and resolves to null.
EXPIRE_PENDING = compact(f"""
with gone as (
    delete from pending where run_id = any(%(ids)s::uuid[]) returning run_id, name, kind, pos
)
insert into steps (run_id, name, kind, output, finished_at)
select run_id, name, kind, 'null'::jsonb, {NOW} from gone order by run_id, pos
on conflict (run_id, name) do nothing
""")

STEP_JSON = """json_build_object('name', s.name, 'kind', s.kind, 'output', s.output,
    'error', s.error, 'finished_at', s.finished_at)"""

MEMOS = compact(f"""
select s.run_id::text, json_agg({STEP_JSON} order by s.id)::text
from steps as s
where s.run_id = any(%(ids)s::uuid[])
group by s.run_id
""")

# -- leases ------------------------------------------------------------------------

EXTEND = compact(f"""
update runs as r set lease_expires_at = {NOW} + %(lease_for)s::interval
from unnest(%(ids)s::uuid[], %(tokens)s::bigint[]) as t(id, token)
where r.id = t.id and r.status = 'running' and r.lease_token = t.token
returning r.id::text, r.lease_token, r.lease_expires_at
""")

RELEASE = compact(f"""
with released as (
    update runs set status = 'queued', run_at = {NOW}, lease_expires_at = null,
        lease_owner = null, updated_at = {NOW}
    where id = %(id)s::uuid and {HELD}
    returning queue
)
select count(pg_notify(%(channel)s, queue)) from released
""")

# -- reading -----------------------------------------------------------------------

GET_RUN = compact(f"""
select json_build_object(
    'id', r.id, 'event', r.event, 'queue', r.queue, 'status', r.status, 'data', r.data,
    'attempts', r.attempt, 'max_attempts', r.max_attempts,
    'steps', coalesce(
        (select json_agg({STEP_JSON} order by s.id) from steps as s where s.run_id = r.id),
        '[]'::json),
    'pending', coalesce(
        (select json_agg(p.spec order by p.pos) from pending as p where p.run_id = r.id),
        '[]'::json),
    'created_at', r.created_at, 'updated_at', r.updated_at, 'run_at', r.run_at,
    'result', r.result, 'error', r.error, 'priority', r.priority, 'key', r.key,
    'parent', case when r.parent_run_id is not null then
        json_build_object('run_id', r.parent_run_id, 'step', r.parent_step) end,
    'finished_at', r.finished_at
)::text
from runs as r
where r.id = %(id)s::uuid
""")

RUN_FOR_UPDATE = "select id from runs where id = %(id)s::uuid for update"

NEXT_WAKEUP = compact(f"""
with recursive pairs(queue, priority) as (
    (select queue, priority from runs where status in {TIMED} order by queue, priority limit 1)
    union all
    select nxt.queue, nxt.priority
    from pairs as p
    cross join lateral (
        select queue, priority from runs
        where status in {TIMED} and (queue, priority) > (p.queue, p.priority)
        order by queue, priority
        limit 1
    ) as nxt
)
select least(
    (select min(next_at) from schedules),
    (select min(lease_expires_at) from runs where status = 'running'),
    (select min(first.run_at)
     from pairs as p
     cross join lateral (
         select run_at from runs
         where queue = p.queue and priority = p.priority and status in {TIMED}
           and run_at is not null
         order by run_at
         limit 1
     ) as first)
)
""")

# -- schedules ---------------------------------------------------------------------

SCHEDULES = "select event, cron, next_at from schedules order by event for update"

DROP_SCHEDULES = "delete from schedules where not (event = any(%(events)s::text[]))"

UPSERT_SCHEDULES = compact("""
insert into schedules (event, cron, template, next_at)
select * from unnest(%(events)s::text[], %(crons)s::text[], %(templates)s::jsonb[],
                     %(next_ats)s::timestamptz[])
on conflict (event) do update
    set cron = excluded.cron, template = excluded.template, next_at = excluded.next_at
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

DELETE_FINISHED = compact(f"""
with doomed as (
    select id from runs
    where finished_at < {NOW} - %(older_than)s::interval
    order by finished_at
    limit %(batch)s
    for update skip locked
),
deleted as (delete from runs where id in (select id from doomed) returning 1)
select count(*) from deleted
""")

# Logged events no unfinished run can still see: at or before every such run's cursor
# (a run created later starts past every event already logged).
PRUNE_EVENTS = compact(f"""
delete from events
where seq in (
    select seq from events
    where created_at < {NOW} - %(older_than)s::interval
      and seq <= coalesce(
          (select min(event_cursor) from runs where status not in {FINISHED}),
          (select max(seq) from events))
    order by seq
    limit %(batch)s
)
""")
