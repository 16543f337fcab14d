"""``claim``: lock due runs with SKIP LOCKED, lease them, hand them out with their memo.

A queue group's limit is cluster-wide: the claim counts the runs of the group's queues
that anyone holds under an unexpired lease. Two claimers counting at once could both see
the same free slot, so a claim first takes an exclusive transaction-scoped advisory lock
per queue it claims from; the count runs in a later statement, whose snapshot includes
every claim that held the lock before. Claims from unrelated queues do not wait on each
other; ``queues=None`` claims without limits and takes no lock. Runs under flow control
are claimed after the plain ones, in the same transaction, by ``_flow_claim``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from slayq.model import CANCELLED, LEASE_EXPIRED, Claim, Lease, RunId
from slayq.store.postgres import _queries as q
from slayq.store.postgres._codec import dump, load_memo
from slayq.store.postgres._flow_claim import GATED_QUEUES, claim_gated
from slayq.store.postgres._history import ended_attempt
from slayq.store.postgres._queries import (
    GROUPS,
    NOW,
    PAIRS,
    TIMED,
    compact,
    history,
    leased,
)
from slayq.store.postgres._run_queries import STEP_JSON
from slayq.store.postgres._transaction import pipelined_transaction

if TYPE_CHECKING:
    from collections.abc import Sequence
    from datetime import datetime

    from psycopg import AsyncConnection, AsyncCursor, AsyncPipeline

    from slayq.store.protocol import ClaimRequest, QueueLimit


# Gated runs (flow control: runs.gated) are left to ``_flow_claim``: runs_due sorts them
# after the plain runs of each (queue, priority), and ``not r.gated`` is part of the due
# scan's index condition, so they are never read here; their expired leases are left too.
# Queue groups: see ``GROUPS``. Due runs come from a loose scan over
# the (queue, priority) pairs of the runs_due index, then each pair's due runs in
# order, so a million runs sleeping until next year cost nothing here. Paused queues
# are dropped from the pairs before their runs are read (one hashed subplan over a few
# rows), and their expired leases are left alone: nothing of a paused queue is claimed.
CLAIM = compact(f"""
with recursive
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
)
select k.id::text, lease_token, lease_expires_at, event, data, k.queue, attempt,
       max_attempts, endpoint, previous_owner, null::text, priority, due_at, seq, trace,
       {history("k")}
from claimed as k join chosen as c on c.id = k.id
union all
select d.id::text, null, null, null, null, null, null, null, null, null,
       r.parent_run_id::text, d.priority, d.due_at, d.seq, null, null, null
from doomed as d
join runs as r on r.id = d.id
order by priority, due_at, seq
""")

# The attempts whose lease ran out, of runs this claim took over (``claimed``) or failed
# (as ``runs``' walk reached them on their last attempt): ``number`` and ``owner`` of the
# ended attempt (null: the run's own, unchanged by the claim). A taken-over run's new
# attempt starts now; a failed one has none.
END_EXPIRED = compact(f"""
with ending as (
    select r.id, coalesce(t.number, r.attempt) as attempt, r.attempt_started_at,
           coalesce(t.owner, r.lease_owner) as lease_owner, r.attempt_replayed,
           r.attempt_executed, t.claimed
    from unnest(%(ids)s::uuid[], %(numbers)s::int[], %(owners)s::text[], %(claimed)s::bool[])
         as t(id, number, owner, claimed)
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


def group_params(queues: Sequence[QueueLimit] | None) -> dict[str, Any]:
    """Queue groups as arrays: every (queue, group) membership counts held slots; a queue
    named by several groups takes its slots from the last, as in ``MemoryStore``."""
    members: dict[tuple[str, int], None] = {}
    route: dict[str, int] = {}
    for number, group in enumerate(queues or (), start=1):
        for name in group.names:
            members[(name, number)] = None
            route[name] = number
    return {
        "all": queues is None,
        "member_queues": [name for name, _ in members],
        "member_groups": [number for _, number in members],
        "route_queues": list(route),
        "route_groups": list(route.values()),
        "concurrency": [group.concurrency for group in queues or ()],
    }


async def claim(
    conn: AsyncConnection[Any], request: ClaimRequest, *, now: datetime | None, channel: str
) -> list[Claim]:
    async with pipelined_transaction(conn) as pipeline:
        claimed = await claim_in_transaction(conn, pipeline, request, now=now, channel=channel)
    return await claimed.read()


class ClaimedRuns:
    """The runs a claim took, read once its transaction committed: their memos were
    queued in its pipeline and arrive with the COMMIT, costing no round trip of their own."""

    def __init__(self, rows: list[tuple[Any, ...]], memos: AsyncCursor[Any] | None) -> None:
        self._rows = rows
        self._memos = memos

    async def read(self) -> list[Claim]:
        memos = self._memos
        memo_by_run: dict[str, str] = dict(await memos.fetchall()) if memos is not None else {}
        return [_claim_of(row, memo_by_run.get(row[0])) for row in self._rows]


async def claim_in_transaction(
    conn: AsyncConnection[Any],
    pipeline: AsyncPipeline,
    request: ClaimRequest,
    *,
    now: datetime | None,
    channel: str,
) -> ClaimedRuns:
    """Claim inside the caller's pipelined transaction; read the result after it commits."""
    queues, limit = request.queues, request.limit
    if limit <= 0 or (queues is not None and not any(g.names for g in queues)):
        return ClaimedRuns([], None)
    groups = group_params(queues)
    params = groups | {
        "now": now,
        "limit": limit,
        "lease_for": request.lease_for,
        "owner": request.owner,
        "lease_expired": dump(LEASE_EXPIRED),
    }
    # Planned once for any parameters (a generic plan), not afresh on each claim: a
    # custom plan costs ~1.1 ms of planning for ~0.6 ms of execution, and the claim's
    # shape keeps the generic plan right at any table size (bench.claim_plans: 1.1M runs,
    # 220k due), planned without sequential scans (see ``INDEXED_PLANS``). Local to the
    # statement: GATED_QUEUES resets the plan cache mode for the statements after it.
    # Limited queues are locked first (see the module doc), in the same statement.
    if queues is not None:
        names = sorted(set(groups["member_queues"]))
        await conn.execute(q.LOCK_QUEUES_GENERIC, {"ns": q.QUEUE_LOCKS, "names": names})
    else:
        await conn.execute(q.INDEXED_PLANS)
    cursor = await conn.execute(CLAIM, params)
    # Resets the mode, and names the claimed queues where gated runs (flow control)
    # are due: CLAIM leaves them to claim_gated, with the slots it left.
    gated = await conn.execute(GATED_QUEUES, params)
    await pipeline.sync()
    rows = await cursor.fetchall()
    gated_queues: list[str] = (await gated.fetchone() or (None, []))[1]
    left = limit - sum(1 for row in rows if row[1] is not None)
    if gated_queues and left > 0:
        rows += await claim_gated(conn, pipeline, request, gated_queues, params | {"limit": left})
    # In claim order: a claimed run has a lease token (row[1]); a run that failed
    # instead has none, and names its caller (row[10]) if it was invoked.
    claimed = [row for row in rows if row[1] is not None]
    dead = [row[0] for row in rows if row[1] is None]
    taken = [(row[0], row[6] - 1, row[9]) for row in claimed if row[9] is not None]
    if taken or dead:
        ended = [*taken, *((run_id, None, None) for run_id in dead)]
        expired = {
            "ids": [e[0] for e in ended],
            "numbers": [e[1] for e in ended],
            "owners": [e[2] for e in ended],
            "claimed": [e[1] is not None for e in ended],
        }
        await conn.execute(END_EXPIRED, params | expired)
    if dead:
        # A caller claimed before its callee failed here already had its pending
        # steps resolve to None at its claim; otherwise the callee's error answers it.
        seen: set[str] = set()
        answering: list[str] = []
        for row in rows:
            if row[1] is not None:
                seen.add(row[0])
            elif row[10] not in seen:
                answering.append(row[0])
        base = {"now": now, "channel": channel, "ids": dead}
        finish = {"status": "failed", "result": None, "error": dump(LEASE_EXPIRED)}
        await conn.execute(q.FINISH_IDS, base | finish)
        if answering:
            parents = base | {"ids": answering, "seq": None, "cancelled": dump(CANCELLED)}
            await conn.execute(q.LOCK_PARENTS, parents)
            await conn.execute(q.RESOLVE_PARENTS, parents)
    # Runs claimed for the first time (most) have no steps and nothing pending.
    pending = [row[0] for row in claimed if row[16] is not None]
    if pending:
        await conn.execute(EXPIRE_PENDING, {"ids": pending, "now": now})
    resuming = [row[0] for row in claimed if row[15] is not None or row[16] is not None]
    memos = await conn.execute(MEMOS, {"ids": resuming}) if resuming else None
    return ClaimedRuns(claimed, memos)


def _claim_of(row: tuple[Any, ...], memo: str | None) -> Claim:
    (
        run_id,
        token,
        expires_at,
        event,
        data,
        queue,
        attempt,
        max_attempts,
        endpoint,
        previous_owner,
        _parent,
        _priority,
        due_at,
        _seq,
        trace,
        _has_steps,
        _has_pending,
    ) = row
    return Claim(
        lease=Lease(run_id=RunId(run_id), token=token, expires_at=expires_at),
        event=event,
        data=data,
        queue=queue,
        attempt=attempt,
        max_attempts=max_attempts,
        memo=load_memo(memo),
        endpoint=endpoint,
        taken_over_from=previous_owner,
        trace=trace,
        due_at=due_at,
    )
