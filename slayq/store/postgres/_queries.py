"""The SQL of the Postgres store, one statement per constant.

Conventions that hold for every statement:

- Names are unqualified; connections run with ``search_path`` set to the store's schema.
- ``NOW`` is the store's clock: a test's virtual time when one is given, else the
  database's ``now()``, so that a drifting application clock never decides what is due.
- Every name, field and value is a bound parameter; JSON paths are ``data -> %(field)s``.
- User values (run data and results, step outputs, errors, event data, pending specs)
  are stored as ``json``: the text msgspec wrote, byte for byte, so a replay sees exactly
  what the first run saw (``jsonb`` would re-sort keys and rewrite numbers). They go in
  as ``%(x)s::json`` and are never cast to ``jsonb`` on their way in or out.
- A rule or wait on a field matches an event whose data has the field with an equal JSON
  value; data without the field matches nothing, whatever the value. Matching compares
  ``jsonb`` (``cancel_rules.value``, ``pending.match_value``, the event's fields cast).
- Statements that change a run whose lease the caller claims to hold carry the lease in
  their WHERE clause (``HELD``), so a commit whose lease was lost changes nothing even
  though its statements were already pipelined.
- Rows that other transactions may change are locked by one statement and read by a
  later one, never by the same: under READ COMMITTED each statement takes a fresh
  snapshot, but a statement's own snapshot predates the locks it waits for.
"""

from __future__ import annotations

from slayq.store.postgres._history import CURRENT, ended_attempt


def compact(text: str) -> str:
    """The statement on one line, comments dropped (no ``--`` may appear in a literal):
    psycopg caches the parsing of statements up to 4 kB, and server logs read better.
    A line break after ``(`` or before ``)`` goes without a space (literals never span
    lines, so none is changed)."""
    lines = (" ".join(line.split("--", 1)[0].split()) for line in text.splitlines())
    joined = ""
    for line in filter(None, lines):
        glue = "" if not joined or joined.endswith("(") or line.startswith(")") else " "
        joined += glue + line
    return joined


NOW = "clock_now(%(now)s)"  # migration 0010: a virtual time if given, else now()
FINISHED = "('completed', 'failed', 'cancelled')"
TIMED = "('queued', 'sleeping', 'waiting')"  # statuses whose run_at says when they are due

# The (queue, priority) pairs that have timed runs, by a loose index scan over runs_due:
# one index probe per pair, so a million runs sleeping until next year cost nothing.
PAIRS = f"""pairs(queue, priority) as (
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
)"""
# A run's lease fence, next to a lookup of the run by id. Its status test is made in
# another collation (for equality, every collation agrees) so that it does not imply
# the predicate of runs_leased, the partial index of running runs: if it did, PostgreSQL
# could find the run by scanning that index, which statistics taken while few runs ran
# make look cheaper than one probe of the primary key, and read every running run and
# every entry of a run finished since the last vacuum (test_commit_reads_by_key).
HELD = """status collate "C" = 'running' and lease_token = %(token)s"""

# The queue groups of a claim: ``member`` lists every (queue, group) to count held slots
# by, ``route`` the group whose slots each queue uses and how many are free.
GROUPS = f"""member as (select * from unnest(%(member_queues)s::text[], %(member_groups)s::int[]) as m(queue, grp)),
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
)"""


def leased(token: str = "nextval('lease_tokens')") -> str:
    """What a claim sets on the runs it takes (``update runs as r set ...``)."""
    return f"""
        status = 'running',
        lease_token = {token},
        lease_owner = %(owner)s,
        lease_expires_at = {NOW} + %(lease_for)s::interval,
        heartbeat_at = {NOW},
        updated_at = {NOW},
        -- taking over an expired lease: its holder is presumed dead, an attempt is spent
        attempt = case when r.status = 'running' then r.attempt + 1 else r.attempt end,
        error = case when r.status = 'running' then %(lease_expired)s::json else r.error end,
        -- a takeover's ended attempt is recorded by END_EXPIRED, which then sets this
        attempt_started_at = case when r.status = 'running' then r.attempt_started_at
                                  else {NOW} end"""


def history(run: str) -> str:
    """Two columns of a claim's rows, not null if the claimed run ``run`` (an alias) has
    steps (a memo to load) and pending steps (which expire at the claim). A run claimed
    for the first time has neither, and its claim sends no statement for them. Read in
    the claim's snapshot: a claimed run is locked, so none can appear since. Scalar
    subqueries, not EXISTS, which a generic plan may turn into a hash of the whole table."""
    return (
        f"(select 1 from steps where run_id = {run}.id limit 1), "
        f"(select 1 from pending where run_id = {run}.id limit 1)"
    )


CLOCK = f"select {NOW}"

# The claim's statements are planned once for any parameters (a generic plan), not
# afresh on each claim (see ``_claim.claim_in_transaction``); local to the transaction.
GENERIC_PLANS = "select set_config('plan_cache_mode', %(mode)s, true)"

# Every read of a claim and of a batch commit is an index lookup, and their plans must
# stay so as tables grow: a plan is kept once made (psycopg prepares a statement on its
# fifth run), and one made while a table was small (a new database) scans it whole,
# until autovacuum analyzes it. So a tick is planned without sequential scans, from its
# commit to the end of the transaction (claims come last in theirs). With its switch to
# generic plans, which GATED_QUEUES ends after the claim.
# Nor bitmap scans: the takeover of expired leases reads runs_leased by lease expiry,
# where each run finished since the last vacuum left an entry whose time passes with
# its lease's. A bitmap scan cannot mark those entries dead and read them all on every
# claim; an index scan marks them once (test_commit_reads_by_key).
INDEXED_PLANS = compact("""
select set_config('plan_cache_mode', 'force_generic_plan', true),
       set_config('enable_seqscan', 'off', true),
       set_config('enable_bitmapscan', 'off', true)
""")

# A claim's queue locks (as LOCK_NAMES takes them, exclusive) and INDEXED_PLANS, in one
# statement: one fewer per claim of limited queues.
LOCK_QUEUES_GENERIC = compact("""
select set_config('plan_cache_mode', 'force_generic_plan', true),
       set_config('enable_seqscan', 'off', true),
       set_config('enable_bitmapscan', 'off', true),
       count(pg_advisory_xact_lock(%(ns)s, hashtext(t.name)))
from (select * from unnest(%(names)s::text[]) as u(name) order by hashtext(u.name), u.name) as t
""")


def backlog(queue: str) -> str:
    """Whether runs of ``queue`` are due and waiting: a run that leaves the running state
    then frees a slot someone may be waiting for, so its queue is notified. A hint
    (polling stays the safety net), so it reads one index entry: the queue's first in
    claim order, plain runs before gated ones (flow control). Runs due behind a lower
    priority's future ones, or gated ones behind plain ones, go unannounced."""
    return f"""exists (
        select 1 from (
            select run_at from runs where queue = {queue} and status in {TIMED}
            order by queue, priority, gated, run_at limit 1
        ) as b
        where b.run_at <= {NOW}
    )"""


# Advisory lock namespaces (the first key of the two-key form).
EVENT_LOCKS = 0x736C_0001
QUEUE_LOCKS = 0x736C_0002
SCHEDULE_LOCKS = 0x736C_0003
FLOW_LOCKS = 0x736C_0005  # send-time flow control buckets (see _admit)
# (0x736C_0004 is the migrations' lock, _migrations._LOCK_NAMESPACE)

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
    quiet = "(select quiet from q)"
    return compact(
        _INSERT_RUNS.format(
            now=NOW,
            head="""q as (
    select not exists (select 1 from cancel_rules where event = any(%(names)s::text[]))
       and not exists (select 1 from pending
                       where kind = 'wait' and event = any(%(names)s::text[])) as quiet
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

NOTIFY = "select count(pg_notify(%(channel)s, q)) from unnest(%(queues)s::text[]) as q"

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


def _finish(targets: str) -> str:
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


FINISH_HELD = _finish(f"select id from runs where id = %(id)s::uuid and {HELD}")
FINISH_IDS = _finish("select unnest(%(ids)s::uuid[]) as id")
CANCEL_MATCHING = _finish(
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
CANCEL_ALL_MATCHING = _finish(
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


WAKE_WAITERS = _resolve(
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
WAKE_ALL_WAITERS = _resolve(
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
             when c.status = 'cancelled' then %(cancelled)s::json
             else coalesce(c.error, %(cancelled)s::json) end as error,
        0 as ord, null::bigint as seq, p.started_at
    """
)
