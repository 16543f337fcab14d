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
from slayq.store.postgres._codec import dump, load_memo
from slayq.store.postgres._flow_claim import GATED_QUEUES, claim_gated
from slayq.store.postgres._transaction import pipelined_transaction
from slayq.store.postgres.sql.claiming import (
    CLAIM,
    END_EXPIRED,
    EXPIRE_PENDING,
    LOCK_QUEUES_GENERIC,
    MEMOS,
)
from slayq.store.postgres.sql.common import INDEXED_PLANS, QUEUE_LOCKS
from slayq.store.postgres.sql.finishing import FINISH_IDS, LOCK_PARENTS, RESOLVE_PARENTS

if TYPE_CHECKING:
    from collections.abc import Sequence
    from datetime import datetime

    from psycopg import AsyncConnection, AsyncCursor, AsyncPipeline

    from slayq.store.protocol import ClaimRequest, QueueLimit


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
        await conn.execute(LOCK_QUEUES_GENERIC, {"ns": QUEUE_LOCKS, "names": names})
    else:
        await conn.execute(INDEXED_PLANS)
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
        await conn.execute(FINISH_IDS, base | finish)
        if answering:
            parents = base | {"ids": answering, "seq": None, "cancelled": dump(CANCELLED)}
            await conn.execute(LOCK_PARENTS, parents)
            await conn.execute(RESOLVE_PARENTS, parents)
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
