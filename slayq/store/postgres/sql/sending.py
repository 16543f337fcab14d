"""Sending events: logging them, starting their runs, and the cancels and wakes they cause."""

from __future__ import annotations

from slayq.store.postgres.sql.common import FINISHED, HELD, NOW, compact
from slayq.store.postgres.sql.finishing import finish_runs, resolve_pending

INSERT_EVENTS = compact(f"""
insert into events (name, data, created_at)
select t.name, t.data, {NOW}
from json_to_recordset(%(rows)s::json) as t(ord int, name text, data json)
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
_INSERT_RUNS = """
with {head}x as (
    select *
    from json_to_recordset(%(rows)s::json) as t(
        idx int, cursor bigint, id uuid, event text, data json, queue text, priority int,
        max_attempts int, key text, delay_us bigint, run_at timestamptz, parent_id uuid,
        parent_step text, cancel_on json, endpoint text, may_wait boolean, trace json,
        flow json)
    where {only}
),
base as (
    select coalesce(max(seq), 0) as seq from events
    where seq < coalesce(%(first_seq)s::bigint, 9223372036854775807)
),
inserted as (
    insert into runs (id, event, data, queue, priority, max_attempts, key, parent_run_id,
                      parent_step, created_at, updated_at, run_at, event_cursor, endpoint,
                      may_wait, trace, cancel_on, flow)
    select x.id, x.event, x.data, x.queue, x.priority, x.max_attempts, x.key,
           x.parent_id, x.parent_step, {now}, {now},
           coalesce(x.run_at, {now} + coalesce(x.delay_us, 0) * interval '1 microsecond'),
           coalesce(x.cursor, base.seq), x.endpoint, x.may_wait, x.trace,
           case when json_array_length(x.cancel_on) > 0 then x.cancel_on end, x.flow
    from x, base
    order by x.idx
    on conflict (event, key) where key is not null do nothing
    returning id, event, key
){rules}{more}
{answer}{tail}"""

_INSERT_CANCEL_RULES = """,
rules as (
    insert into cancel_rules (run_id, event, field, value)
    select i.id, r.rule ->> 'event', r.rule ->> 'field',
           coalesce(r.rule -> 'value', 'null'::json)::jsonb
    from inserted as i
    join x on x.id = i.id
    cross join lateral json_array_elements(x.cancel_on) as r(rule)
)"""

_RUN_IDS = """
select x.idx, coalesce(mine.id, twin.id, old.id)::text
from x
left join inserted as mine on mine.id = x.id
left join inserted as twin on x.key is not null and twin.event = x.event and twin.key = x.key
-- by the index on (event, key), row by row (LIMIT keeps the planner from turning this
-- into a join, which, guessing 100 rows of x, may read all of runs instead: see
-- tests/integration/test_send_reads_by_index.py)
left join lateral (
    select r.id from runs as r
    where x.key is not null and r.event = x.event and r.key = x.key
    limit 1
) as old on true
"""

INSERT_RUNS = compact(
    _INSERT_RUNS.format(
        now=NOW,
        head="",
        only=f"""%(guard_id)s::uuid is null
             or exists (select 1 from runs where id = %(guard_id)s::uuid and {HELD})""",
        rules=_INSERT_CANCEL_RULES,
        more="",
        answer=_RUN_IDS,
        tail="",
    )
)

# A batch of events that are not logged, one statement, one transaction: nothing in the
# database can cancel or wake on their names (``quiet``), so each only starts its run
# and its queue is told. Otherwise it does nothing, says so (a row of idx -1, quiet
# false), and the batch takes the transactional path. No lock is needed: unlogged
# events are never read back, and a rule or wait committed after this statement's
# snapshot belongs to a run that came after these events.


def _insert_quiet_runs(*, keyed: bool, rules: bool) -> str:
    # Without keys every run of x is inserted (a key is the only conflict), so its id is
    # the one the client made and only the verdict comes back; without cancel rules
    # there are none to insert. Either spares the server a part of the plan per call.
    # ``q`` probes the rules and waits name by name, LIMIT 1 each: a connection keeps the
    # plan it made, and with ``event = any(names)`` a plan made while cancel_rules was
    # empty read the whole table on every send once it had grown
    # (test_send_reads_by_index).
    quiet = "(select quiet from q)"
    return compact(
        _INSERT_RUNS.format(
            now=NOW,
            head="""q as (
    select not exists (
        select 1 from unnest(%(names)s::text[]) as n(name)
        cross join lateral (select 1 from cancel_rules where event = n.name limit 1) as c
    ) and not exists (
        select 1 from unnest(%(names)s::text[]) as n(name)
        cross join lateral (
            select 1 from pending where kind = 'wait' and event = n.name limit 1
        ) as w
    ) as quiet
),
""",
            only=quiet,
            rules=_INSERT_CANCEL_RULES if rules else "",
            more=f""",
notified as (
    select pg_notify(%(channel)s, n) from unnest(%(queues)s::text[]) as n
    where {quiet}
)""",
            answer=_RUN_IDS + "union all " if keyed else "",
            # the verdict, and the notifications sent (a CTE runs only if it is read)
            tail=f"select -1, {quiet}::text where (select count(*) from notified) >= 0",
        )
    )


# One unlogged event starting one run with neither a key nor cancel rules (the common
# ``send_event``): ``INSERT_QUIET_RUNS``'s work with a parameter per column. This spares
# the client the JSON document and the arrays, and spares the server their parsing, the
# unnests and the sort. Its JSON values are cast to json, which keeps a ``\u0000`` that
# the batch statement's parse of its rows refuses (SQL cannot read it back as text): a
# run whose values hold one takes the batch statement (``_codec.run_params``).
# ``%(notify)s`` says whether the run is due at once. The first column is the verdict,
# as ``INSERT_QUIET_RUNS``'s row of idx -1. A send took 416 µs with that statement and
# 355 µs with this one (docs/claiming.md).
INSERT_QUIET_RUN = compact(f"""
with q as (
    select not exists (select 1 from cancel_rules where event = %(event)s limit 1)
       and not exists (
           select 1 from pending where kind = 'wait' and event = %(event)s limit 1
       ) as quiet
),
inserted as (
    insert into runs (id, event, data, queue, priority, max_attempts, created_at, updated_at,
                      run_at, event_cursor, endpoint, may_wait, trace, flow)
    select %(id)s::uuid, %(event)s, %(data)s::json, %(queue)s, %(priority)s::int,
           %(max_attempts)s::int, {NOW}, {NOW},
           coalesce(%(run_at)s::timestamptz,
                    {NOW} + coalesce(%(delay_us)s::bigint, 0) * interval '1 microsecond'),
           (select coalesce(max(seq), 0) from events), %(endpoint)s, %(may_wait)s::boolean,
           %(trace)s::json, %(flow)s::json
    from q
    where q.quiet
    returning queue
)
select q.quiet, (select count(pg_notify(%(channel)s, queue)) from inserted where %(notify)s)
from q
""")

# By (whether a run of the batch has a key, whether one has cancel rules).
INSERT_QUIET_RUNS = {
    (keyed, rules): _insert_quiet_runs(keyed=keyed, rules=rules)
    for keyed in (False, True)
    for rules in (False, True)
}


# A key taken by a transaction that committed after INSERT_RUNS took its snapshot.
KEYED_RUNS = compact("""
select t.event, t.key, r.id::text
from unnest(%(events)s::text[], %(keys)s::text[]) as t(event, key)
cross join lateral (
    -- by the index, key by key (as INSERT_RUNS: a join may read all of runs)
    select id from runs where event = t.event and key = t.key limit 1
) as r
""")


# Matching an event to cancel rules and waits goes by (name, field, value) for each
# field of the event's data, so that a million runs waiting on one event name cost an
# index probe per field. OFFSET 0 keeps the planner from turning the probes into a hash
# join over every rule or wait of that name (it guesses 100 fields per event).
_RULES = """
    select run_id from cancel_rules
    where event = {name} and field = kv.key and value = kv.value
    offset 0
"""

_ANSWERED = """
    select p.run_id, p.name
    from jsonb_each({data}) as kv
    cross join lateral (
        select run_id, name from pending
        where kind = 'wait' and event = {name} and match_field = kv.key
          and match_value = kv.value
        offset 0
    ) as p
    union all
    select run_id, name from pending
    where kind = 'wait' and event = {name} and match_field is null
"""

# The unfinished runs that events of a batch may cancel or wake, locked before the
# per-event statements that change them.
LOCK_AFFECTED = compact(f"""
with ev as (select * from unnest(%(names)s::text[], %(datas)s::jsonb[]) as t(name, data)),
hits as (
    select c.run_id from ev
    cross join lateral jsonb_each(ev.data) as kv
    cross join lateral ({_RULES.format(name="ev.name")}) as c
    union
    select a.run_id from ev
    cross join lateral ({_ANSWERED.format(data="ev.data", name="ev.name")}) as a
)
select id::text, parent_run_id is not null from runs
where id in (select run_id from hits) and status not in {FINISHED}
order by id
for update
""")


CANCEL_MATCHING = finish_runs(
    f"""
    select c.run_id as id
    from jsonb_each(%(data)s::jsonb) as kv
    cross join lateral ({_RULES.format(name="%(name)s")}) as c
    where c.run_id in (select unnest(%(allowed)s::uuid[]))
    """
)

# A batch whose events can cancel but wake nothing, and whose cancelled runs answer no
# caller: all at once. An unfinished run from before the batch is cancelled by any event
# of it; a run the batch starts (``born``) only by an event that follows its own.
CANCEL_ALL_MATCHING = finish_runs(
    f"""
    with ev as (
        select * from json_to_recordset(%(rows)s::json) as t(ord int, name text, data jsonb)
    ),
    born as (select * from json_to_recordset(%(born)s::json) as b(id uuid, idx int))
    select c.run_id as id
    from ev
    cross join lateral jsonb_each(ev.data) as kv
    cross join lateral ({_RULES.format(name="ev.name")}) as c
    where c.run_id in (select unnest(%(allowed)s::uuid[]))
       or exists (select 1 from born where born.id = c.run_id and born.idx < ev.ord)
    """
)


WAKE_WAITERS = resolve_pending(
    f"""
    delete from pending as p
    where (p.run_id, p.name) in ({_ANSWERED.format(data="%(data)s::jsonb", name="%(name)s")})
      and p.run_id in (select unnest(%(allowed)s::uuid[]))
    returning p.run_id, p.name, p.kind, p.pos, %(data)s::json as output, null::json as error,
              0 as ord, %(seq)s::bigint as seq, p.started_at
    """
)

# A batch whose events can wake but cancel nothing: all at once. Each pending wait is
# answered by the first event of the batch that matches it, as one by one would.
WAKE_ALL_WAITERS = resolve_pending(
    f"""
    with ev as (
        select * from json_to_recordset(%(rows)s::json)
            as t(ord int, name text, data json, seq bigint)
    ),
    hit as (
        select distinct on (a.run_id, a.name) a.run_id, a.name, ev.ord, ev.data, ev.seq
        from ev
        cross join lateral ({_ANSWERED.format(data="ev.data::jsonb", name="ev.name")}) as a
        where a.run_id in (select unnest(%(allowed)s::uuid[]))
        order by a.run_id, a.name, ev.ord
    )
    delete from pending as p
    using hit as h
    where p.run_id = h.run_id and p.name = h.name
    returning p.run_id, p.name, p.kind, p.pos, h.data as output, null::json as error,
              h.ord, h.seq, p.started_at
    """
)
