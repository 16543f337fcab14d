"""``claim``: lock due runs with SKIP LOCKED, lease them, hand them out with their memo.

A queue group's limit is cluster-wide: the claim counts the runs of the group's queues
that anyone holds under an unexpired lease. Two claimers counting at once could both see
the same free slot, so a claim first takes an exclusive transaction-scoped advisory lock
per queue it claims from; the count runs in a later statement, whose snapshot includes
every claim that held the lock before. Claims from unrelated queues do not wait on each
other; ``queues=None`` claims without limits and takes no lock.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from slayq.model import Claim, Lease, RunId
from slayq.store.memory import CANCELLED, LEASE_EXPIRED
from slayq.store.postgres import _queries as q
from slayq.store.postgres import _run_queries as rq
from slayq.store.postgres._codec import dump, load_memo

if TYPE_CHECKING:
    from collections.abc import Sequence
    from datetime import datetime, timedelta

    from psycopg import AsyncConnection

    from slayq.store.protocol import QueueLimit


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
    conn: AsyncConnection[Any],
    *,
    queues: Sequence[QueueLimit] | None,
    limit: int,
    lease_for: timedelta,
    owner: str,
    now: datetime | None,
    channel: str,
) -> list[Claim]:
    groups = group_params(queues)
    params = groups | {
        "now": now,
        "limit": limit,
        "lease_for": lease_for,
        "owner": owner,
        "lease_expired": dump(LEASE_EXPIRED),
    }
    async with conn.pipeline() as pipeline, conn.transaction():
        if queues is not None:
            names = sorted(set(groups["member_queues"]))
            lock = {"ns": q.QUEUE_LOCKS, "names": names, "exclusive": [True] * len(names)}
            await conn.execute(q.LOCK_NAMES, lock)
        cursor = await conn.execute(rq.CLAIM, params)
        await pipeline.sync()
        rows = await cursor.fetchall()
        claimed = [row[:8] for row in rows if row[1] is not None]
        dead = [row[0] for row in rows if row[1] is None]
        if dead:
            # A caller claimed before its callee failed here already had its pending
            # steps resolve to None at its claim; otherwise the callee's error answers it.
            seen: set[str] = set()
            answering: list[str] = []
            for row in rows:
                if row[1] is not None:
                    seen.add(row[0])
                elif row[8] not in seen:
                    answering.append(row[0])
            base = {"now": now, "channel": channel, "ids": dead}
            finish = {"status": "failed", "result": None, "error": dump(LEASE_EXPIRED)}
            await conn.execute(q.FINISH_IDS, base | finish)
            if answering:
                parents = base | {"ids": answering, "seq": None, "cancelled": dump(CANCELLED)}
                await conn.execute(q.LOCK_PARENTS, parents)
                await conn.execute(q.RESOLVE_PARENTS, parents)
        memos = None
        if claimed:
            ids = {"ids": [row[0] for row in claimed], "now": now}
            await conn.execute(rq.EXPIRE_PENDING, ids)
            memos = await conn.execute(rq.MEMOS, ids)
    memo_by_run: dict[str, str] = dict(await memos.fetchall()) if memos is not None else {}
    return [
        Claim(
            lease=Lease(run_id=RunId(run_id), token=token, expires_at=expires_at),
            event=event,
            data=data,
            queue=queue,
            attempt=attempt,
            max_attempts=max_attempts,
            memo=load_memo(memo_by_run.get(run_id)),
        )
        for run_id, token, expires_at, event, data, queue, attempt, max_attempts in claimed
    ]
