"""``tick``: a batch's commits and the claims into the slots they free, in one call of
the tick function (``sql.ticking``): one statement, one round trip.

A tick of one claim (a worker of one queue group, the server) is one statement, its own
transaction; with more claims, their calls go in one pipelined transaction, the commits
in the first. Claims of queues that have had gated runs (flow control), with slots left,
go on in a transaction of their own (``_claim.claim_gated_runs``): two round trips more,
for those queues only.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from slayq.model import CANCELLED, LEASE_EXPIRED, Claim, Lease, RunId
from slayq.store.postgres._claim import claim_gated_runs, claim_params
from slayq.store.postgres._codec import dump, load_memo
from slayq.store.postgres._transaction import pipelined_transaction
from slayq.store.postgres.sql.ticking import TICK

if TYPE_CHECKING:
    from collections.abc import Sequence
    from datetime import datetime

    from psycopg import AsyncConnection, AsyncCursor

    from slayq.store.protocol import ClaimRequest

# A tick without commits (the function's batch arguments null).
NO_BATCH: dict[str, Any] = {
    "runs": None,
    "steps": None,
    "naps": None,
    "claiming": [],
    "claim_all": False,
}

_CONSTANTS = {"lease_expired": dump(LEASE_EXPIRED), "cancelled": dump(CANCELLED)}


@dataclass
class Ticked:
    """What a tick did: per transition of the batch, (idx, held, parented): its index in
    the batch, whether its lease held, whether it finishes a run a caller waits for (it
    is then left to the full path); per claim request, the runs it claimed."""

    commits: list[tuple[int, bool, bool]]
    claimed: list[list[Claim]]


async def tick(
    conn: AsyncConnection[Any],
    batch: dict[str, Any] | None,
    requests: Sequence[ClaimRequest],
    *,
    now: datetime | None,
    channel: str,
) -> Ticked:
    """Commit ``batch`` (``_batch.batch_params``; None: no commits) and make the claims."""
    shared = _CONSTANTS | {"now": now, "channel": channel}
    calls = [
        (batch if i == 0 and batch is not None else NO_BATCH) | claim_params(request) | shared
        for i, request in enumerate(requests or [None])
    ]
    if len(calls) == 1:
        cursors: list[AsyncCursor[Any]] = [await conn.execute(TICK, calls[0])]
    else:
        async with pipelined_transaction(conn):
            cursors = [await conn.execute(TICK, call) for call in calls]
    ticked = Ticked(commits=[], claimed=[])
    gated: list[tuple[ClaimRequest, list[str], int]] = []
    for i, cursor in enumerate(cursors):
        claims: list[Claim] = []
        for row in await cursor.fetchall():
            kind = row[0]
            if kind == "claim":
                claims.append(_claim_of(row))
            elif kind == "commit":
                ticked.commits.append((row[1], row[2], row[3]))
            else:  # "gated": claimed after the rest, with the slots left
                gated.append((requests[i], row[5], i))
        if requests:
            ticked.claimed.append(claims)
    for request, queues, i in gated:
        left = request.limit - len(ticked.claimed[i])
        ticked.claimed[i] += await claim_gated_runs(
            conn, request, queues, left, now=now, channel=channel
        )
    return ticked


def _claim_of(row: tuple[Any, ...]) -> Claim:
    """A claimed run, from a row of kind ``claim`` (see ``sql.ticking.RESULT``)."""
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
        trace,
        due_at,
        memo,
    ) = row[6:]
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
