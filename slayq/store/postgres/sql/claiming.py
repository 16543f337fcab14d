"""Claiming: the claim (``CLAIM_CTES``, ``CLAIM_ROWS``) and the statements that follow
it in its transaction for the runs it took over, doomed or resumes (the tick function
runs them, ``sql.ticking``; ``_claim`` after a claim of gated runs), and the pieces that
the claim of gated runs (``_flow_claim``) and the queue counts (``_ops_queues``) share
with it: the loose scan over queues, queue groups, what a claim sets on a run."""

from __future__ import annotations

from slayq.store.postgres.sql.attempts import ended_attempt
from slayq.store.postgres.sql.common import NOW, TIMED, compact

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
        f"(select 1 from steps where run_id = {run}.id limit 1) as has_steps, "
        f"(select 1 from pending where run_id = {run}.id limit 1) as has_pending"
    )


# A claim's queue locks (as LOCK_NAMES takes them, exclusive) and INDEXED_PLANS, in one
# statement: one fewer per claim of limited queues.
LOCK_QUEUES_GENERIC = compact("""
select set_config('plan_cache_mode', 'force_generic_plan', true),
       set_config('enable_seqscan', 'off', true),
       set_config('enable_bitmapscan', 'off', true),
       count(pg_advisory_xact_lock(%(ns)s, hashtext(t.name)))
from (select * from unnest(%(names)s::text[]) as u(name) order by hashtext(u.name), u.name) as t
""")


# A memo's step, as the claim hands it out (see MEMOS).
STEP_JSON = """json_build_object('name', s.name, 'kind', s.kind, 'output', s.output,
    'error', s.error, 'finished_at', s.finished_at)"""

# Gated runs (flow control: runs.gated) are left to ``_flow_claim``: runs_due sorts them
# after the plain runs of each (queue, priority), and ``not r.gated`` is part of the due
# scan's index condition, so they are never read here; their expired leases are left too.
# Queue groups: see ``GROUPS``. Due runs come from a loose scan over
# the (queue, priority) pairs of the runs_due index, then each pair's due runs in
# order, so a million runs sleeping until next year cost nothing here. Paused queues
# are dropped from the pairs before their runs are read (one hashed subplan over a few
# rows), and their expired leases are left alone: nothing of a paused queue is claimed.
CLAIM_CTES = compact(f"""
{GROUPS},
{PAIRS},
due as (
    select d.*, null::text as previous_owner
    from pairs as p
    left join route as c on c.queue = p.queue
    cross join lateral (
        select r.id, r.queue, r.priority, r.run_at, r.seq
        from runs as r
        where r.queue = p.queue and r.priority = p.priority
          and r.status in {TIMED} and not r.gated and r.run_at <= {NOW}
        order by r.run_at, r.seq
        limit case when %(all)s then %(limit)s else least(%(limit)s, coalesce(c.free, 0)) end
        for update of r skip locked
    ) as d
    where (%(all)s or c.queue is not null) and p.queue not in (select queue from paused_queues)
),
expired as (
    -- every lease that ran out: few, as there are only as many as runs in flight
    select r.id, r.queue, r.priority, coalesce(r.run_at, {NOW}) as run_at, r.seq,
           r.lease_owner as previous_owner, r.attempt >= r.max_attempts as exhausted
    from runs as r
    where r.status = 'running' and r.lease_expires_at <= {NOW} and not r.gated
      and (%(all)s or r.queue in (select queue from route))
      and r.queue not in (select queue from paused_queues)
    for update of r skip locked
),
ranked as (
    select c.*, k.free,
           -- claimable runs of the group up to this one; an exhausted run is not claimed
           count(*) filter (where not c.exhausted) over (
               partition by k.grp order by c.priority, c.due_at, c.seq
               rows unbounded preceding
           ) as nth_in_group
    from (
        -- a due run's run_at has come; an expired lease's run may have none: due now
        select id, queue, priority, run_at as due_at, seq, previous_owner, false as exhausted
        from due
        union all
        select id, queue, priority, run_at, seq, previous_owner, exhausted from expired
    ) as c
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
    update runs as r set {leased()}
    -- by index, whatever the planner expects of chosen: the plan is generic (see claim())
    where r.id = any(array(select id from chosen))
    returning r.id, r.lease_token, r.lease_expires_at, r.event, r.data, r.queue, r.attempt,
              r.max_attempts, r.endpoint, r.trace
)""")

# The claim's rows, over ``CLAIM_CTES``: the claimed runs, and the doomed ones (no lease
# token; ``parent`` names an invoked run's caller), to be put in ``CLAIM_ORDER``.
CLAIM_ROWS = compact(f"""
select k.id::text as id, lease_token, lease_expires_at, event, data, k.queue, attempt,
       max_attempts, endpoint, previous_owner, null::text as parent, priority, due_at, seq,
       trace, {history("k")}
from claimed as k join chosen as c on c.id = k.id
union all
select d.id::text, null, null, null, null, null, null, null, null, null,
       r.parent_run_id::text, d.priority, d.due_at, d.seq, null, null, null
from doomed as d
join runs as r on r.id = d.id
""")
CLAIM_ORDER = "priority, due_at, seq"

# The columns of a claim's row, as ``CLAIM_ROWS`` gives them.
CLAIM_COLUMNS = (
    ("id", "text"),
    ("lease_token", "bigint"),
    ("lease_expires_at", "timestamptz"),
    ("event", "text"),
    ("data", "json"),
    ("queue", "text"),
    ("attempt", "int"),
    ("max_attempts", "int"),
    ("endpoint", "text"),
    ("previous_owner", "text"),
    ("parent", "text"),
    ("priority", "int"),
    ("due_at", "timestamptz"),
    ("seq", "bigint"),
    ("trace", "json"),
    ("has_steps", "int"),
    ("has_pending", "int"),
)


# The claim as one statement, as ``_tick`` runs it inside the tick function (see
# ``sql.ticking``): for EXPLAIN (bench.claim_plans).
CLAIM = f"with recursive {CLAIM_CTES} {CLAIM_ROWS} order by {CLAIM_ORDER}"


def end_expired(ended: str) -> str:
    """The attempts whose lease ran out, of runs a claim took over (``claimed``) or failed
    (as its walk reached them on their last attempt): ``ended`` is a query of (id, number,
    owner, claimed), ``number`` and ``owner`` those of the ended attempt (null: the run's
    own, unchanged by the claim). A taken-over run's new attempt starts now; a failed one
    has none."""
    return compact(f"""
with ending as (
    select r.id, coalesce(t.number, r.attempt) as attempt, r.attempt_started_at,
           coalesce(t.owner, r.lease_owner) as lease_owner, r.attempt_replayed,
           r.attempt_executed, t.claimed
    from ({ended}) as t(id, number, owner, claimed)
    join runs as r on r.id = t.id
),
{ended_attempt("ending", "'lease_expired'", "%(lease_expired)s::json", now=NOW)},
reset as (
    update runs as r set attempt_started_at = case when e.claimed then {NOW} end,
                         attempt_replayed = 0, attempt_executed = 0
    from ending as e
    where r.id = e.id
)
select count(*) from ending
""")


END_EXPIRED = end_expired(
    "select * from unnest(%(ids)s::uuid[], %(numbers)s::int[], %(owners)s::text[], "
    "%(claimed)s::bool[])"
)

# A claimed run that was suspended: whatever is still pending has expired (it was due)
# and resolves to null. Only for runs whose claim found pending steps (``history``).
# The attempt is read per row by id: the plan stays an index probe at any table size.
EXPIRE_PENDING = compact(f"""
with gone as (
    delete from pending where run_id = any(%(ids)s::uuid[])
    returning run_id, name, kind, pos, started_at
)
insert into steps (run_id, name, kind, output, finished_at, started_at, duration, attempt)
select g.run_id, g.name, g.kind, 'null'::json, {NOW}, g.started_at, {NOW} - g.started_at,
       (select r.attempt from runs as r where r.id = g.run_id)
from gone as g
order by g.run_id, g.pos
on conflict (run_id, name) do nothing
""")

# The memos of claimed runs that have steps, each read by its own index scan: a plan
# made while steps was small (a new database) would otherwise scan the whole table.
MEMOS = compact(f"""
select t.id::text, m.memo
from unnest(%(ids)s::uuid[]) as t(id)
cross join lateral (
    select json_agg({STEP_JSON} order by s.id)::text as memo
    from steps as s
    where s.run_id = t.id
) as m
""")
