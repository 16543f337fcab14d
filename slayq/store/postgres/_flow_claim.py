"""Claiming gated runs: concurrency keys and throttles (flow control) in PostgreSQL.

A run under either is gated (``runs.gated``, set with ``runs.flow_key``, its fair
bucket, by migration 0012's trigger when the run is inserted). ``CLAIM`` never takes a
gated run nor reads past one: runs_due sorts them after the plain runs of each (queue,
priority). The claim goes on here, in a transaction of its own after the tick's
(``_claim.claim_gated_runs``), only when the tick's claim left slots and named claimed
queues that have had gated runs (``flow_queues``, a probe of a table of a few rows, so
a claim of queues without gated runs pays nothing more):

1. ``FLOW_CANDIDATES`` keeps those where gated runs are due, and reads what the decision
   needs: the buckets' offers (a walk over the buckets with timed runs from the queue's
   cursor, as ``_flow_claims.offer``), the expired leases of gated runs, the slots held
   per concurrency bucket (the unexpired leases of gated runs, by their buckets), the
   runs holding a lease in the claim's queue groups and the throttles' state.
2. ``slayq.store._flow_claims.choose`` decides, as for the memory store.
3. ``CLAIM_FLOW`` leases the chosen runs (each still due, or still expired under the
   lease token read; one changed meanwhile is left out), moves the queues' cursors and
   records the throttles' state.

Exact across processes: every claim of a queue first takes that queue's transaction
lock (``QUEUE_LOCKS``; a claim of every queue takes it here, before step 1), so the
counting statement's snapshot includes every earlier claim's commit, and gated runs are
claimed nowhere else. A bucket's runs share a queue: the bucket names the function.
Two round trips more than a plain claim, for the queues that have had gated runs."""

from __future__ import annotations

from datetime import datetime
from typing import TYPE_CHECKING, Any

import msgspec

from slayq.model import Flow, RunId
from slayq.store._flow_claims import Candidate, Offer, ThrottleState, choose, cursors
from slayq.store.postgres.sql.claiming import history, leased
from slayq.store.postgres.sql.common import (
    GENERIC_PLANS,
    LOCK_NAMES,
    NOW,
    QUEUE_LOCKS,
    TIMED,
    compact,
)

if TYPE_CHECKING:
    from collections.abc import Sequence

    from psycopg import AsyncConnection, AsyncPipeline

    from slayq.store.protocol import ClaimRequest

# Of the gated queues, those where gated runs are due now: the earliest due time of
# their timed gated runs (runs_flow_due) or of their gated leases (runs_flow_leased) has
# come, a probe each. Without it, a queue of a million gated runs sleeping in their own
# buckets would be walked through on every claim.
_DUE = f"""
fq as (
    select f.queue, f.cursor from flow_queues f
    where f.queue = any(%(queues)s::text[])
      and least((select min(run_at) from runs
                 where queue = f.queue and status in {TIMED} and gated and run_at is not null),
                (select min(lease_expires_at) from runs
                 where queue = f.queue and status = 'running' and gated)) <= {NOW}
)"""

# A candidate run, decoded as ``_Offered``: its bucket's turn (-1: a takeover) first.
_CANDIDATE = f"""json_build_array(
    r.turn, r.id, r.queue, r.priority, coalesce(r.run_at, {NOW}), r.seq, r.flow,
    r.lease_token, r.status = 'running', r.attempt >= r.max_attempts)"""

# A bucket's first due run of each stream: ``s.fresh`` (values false, true) picks the
# runs started before or the first starts, a column of runs_flow_keys.
_STREAM = f"""
        from runs as r
        where r.queue = {{queue}} and r.flow_key = {{key}} and r.status in {TIMED} and r.gated
          and (r.lease_token is null) = s.fresh and r.run_at <= {NOW}
        order by r.run_at, r.seq"""

# ``queues``: the gated queues to claim from, locked. The round robin of
# ``_flow_claims.offer``, as a recursive walk per queue over its buckets with timed runs
# (a loose scan of runs_flow_keys) from the one after its cursor, wrapping around once,
# until ``limit`` buckets offered runs (``offers``: how many; each offers at most
# ``limit - n + 1`` of each kind, as ``offer``): per bucket the room under its key's
# limit (the held slots counted from the gated runs' unexpired leases), whether a run
# started before is due, and whether a first start is due that no throttle holds back.
# One row: the store's now, the offered runs with their bucket's turn (takeovers: -1),
# the held slots per bucket, the runs holding a lease per queue of the claim's groups
# (``busy``), the throttles' state and the queues' last buckets that offered runs.
FLOW_CANDIDATES = compact(f"""
with recursive {_DUE},
busy as (
    select queue, count(*) as n from runs
    where queue = any(%(member_queues)s::text[]) and status = 'running'
      and lease_expires_at > {NOW}
    group by queue
),
slots as (
    select c.slot ->> 'bucket' as bucket, count(*) as held
    from runs as r
    cross join lateral json_array_elements(r.flow -> 'concurrency') as c(slot)
    where r.queue in (select queue from fq) and r.status = 'running' and r.gated
      and r.lease_expires_at > {NOW}
    group by 1
),
walk(queue, cursor, key, wrapped, turns, room, started, fresh) as (
    select fq.queue, fq.cursor, null::text collate "C", fq.cursor is null, 0, 0, false, false
    from fq
    union all
    select w.queue, w.cursor, n.key, w.wrapped or a.key is null, w.turns + (e.room > 0)::int,
           e.room, e.started, e.fresh
    from walk as w
    cross join lateral (
        select min(flow_key) as key from runs
        where queue = w.queue and status in {TIMED} and gated
          and flow_key > coalesce(w.key, w.cursor, '')
    ) a
    cross join lateral (
        -- the next bucket in name order, or the first again (once: then wrapped)
        select coalesce(a.key, case when not w.wrapped then (
            select min(flow_key) from runs where queue = w.queue and status in {TIMED} and gated
        ) end) as key
    ) n
    cross join lateral (
        -- room: none unless a stream is open (a first start: unless a throttle holds it)
        select bool_or(f.open and not s.fresh) as started, bool_or(f.open and s.fresh) as fresh,
               case when bool_or(f.open) then greatest(0, least(%(limit)s, coalesce(
                   max(f.lim) - coalesce((select held from slots where bucket = n.key), 0),
                   %(limit)s)))::int else 0 end as room
        from (values (false), (true)) as s(fresh)
        cross join lateral (
            select (r.flow -> 'concurrency' -> 0 ->> 'limit')::int as lim,
                   not (s.fresh and exists (
                       select 1 from flow_throttles as t
                       where t.bucket = r.flow -> 'throttle' ->> 'bucket'
                         and t.blocked_until > {NOW})) as open
            {_STREAM.format(queue="w.queue", key="n.key")}
            limit 1
        ) as f
    ) as e
    where w.turns < %(limit)s and n.key is not null
      and (w.cursor is null or a.key is not null and not w.wrapped or n.key <= w.cursor)
),
offers as (select queue, max(turns) as n from walk group by queue),
offered as (
    select r.id, w.turns - 1 as turn
    from walk as w
    join offers as o on o.queue = w.queue
    cross join (values (false), (true)) as s(fresh)
    cross join lateral (
        select r.id {_STREAM.format(queue="w.queue", key="w.key")}
        limit least(w.room, %(limit)s - o.n + 1)
    ) as r
    where w.room > 0 and case when s.fresh then w.fresh else w.started end
    union all
    select r.id, -1 from runs as r
    where r.queue in (select queue from fq) and r.status = 'running' and r.gated
      and r.lease_expires_at <= {NOW}
),
cands as (select o.turn, r.* from offered as o join runs as r on r.id = o.id)
select {NOW},
       (select coalesce(json_agg({_CANDIDATE}), '[]')::text from cands as r),
       (select coalesce(json_object_agg(bucket, held), '{{}}')::text from slots),
       (select coalesce(json_object_agg(queue, n), '{{}}')::text from busy),
       (select coalesce(json_object_agg(t.bucket, t.tat), '{{}}')::text
        from flow_throttles as t
        where t.bucket in (select flow -> 'throttle' ->> 'bucket' from cands)),
       (select coalesce(json_object_agg(queue, key), '{{}}')::text from (
            select distinct on (queue) queue, key from walk
            where room > 0
            order by queue, turns desc
        ) as last)
""")

# Lease the chosen runs (``tokens``: null for a timed run, the lease token read for an
# expired one), fail the ``doomed`` (expired on their last attempt: END_EXPIRED and
# FINISH_IDS end them, as for CLAIM's), move the queues' cursors and record each
# throttle's new state: its theoretical arrival time as read (or now, if that passed)
# plus one interval per first start claimed, and until when a first start was held
# back. Rows as CLAIM's.
CLAIM_FLOW = compact(f"""
with
t as (
    select * from unnest(%(ids)s::uuid[], %(tokens)s::bigint[], %(doomed)s::bool[],
                         %(throttles)s::text[])
         with ordinality as t(id, token, doomed, throttle, ord)
),
pick as (
    select t.*, r.priority, coalesce(r.run_at, {NOW}) as due_at, r.seq, r.parent_run_id,
           case when r.status = 'running' then r.lease_owner end as previous_owner
    from t
    join runs as r on r.id = t.id
    where case when t.token is null then r.status in {TIMED} and r.run_at <= {NOW}
               else r.status = 'running' and r.lease_token = t.token
                    and r.lease_expires_at <= {NOW} end
      and r.queue not in (select queue from paused_queues)  -- paused since the tick
    order by r.id
    for update of r skip locked
),
claimed as (
    update runs as r set {leased()}
    where r.id in (select id from pick where not doomed)
    returning r.id, r.lease_token, r.lease_expires_at, r.event, r.data, r.queue, r.attempt,
              r.max_attempts, r.endpoint, r.trace
),
paced as (
    select b.bucket, b.base + b.step * count(c.id) as tat, b.tolerance, b.blocked
    from unnest(%(buckets)s::text[], %(bases)s::timestamptz[], %(steps)s::interval[],
                %(tolerances)s::interval[], %(blocked)s::bool[])
         as b(bucket, base, step, tolerance, blocked)
    left join pick as k on k.throttle = b.bucket
    left join claimed as c on c.id = k.id
    group by b.bucket, b.base, b.step, b.tolerance, b.blocked
),
kept as (
    insert into flow_throttles as f (bucket, tat, blocked_until)
    select bucket, tat, case when blocked then tat - tolerance end from paced
    order by bucket
    on conflict (bucket) do update
        set tat = excluded.tat, blocked_until = excluded.blocked_until
),
turned as (
    update flow_queues as f set cursor = c.cursor
    from unnest(%(queues)s::text[], %(cursors)s::text[]) as c(queue, cursor)
    where f.queue = c.queue
)
select c.id::text, c.lease_token, c.lease_expires_at, c.event, c.data, c.queue, c.attempt,
       c.max_attempts, c.endpoint, k.previous_owner, null::text, k.priority, k.due_at, k.seq,
       c.trace, {history("c")}
from claimed as c join pick as k on k.id = c.id
union all
select k.id::text, null, null, null, null, null, null, null, null, null,
       k.parent_run_id::text, k.priority, k.due_at, k.seq, null, null, null
from pick as k
where k.doomed
order by priority, due_at, seq
""")


# Throttles whose theoretical arrival time passed are as good as new: one batch of them
# goes (``Store.delete_finished``, once it caught up with the runs), oldest first.
PRUNE_THROTTLES = compact(f"""
delete from flow_throttles
where bucket in (select bucket from flow_throttles where tat < {NOW} order by tat limit %(batch)s)
""")


class _Offered(msgspec.Struct, array_like=True):
    turn: int
    run_id: RunId
    queue: str
    priority: int
    due_at: datetime
    seq: int
    flow: Flow
    token: int | None
    expired: bool
    exhausted: bool

    def candidate(self) -> Candidate:
        return Candidate(
            run_id=self.run_id,
            queue=self.queue,
            priority=self.priority,
            due_at=self.due_at,
            seq=self.seq,
            flow=self.flow,
            started=self.token is not None,
            expired=self.expired,
        )


_offered = msgspec.json.Decoder(list[_Offered])
_counts = msgspec.json.Decoder(dict[str, int])
_tats = msgspec.json.Decoder(dict[str, datetime])
_cursors = msgspec.json.Decoder(dict[str, str])


async def claim_gated(
    conn: AsyncConnection[Any],
    pipeline: AsyncPipeline,
    request: ClaimRequest,
    queues: list[str],
    params: dict[str, Any],
) -> list[tuple[Any, ...]]:
    """Claim up to ``params["limit"]`` gated runs of ``queues`` (see the module doc);
    rows as ``CLAIM_ROWS`` gives them."""
    if request.queues is None:  # a claim of every queue took no queue's lock yet
        lock = {"ns": QUEUE_LOCKS, "names": queues, "exclusive": [True] * len(queues)}
        await conn.execute(LOCK_NAMES, lock)
    # Planned once, as CLAIM is: planning the walk costs more than running it.
    await conn.execute(GENERIC_PLANS, {"mode": "force_generic_plan"})
    cursor = await conn.execute(FLOW_CANDIDATES, params | {"queues": queues})
    await conn.execute(GENERIC_PLANS, {"mode": "auto"})
    await pipeline.sync()
    row = await cursor.fetchone()
    assert row is not None
    now, offered_json, held_json, busy_json, tats_json, cursors_json = row
    held = _counts.decode(held_json)
    free = _group_slots(request, _counts.decode(busy_json))
    throttles = {name: ThrottleState(tat=tat) for name, tat in _tats.decode(tats_json).items()}
    tats = {name: state.tat for name, state in throttles.items()}
    # A queue whose group is full takes nothing, and its buckets keep their turn.
    open_queues = {name for name in queues if free is None or free.get(name, [0])[0] > 0}
    offered = Offer(
        cursors={k: v for k, v in _cursors.decode(cursors_json).items() if k in open_queues}
    )
    doomed: list[Candidate] = []
    tokens: dict[RunId, int | None] = {}
    for item in _offered.decode(offered_json):
        run = item.candidate()
        tokens[run.run_id] = item.token
        if run.queue not in open_queues:
            continue
        if item.turn < 0:
            (doomed if item.exhausted else offered.takeovers).append(run)
        else:
            offered.runs.append(run)
            offered.turns[run.bucket] = item.turn
    offered.takeovers.sort(key=lambda c: c.order)
    limit = params["limit"]
    chosen = choose(offered, held=held, throttles=throttles, free=free, limit=limit, now=now)
    paced = _paced(offered, chosen, throttles, tats, now)
    moved = cursors(offered, chosen)
    if not (chosen or doomed or moved or paced["buckets"]):
        return []
    picked = [*chosen, *doomed]
    claim = {
        "ids": [c.run_id for c in picked],
        "tokens": [tokens[c.run_id] if c.expired else None for c in picked],
        "doomed": [False] * len(chosen) + [True] * len(doomed),
        "throttles": [_throttle_of(c) for c in chosen] + [None] * len(doomed),
        "queues": list(moved),
        "cursors": list(moved.values()),
    }
    await conn.execute(GENERIC_PLANS, {"mode": "force_generic_plan"})
    cursor = await conn.execute(CLAIM_FLOW, params | claim | paced)
    await conn.execute(GENERIC_PLANS, {"mode": "auto"})
    await pipeline.sync()
    return await cursor.fetchall()


def _group_slots(request: ClaimRequest, busy: dict[str, int]) -> dict[str, list[int]] | None:
    """Per queue, its group's free slots (``busy``: the runs holding a lease, per queue),
    one counter shared by the group's queues; a queue named by several groups takes its
    slots from the last, as ``CLAIM`` does. None: no queue limits."""
    if request.queues is None:
        return None
    slots: dict[str, list[int]] = {}
    for group in request.queues:
        held = sum(busy.get(name, 0) for name in set(group.names))
        counter = [max(0, group.concurrency - held)]
        slots |= dict.fromkeys(group.names, counter)
    return slots


def _throttle_of(candidate: Candidate) -> str | None:
    """The throttle bucket a claimed run's start counts against: first starts only."""
    throttle = candidate.flow.throttle
    return throttle.bucket if throttle is not None and not candidate.started else None


def _paced(
    offered: Offer,
    chosen: Sequence[Candidate],
    throttles: dict[str, ThrottleState],
    tats: dict[str, datetime | None],
    now: datetime,
) -> dict[str, list[Any]]:
    """The throttles whose state the claim changes, for ``CLAIM_FLOW``: each that let a
    first start go or held one back, from its state as read (its theoretical arrival
    time, or now if that passed)."""
    rates = {
        run.flow.throttle.bucket: run.flow.throttle
        for run in offered.runs
        if run.flow.throttle is not None
    }
    started = {_throttle_of(run) for run in chosen}
    names = sorted(
        name
        for name in rates
        if name in started or (name in throttles and throttles[name].blocked_until is not None)
    )
    return {
        "buckets": names,
        "bases": [max(tats.get(name) or now, now) for name in names],
        "steps": [rates[name].interval for name in names],
        "tolerances": [rates[name].interval * rates[name].burst for name in names],
        "blocked": [throttles[name].blocked_until is not None for name in names],
    }
