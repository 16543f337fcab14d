"""Claiming gated runs: concurrency keys and throttles (flow control) in PostgreSQL.

A run under either is gated (``runs.gated``, set with ``runs.flow_key``, its fair
bucket, by migration 0012's trigger when the run is inserted). ``CLAIM`` never takes a
gated run nor reads past one: runs_due sorts them after the plain runs of each (queue,
priority). The claim goes on here, in the same transaction, only when it has slots left
and ``GATED_QUEUES`` (sent in place of the statement that resets the plan cache mode,
so a claim of queues without gated runs costs no statement more) names queues where
gated runs are due:

1. ``FLOW_CANDIDATES`` reads what the decision needs: each fair bucket's first due runs
   (a loose scan over the buckets with timed runs, then per bucket up to its room, its
   first starts apart from the others), the expired leases of gated runs, the slots
   held per concurrency bucket (the unexpired leases of gated runs, by their buckets),
   the queue groups' free slots and the buckets' round robin and throttle state.
2. ``slayq.store._flow_claims`` decides, as for the memory store.
3. ``CLAIM_FLOW`` leases the chosen runs (each still due, or still expired under the
   lease token read; one changed meanwhile is left out) and records the buckets' state.

Exact across processes: every claim of a queue first takes that queue's transaction
lock (``QUEUE_LOCKS``; a claim of every queue takes it here, before step 1), so the
counting statement's snapshot includes every earlier claim's commit, and gated runs are
claimed nowhere else. A bucket's runs share a queue: the bucket names the function.
Two round trips more than a plain claim, for the queues that have gated runs due.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

import msgspec

from slayq.model import Flow, RunId
from slayq.store._flow_claims import Bucket, Candidate, choose, offer
from slayq.store.postgres import _queries as q
from slayq.store.postgres._queries import GROUPS, NOW, TIMED, compact, leased

if TYPE_CHECKING:
    from collections.abc import Sequence

    from psycopg import AsyncConnection, AsyncPipeline

    from slayq.store.protocol import ClaimRequest

# The claimed queues (every queue: all) that ever had gated runs and are not paused, and
# of those the ones where some are due now: queued or suspended and due (per (queue,
# priority) level of runs_due, gated = true, one probe each) or under an expired lease.
# It also resets the plan cache mode that the claim forced (see ``_claim.GENERIC_PLANS``).
GATED_QUEUES = compact(f"""
with recursive
fq as (
    select f.queue from flow_queues as f
    where (%(all)s or f.queue = any(%(route_queues)s::text[]))
      and f.queue not in (select queue from paused_queues)
),
levels(queue, priority) as (
    select fq.queue, (select min(priority) from runs where queue = fq.queue and status in {TIMED})
    from fq
    union all
    select l.queue, (select min(priority) from runs
                     where queue = l.queue and status in {TIMED} and priority > l.priority)
    from levels as l
    where l.priority is not null
)
select set_config('plan_cache_mode', 'auto', true), array(
    select fq.queue from fq
    where exists (select 1 from runs as r
                  where r.queue = fq.queue and r.status = 'running' and r.gated
                    and r.lease_expires_at <= {NOW})
       or exists (select 1 from levels as l
                  where l.queue = fq.queue and l.priority is not null and exists (
                      select 1 from runs as r
                      where r.queue = l.queue and r.priority = l.priority
                        and r.status in {TIMED} and r.gated and r.run_at <= {NOW}))
    order by fq.queue
)
""")

_CANDIDATE = f"""json_build_object(
    'run_id', r.id, 'queue', r.queue, 'priority', r.priority,
    'due_at', coalesce(r.run_at, {NOW}), 'seq', r.seq, 'flow', r.flow,
    'started', r.lease_token is not null, 'expired', r.status = 'running',
    'exhausted', r.attempt >= r.max_attempts, 'token', r.lease_token)"""

# ``queues``: the gated queues to claim from, locked. One row: the store's now, the
# candidates, the held slots per concurrency bucket, the free slots of each queue's
# group (none without queue limits) and the state of the candidates' buckets.
FLOW_CANDIDATES = compact(f"""
with recursive
fq as (select unnest(%(queues)s::text[]) as queue),
{GROUPS},
slots as (
    select c.slot ->> 'bucket' as bucket, count(*) as n
    from runs as r
    cross join lateral json_array_elements(r.flow -> 'concurrency') as c(slot)
    where r.queue in (select queue from fq) and r.status = 'running' and r.gated
      and r.lease_expires_at > {NOW}
    group by 1
),
keys(queue, key) as (
    select fq.queue, (select min(flow_key) from runs
                      where queue = fq.queue and status in {TIMED} and gated)
    from fq
    union all
    select k.queue, (select min(flow_key) from runs
                     where queue = k.queue and status in {TIMED} and gated and flow_key > k.key)
    from keys as k
    where k.key is not null
),
rooms as (
    select k.queue, k.key,
           greatest(least(%(limit)s, coalesce(lim.n - coalesce(s.n, 0), %(limit)s)), 0) as room
    from keys as k
    cross join lateral (
        -- the key's limit as its runs carry it; none for a bucket of a throttle alone
        select (r.flow -> 'concurrency' -> 0 ->> 'limit')::int as n from runs as r
        where r.queue = k.queue and r.flow_key = k.key and r.status in {TIMED} and r.gated
        limit 1
    ) as lim
    left join slots as s on s.bucket = k.key
    where k.key is not null
),
offered as (
    select {_CANDIDATE} as c
    from rooms as b
    cross join (values (false), (true)) as s(fresh)
    cross join lateral (
        select * from runs as r
        where r.queue = b.queue and r.flow_key = b.key and r.status in {TIMED} and r.gated
          and (r.lease_token is null) = s.fresh and r.run_at <= {NOW}
        order by r.run_at, r.seq
        limit b.room
    ) as r
    where b.room > 0
    union all
    select {_CANDIDATE} from runs as r
    where r.queue in (select queue from fq) and r.status = 'running' and r.gated
      and r.lease_expires_at <= {NOW}
)
select {NOW},
       (select coalesce(json_agg(c), '[]')::text from offered),
       (select coalesce(json_object_agg(bucket, n), '{{}}')::text from slots),
       (select coalesce(json_object_agg(queue, json_build_array(grp, free)), '{{}}')::text
        from route where queue in (select queue from fq)),
       (select coalesce(json_agg(json_build_object('bucket', b.bucket, 'served', b.served,
                                                   'tat', b.tat)), '[]')::text
        from flow_buckets as b
        where b.bucket in (select key from rooms)
           or b.bucket in (select c -> 'flow' -> 'throttle' ->> 'bucket' from offered))
""")

# Lease the chosen runs (``tokens``: null for a timed run, the lease token read for an
# expired one), fail the ``doomed`` (expired on their last attempt: END_EXPIRED and
# FINISH_IDS end them, as for CLAIM's), and record per bucket the lease token of its
# last claim and its throttle's new state: ``base`` (its theoretical arrival time, or
# now if that passed) plus one ``step`` per first start claimed. Rows as CLAIM's.
CLAIM_FLOW = compact(f"""
with
t as (
    select * from unnest(%(ids)s::uuid[], %(tokens)s::bigint[], %(doomed)s::bool[],
                         %(fairs)s::text[], %(throttles)s::text[])
         with ordinality as t(id, token, doomed, fair, throttle, ord)
),
pick as (
    select t.*, r.priority, coalesce(r.run_at, {NOW}) as due_at, r.seq, r.parent_run_id,
           case when r.status = 'running' then r.lease_owner end as previous_owner
    from t
    join runs as r on r.id = t.id
    where case when t.token is null then r.status in {TIMED} and r.run_at <= {NOW}
               else r.status = 'running' and r.lease_token = t.token
                    and r.lease_expires_at <= {NOW} end
    order by r.id
    for update of r skip locked
),
-- lease tokens in the decision's order: a bucket's last one says when it was served
numbered as (
    select p.id, nextval('lease_tokens') as token
    from (select id, ord from pick where not doomed order by ord) as p
),
claimed as (
    update runs as r set {leased("n.token")}
    from numbered as n
    where r.id = n.id
    returning r.id, r.lease_token, r.lease_expires_at, r.event, r.data, r.queue, r.attempt,
              r.max_attempts, r.endpoint, r.trace
),
paced as (
    select b.bucket, b.tolerance, b.blocked,
           max(c.lease_token) filter (where k.fair = b.bucket) as served,
           b.base + b.step * count(c.id) filter (where k.throttle = b.bucket) as tat
    from unnest(%(buckets)s::text[], %(bases)s::timestamptz[], %(steps)s::interval[],
                %(tolerances)s::interval[], %(blocked)s::bool[])
         as b(bucket, base, step, tolerance, blocked)
    left join pick as k on k.fair = b.bucket or k.throttle = b.bucket
    left join claimed as c on c.id = k.id
    group by b.bucket, b.base, b.step, b.tolerance, b.blocked
),
kept as (
    insert into flow_buckets as f (bucket, served, tat, blocked_until, updated_at)
    select bucket, served, tat, case when blocked then tat - tolerance end, {NOW} from paced
    order by bucket
    on conflict (bucket) do update set
        served = coalesce(excluded.served, f.served),
        tat = coalesce(excluded.tat, f.tat),
        blocked_until = case when excluded.tat is null then f.blocked_until
                             else excluded.blocked_until end,
        updated_at = excluded.updated_at
)
select c.id::text, c.lease_token, c.lease_expires_at, c.event, c.data, c.queue, c.attempt,
       c.max_attempts, c.endpoint, k.previous_owner, null::text, k.priority, k.due_at, k.seq,
       c.trace
from claimed as c join pick as k on k.id = c.id
union all
select k.id::text, null, null, null, null, null, null, null, null, null,
       k.parent_run_id::text, k.priority, k.due_at, k.seq, null
from pick as k
where k.doomed
order by priority, due_at, seq
""")


class _Offered(msgspec.Struct):
    run_id: RunId
    queue: str
    priority: int
    due_at: datetime
    seq: int
    flow: Flow
    started: bool
    expired: bool
    exhausted: bool
    token: int | None

    def candidate(self) -> Candidate:
        return Candidate(
            run_id=self.run_id,
            queue=self.queue,
            priority=self.priority,
            due_at=self.due_at,
            seq=self.seq,
            flow=self.flow,
            started=self.started,
            expired=self.expired,
        )


class _State(msgspec.Struct):
    bucket: str
    served: int | None
    tat: datetime | None


_offered = msgspec.json.Decoder(list[_Offered])
_held = msgspec.json.Decoder(dict[str, int])
_groups = msgspec.json.Decoder(dict[str, tuple[int, int]])
_states = msgspec.json.Decoder(list[_State])


async def claim_gated(
    conn: AsyncConnection[Any],
    pipeline: AsyncPipeline,
    request: ClaimRequest,
    queues: list[str],
    params: dict[str, Any],
) -> list[tuple[Any, ...]]:
    """Claim up to ``params["limit"]`` gated runs of ``queues`` (see the module doc);
    rows as ``CLAIM`` returns them."""
    if request.queues is None:  # a claim of every queue took no queue's lock yet
        lock = {"ns": q.QUEUE_LOCKS, "names": queues, "exclusive": [True] * len(queues)}
        await conn.execute(q.LOCK_NAMES, lock)
    cursor = await conn.execute(FLOW_CANDIDATES, params | {"queues": queues})
    await pipeline.sync()
    row = await cursor.fetchone()
    assert row is not None
    now, offered_json, held_json, groups_json, states_json = row
    offered = _offered.decode(offered_json)
    held = _held.decode(held_json)
    free = _group_slots(_groups.decode(groups_json)) if request.queues is not None else None
    states = _states.decode(states_json)
    buckets = {s.bucket: Bucket(served=s.served, tat=s.tat) for s in states}
    tats = {s.bucket: s.tat for s in states}
    doomed = [o for o in offered if o.expired and o.exhausted]
    candidates = [o.candidate() for o in offered if not (o.expired and o.exhausted)]
    limit = params["limit"]
    chosen = choose(
        offer(candidates, held, limit), held=held, buckets=buckets, free=free, limit=limit, now=now
    )
    if not chosen and not doomed:
        return []
    tokens = {o.run_id: o.token for o in offered}
    picked = [*chosen, *(o.candidate() for o in doomed)]
    claim = {
        "ids": [c.run_id for c in picked],
        "tokens": [tokens[c.run_id] if c.expired else None for c in picked],
        "doomed": [False] * len(chosen) + [True] * len(doomed),
        "fairs": [c.bucket for c in chosen] + [None] * len(doomed),
        "throttles": [_throttle_of(c) for c in chosen] + [None] * len(doomed),
    }
    paced = _paced(candidates, chosen, buckets, tats, now)
    cursor = await conn.execute(CLAIM_FLOW, params | claim | paced)
    await pipeline.sync()
    return await cursor.fetchall()


def _group_slots(groups: dict[str, tuple[int, int]]) -> dict[str, list[int]]:
    """Each queue's free slots as one counter per group, shared by the group's queues."""
    counters: dict[int, list[int]] = {}
    return {queue: counters.setdefault(group, [free]) for queue, (group, free) in groups.items()}


def _throttle_of(candidate: Candidate) -> str | None:
    """The throttle bucket a claimed run's start counts against: first starts only."""
    throttle = candidate.flow.throttle
    return throttle.bucket if throttle is not None and not candidate.started else None


def _paced(
    candidates: Sequence[Candidate],
    chosen: Sequence[Candidate],
    buckets: dict[str, Bucket],
    tats: dict[str, datetime | None],
    now: datetime,
) -> dict[str, list[Any]]:
    """The buckets whose state the claim changes, for ``CLAIM_FLOW``: the fair bucket of
    each claimed run (its last claim) and each throttle that let a first start go or
    held one back (from its state as read: its theoretical arrival time, or now)."""
    rows: dict[str, tuple[datetime | None, timedelta | None, timedelta | None, bool]] = {}
    for run in chosen:
        rows[run.bucket] = (None, None, None, False)
    rates = {c.flow.throttle.bucket: c.flow.throttle for c in candidates if c.flow.throttle}
    started = {_throttle_of(c) for c in chosen}
    for name, rate in rates.items():
        blocked = buckets[name].blocked_until is not None if name in buckets else False
        if name in started or blocked:
            base = max(tats.get(name) or now, now)
            rows[name] = (base, rate.interval, rate.interval * rate.burst, blocked)
    names = sorted(rows)
    return {
        "buckets": names,
        "bases": [rows[n][0] for n in names],
        "steps": [rows[n][1] for n in names],
        "tolerances": [rows[n][2] for n in names],
        "blocked": [rows[n][3] for n in names],
    }
