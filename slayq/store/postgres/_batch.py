"""``commit_batch``: many runs' transitions and the claims into the slots they free, in
one transaction of two round trips.

The transitions that touch only their own run (Continue, a retry, a suspension on sleeps
only, finishing a run no caller waits for) go into ``COMMIT_BATCH``: one statement for
the whole batch, its rows as JSON documents (Postgres parses one document far faster
than a dozen arrays, and psycopg adapts one string, not a list per column). Each run is
fenced by its own lease in the statement's join: a run whose lease was lost is left out
and reported, the others commit. The claims then run in the same transaction, so they
see the slots the batch freed, and the cluster-wide limits stay exact.

Everything else (sent events, waits, invocations, answering a caller) takes the full
path of ``_commit``, one transaction per run, after the batch's.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

import msgspec

from slayq.errors import LeaseLostError
from slayq.model import Completed, Continue, ErrorInfo, Failed, PendingStep, Suspend
from slayq.store.postgres import _claim
from slayq.store.postgres._codec import dump
from slayq.store.postgres._history import ended_attempt
from slayq.store.postgres._queries import INDEXED_PLANS, NOW, backlog, compact
from slayq.store.postgres._transaction import pipelined_transaction

if TYPE_CHECKING:
    from collections.abc import Sequence

    from psycopg import AsyncConnection

    from slayq.errors import StoreError
    from slayq.model import Lease, Transition
    from slayq.store.postgres._claim import ClaimedRuns
    from slayq.store.protocol import ClaimRequest

_MICROSECOND = timedelta(microseconds=1)

# One row per transition (``idx``: its place in the batch), its steps and its sleeps.
# JSON null arrives as SQL null: a result or output of None is stored as 'null'::json.
COMMIT_BATCH = compact(f"""
with
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
)
select b.idx, held.id is not null, coalesce(held.parented and held.finishes, false),
       (select count(*) from notified)
from b left join held on held.idx = b.idx
order by b.idx
""")


class _Run(msgspec.Struct):
    idx: int
    run: str
    token: int
    outcome: str
    ended: str | None
    finishes: bool
    result: Any
    error: ErrorInfo | None
    retry_after: timedelta | None  # ISO 8601 durations: never negative here
    replayed: int
    executed: int


class _Step(msgspec.Struct):
    idx: int
    name: str
    kind: str
    output: Any
    error: ErrorInfo | None
    started_at: datetime | None
    duration: timedelta | None


class _Nap(msgspec.Struct):
    idx: int
    pos: int
    name: str
    until: datetime | None
    delay_us: int | None
    spec: PendingStep


def batchable(transition: Transition) -> bool:
    """Whether ``COMMIT_BATCH`` can take the transition (else it takes the full path)."""
    outcome = transition.outcome
    if transition.sent:
        return False
    return not isinstance(outcome, Suspend) or all(p.kind == "sleep" for p in outcome.pending)


def _micros(delta: timedelta | None) -> int | None:
    return None if delta is None else delta // _MICROSECOND


def batch_params(commits: Sequence[tuple[int, Lease, Transition]]) -> dict[str, Any]:
    """The three documents of ``COMMIT_BATCH`` for (index, lease, transition) triples."""
    runs: list[_Run] = []
    steps: list[_Step] = []
    naps: list[_Nap] = []
    for idx, lease, transition in commits:
        outcome = transition.outcome
        row = _Run(
            idx=idx,
            run=lease.run_id,
            token=lease.token,
            outcome="continue",
            ended=None,
            finishes=False,
            result=None,
            error=None,
            retry_after=None,
            replayed=transition.replayed,
            executed=len(transition.steps),
        )
        if isinstance(outcome, Completed):
            row.outcome, row.finishes, row.result = "completed", True, outcome.result
        elif isinstance(outcome, Failed):
            row.error = outcome.error
            if outcome.retry_after is None:
                row.outcome, row.ended, row.finishes = "failed", "failed", True
            else:
                row.outcome, row.ended = "retry", "retrying"
                row.retry_after = outcome.retry_after
        elif isinstance(outcome, Suspend):
            row.outcome, row.ended = "sleep", "suspended"
            naps += [
                _Nap(idx, pos, p.name, p.until, _micros(p.delay), p)
                for pos, p in enumerate(outcome.pending, start=1)
            ]
        else:
            assert isinstance(outcome, Continue)
        runs.append(row)
        steps += [
            _Step(idx, s.name, s.kind, s.output, s.error, s.started_at, s.duration)
            for s in transition.steps
        ]
    runs.sort(key=lambda row: row.run)  # COMMIT_BATCH locks the runs in this order
    return {"runs": dump(runs), "steps": dump(steps), "naps": dump(naps)}


def lost_lease(lease: Lease) -> LeaseLostError:
    return LeaseLostError(
        f"run {lease.run_id}: lease {lease.token} is no longer held "
        "(it expired and was taken over, or the run was cancelled)"
    )


@dataclass
class BatchCommitted:
    """What the batch's transaction did: per transition, the error that kept it out
    (None: committed, or left to the full path); the transitions left to the full path,
    by index; and each claim's runs, to read now that it committed."""

    errors: list[StoreError | None]
    full_path: list[int]
    claimed: list[ClaimedRuns]


async def commit_batch(
    conn: AsyncConnection[Any],
    commits: Sequence[tuple[Lease, Transition]],
    claims: Sequence[ClaimRequest],
    *,
    now: datetime | None,
    channel: str,
) -> BatchCommitted:
    """Commit the batchable transitions and claim, in one pipelined transaction."""
    errors: list[StoreError | None] = [None] * len(commits)
    batched = [(i, lease, t) for i, (lease, t) in enumerate(commits) if batchable(t)]
    full = [i for i, (_lease, t) in enumerate(commits) if not batchable(t)]
    claiming = sorted({name for c in claims if c.queues for g in c.queues for name in g.names})
    claim_all = any(c.queues is None for c in claims)
    claimed: list[ClaimedRuns] = []
    cursor = None
    async with pipelined_transaction(conn) as pipeline:
        if batched:
            params = batch_params(batched) | {"now": now, "channel": channel}
            params |= {"claiming": claiming, "claim_all": claim_all}
            # Planned once, not each tick (~450 µs of planning), reading by index only,
            # as claims are (see INDEXED_PLANS and test_commit_plans).
            await conn.execute(INDEXED_PLANS)
            cursor = await conn.execute(COMMIT_BATCH, params)
        for request in claims:
            claimed.append(
                await _claim.claim_in_transaction(conn, pipeline, request, now=now, channel=channel)
            )
    rows = await cursor.fetchall() if cursor is not None else []
    for idx, held, parented, _notified in rows:
        if not held:
            errors[idx] = lost_lease(commits[idx][0])
        elif parented:  # finishing answers a caller: the full path
            full.append(idx)
    return BatchCommitted(errors=errors, full_path=sorted(full), claimed=claimed)
