"""The SQL of the Postgres store, one statement per constant.

Conventions that hold for every statement:

- Names are unqualified; connections run with ``search_path`` set to the store's schema.
- ``NOW`` is the store's clock: a test's virtual time when one is given, else the
  database's ``now()``, so that a drifting application clock never decides what is due.
- Every name, field and value is a bound parameter; JSON paths are ``data -> %(field)s``.
- A rule or wait on a field matches an event whose data has the field with an equal JSON
  value; data without the field matches nothing, whatever the value.
- Statements that change a run whose lease the caller claims to hold carry the lease in
  their WHERE clause (``HELD``), so a commit whose lease was lost changes nothing even
  though its statements were already pipelined.
- A statement that reads tables another transaction may change runs *after* the one
  that locked the rows it cares about: under READ COMMITTED each statement takes a fresh
  snapshot, but a statement's own snapshot predates the locks it waits for.
"""

from __future__ import annotations


def compact(text: str) -> str:
    """The statement on one line, comments dropped: psycopg caches the parsing of
    statements up to 4 kB, and the server logs read better."""
    code = (line.split("--", 1)[0] for line in text.splitlines())
    return " ".join(" ".join(code).split())


NOW = "coalesce(%(now)s::timestamptz, now())"
FINISHED = "('completed', 'failed', 'cancelled')"
TIMED = "('queued', 'sleeping', 'waiting')"  # statuses whose run_at says when they are due
HELD = "status = 'running' and lease_token = %(token)s"
CLOCK = f"select {NOW}"

# Advisory lock namespaces (the first key of the two-key form).
EVENT_LOCKS = 0x736C_0001
QUEUE_LOCKS = 0x736C_0002
SCHEDULE_LOCKS = 0x736C_0003

# Locks sorted by key so that two transactions never wait on each other in a cycle.
# An event name is locked shared by senders of logged events and exclusively by a run
# registering a wait on it: a sender then sees the wait, or the wait sees the event.
LOCK_NAMES = compact("""
select count(case when t.exclusive then pg_advisory_xact_lock(%(ns)s, hashtext(t.name))
                  else pg_advisory_xact_lock_shared(%(ns)s, hashtext(t.name)) end)
from (
    select * from unnest(%(names)s::text[], %(exclusive)s::bool[]) as u(name, exclusive)
    order by hashtext(u.name), u.name
) as t
""")

# -- runs and events ---------------------------------------------------------------

INSERT_EVENTS = compact(f"""
insert into events (name, data, created_at)
select t.name, t.data, {NOW}
from unnest(%(names)s::text[], %(datas)s::jsonb[]) with ordinality as t(name, data, ord)
order by t.ord
returning seq
""")

# Which of these event names can cancel or wake anything at all: most cannot, and
# their batch then takes the set-based path.
INTERESTING_NAMES = compact("""
select n.name,
       exists (select 1 from cancel_rules as c where c.event = n.name),
       exists (select 1 from pending as p where p.kind = 'wait' and p.event = n.name)
from unnest(%(names)s::text[]) as n(name)
""")

# A run starts unless its (event, key) exists. A run whose cursor is null saw no event
# of its batch logged before it: it gets the newest logged event before the batch's.
INSERT_RUNS = compact(f"""
with x as (
    select *
    from unnest(
        %(idx)s::int[], %(ids)s::uuid[], %(events)s::text[], %(datas)s::jsonb[],
        %(queues)s::text[], %(priorities)s::int[], %(max_attempts)s::int[], %(keys)s::text[],
        %(delays)s::interval[], %(run_ats)s::timestamptz[], %(parent_ids)s::uuid[],
        %(parent_steps)s::text[], %(cursors)s::bigint[], %(cancel_on)s::jsonb[]
    ) as t(idx, id, event, data, queue, priority, max_attempts, key, delay, run_at,
           parent_run_id, parent_step, cursor, cancel_on)
    where %(guard_id)s::uuid is null
       or exists (select 1 from runs where id = %(guard_id)s::uuid and {HELD})
),
base as (
    select coalesce(max(seq), 0) as seq from events
    where seq < coalesce(%(first_seq)s::bigint, 9223372036854775807)
),
inserted as (
    insert into runs (id, event, data, queue, priority, max_attempts, key, parent_run_id,
                      parent_step, created_at, updated_at, run_at, event_cursor)
    select x.id, x.event, x.data, x.queue, x.priority, x.max_attempts, x.key,
           x.parent_run_id, x.parent_step, {NOW}, {NOW},
           coalesce(x.run_at, {NOW} + coalesce(x.delay, interval '0')),
           coalesce(x.cursor, base.seq)
    from x, base
    order by x.idx
    on conflict (event, key) where key is not null do nothing
    returning id, event, key
),
rules as (
    insert into cancel_rules (run_id, event, field, value)
    select i.id, r.rule ->> 'event', r.rule ->> 'field', coalesce(r.rule -> 'value', 'null')
    from inserted as i
    join x on x.id = i.id
    cross join lateral jsonb_array_elements(x.cancel_on) as r(rule)
)
select x.idx, coalesce(mine.id, twin.id, old.id)::text
from x
left join inserted as mine on mine.id = x.id
left join inserted as twin on x.key is not null and twin.event = x.event and twin.key = x.key
left join runs as old on x.key is not null and old.event = x.event and old.key = x.key
""")

# A key taken by a transaction that committed after INSERT_RUNS took its snapshot.
KEYED_RUNS = compact("""
select t.event, t.key, r.id::text
from unnest(%(events)s::text[], %(keys)s::text[]) as t(event, key)
join runs as r on r.event = t.event and r.key = t.key
""")

NOTIFY = "select count(pg_notify(%(channel)s, q)) from unnest(%(queues)s::text[]) as q"

# The unfinished runs that events of a batch may cancel or wake, locked before the
# per-event statements that change them.
LOCK_AFFECTED = compact(f"""
with ev as (select * from unnest(%(names)s::text[], %(datas)s::jsonb[]) as t(name, data)),
hits as (
    select c.run_id from ev
    cross join lateral jsonb_each(ev.data) as kv
    join cancel_rules as c on c.event = ev.name and c.field = kv.key and c.value = kv.value
    union
    select p.run_id from ev
    join pending as p on p.kind = 'wait' and p.event = ev.name and p.match_field is null
    union
    select p.run_id from ev
    cross join lateral jsonb_each(ev.data) as kv
    join pending as p
      on p.kind = 'wait' and p.event = ev.name
     and p.match_field = kv.key and p.match_value = kv.value
)
select id::text from runs
where id in (select run_id from hits) and status not in {FINISHED}
order by id
for update
""")


def _finish(targets: str) -> str:
    """Finish the unfinished runs selected by ``targets`` (a query of ``id``s)."""
    return compact(f"""
with targets as ({targets}),
finished as (
    update runs set
        status = %(status)s,
        result = coalesce(%(result)s::jsonb, result),
        error = coalesce(%(error)s::jsonb, error),
        finished_at = {NOW}, updated_at = {NOW},
        run_at = null, lease_expires_at = null, lease_owner = null
    where id in (select id from targets) and status not in {FINISHED}
    returning id
),
dropped_pending as (delete from pending where run_id in (select id from finished)),
dropped_rules as (delete from cancel_rules where run_id in (select id from finished))
select id::text from finished
""")


FINISH_HELD = _finish(f"select id from runs where id = %(id)s::uuid and {HELD}")
FINISH_IDS = _finish("select unnest(%(ids)s::uuid[]) as id")
CANCEL_MATCHING = _finish(
    """
    select c.run_id as id
    from jsonb_each(%(data)s::jsonb) as kv
    join cancel_rules as c on c.event = %(name)s and c.field = kv.key and c.value = kv.value
    where c.run_id = any(%(allowed)s::uuid[])
    """
)

LOCK_PARENTS = compact(f"""
select id from runs
where id in (
    select parent_run_id from runs
    where id = any(%(ids)s::uuid[]) and parent_run_id is not null and status in {FINISHED}
)
order by id
for update
""")


def _resolve(gone: str) -> str:
    """Resolve pending steps: ``gone`` deletes them, returning
    (run_id, name, kind, pos, output, error); they become step records, and each run
    is due again when none is left, else at the latest expiry of those left."""
    return compact(f"""
with gone as ({gone}),
recorded as (
    insert into steps (run_id, name, kind, output, error, finished_at)
    select run_id, name, kind, output, error, {NOW} from gone order by run_id, pos
    on conflict (run_id, name) do nothing
),
remaining as (
    select g.run_id,
           count(p.run_id) as n,
           bool_or(p.run_id is not null and p.expires_at is null) as forever,
           max(p.expires_at) as latest,
           coalesce(bool_and(p.kind = 'sleep'), true) as only_sleeps
    from (select distinct run_id from gone) as g
    left join pending as p
      on p.run_id = g.run_id
     and not exists (select 1 from gone as d where d.run_id = p.run_id and d.name = p.name)
    group by g.run_id
),
woken as (
    update runs as r set
        updated_at = {NOW},
        event_cursor = greatest(r.event_cursor, coalesce(%(seq)s::bigint, r.event_cursor)),
        status = case when r.status not in {TIMED} then r.status
                      when s.n = 0 then 'queued'
                      when s.only_sleeps then 'sleeping'
                      else 'waiting' end,
        run_at = case when r.status not in {TIMED} then r.run_at
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


WAKE_WAITERS = _resolve(
    """
    delete from pending as p
    where p.run_id = any(%(allowed)s::uuid[]) and p.kind = 'wait' and p.event = %(name)s
      and (p.match_field is null or %(data)s::jsonb -> p.match_field = p.match_value)
    returning p.run_id, p.name, p.kind, p.pos, %(data)s::jsonb as output, null::jsonb as error
    """
)

RESOLVE_PARENTS = _resolve(
    f"""
    delete from pending as p
    using runs as c
    where c.id = any(%(ids)s::uuid[]) and c.parent_run_id is not null
      and c.status in {FINISHED}
      and p.run_id = c.parent_run_id and p.name = c.parent_step
    returning p.run_id, p.name, p.kind, p.pos,
        case when c.status = 'completed' then c.result end as output,
        case when c.status = 'completed' then null
             when c.status = 'cancelled' then %(cancelled)s::jsonb
             else coalesce(c.error, %(cancelled)s::jsonb) end as error
    """
)
