"""``tick``: a batch's commits and the claims into the slots they free, in one call of
the tick function (``sql.ticking``): one statement, one round trip.

A tick of one claim (a worker of one queue group, the server) is one statement, its own
transaction; with more claims, their calls go in one pipelined transaction, the commits
in the first. Claims of queues that have had gated runs (flow control), with slots left,
go on after it (``_claim.claim_gated_runs``), in the tick's transaction kept open for
them, or, the first time, in one of their own (``GatedQueues``): two round trips more,
for those queues only.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from slayq.model import CANCELLED, LEASE_EXPIRED, Claim
from slayq.store.postgres._claim import GatedClaims, claim_gated_runs, claim_of, claim_params
from slayq.store.postgres._codec import dump
from slayq.store.postgres._transaction import pipelined_transaction
from slayq.store.postgres.sql.ticking import TICK

if TYPE_CHECKING:
    from collections.abc import Sequence
    from datetime import datetime

    from psycopg import AsyncConnection, AsyncCursor, AsyncPipeline

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


class GatedQueues:
    """The claims whose queues have had gated runs (flow control), as their last tick
    said. Their next tick keeps its transaction open for the claim of gated runs, as one
    transaction: a round trip more for the tick, but no transaction of their own.
    Without it, each tick of such queues cost a transaction more: keyed runs/s in
    ``bench.bench_flow --quick`` went from 809 to 680 with the tick function (medians of
    3 alternating rounds); with it, from 866 to 783 (6 rounds)."""

    def __init__(self) -> None:
        self._claims: set[tuple[str, ...] | None] = set()

    @staticmethod
    def _key(request: ClaimRequest) -> tuple[str, ...] | None:
        queues = request.queues
        return None if queues is None else tuple(sorted({n for g in queues for n in g.names}))

    def expected(self, requests: Sequence[ClaimRequest]) -> bool:
        return any(self._key(request) in self._claims for request in requests)

    def learn(self, request: ClaimRequest, gated: bool) -> None:
        if gated:
            self._claims.add(self._key(request))
        else:
            self._claims.discard(self._key(request))


async def tick(
    conn: AsyncConnection[Any],
    batch: dict[str, Any] | None,
    requests: Sequence[ClaimRequest],
    *,
    now: datetime | None,
    channel: str,
    gated_queues: GatedQueues | None = None,
) -> Ticked:
    """Commit ``batch`` (``_batch.batch_params``; None: no commits) and make the claims."""
    shared = _CONSTANTS | {"now": now, "channel": channel}
    calls = [
        (batch if i == 0 and batch is not None else NO_BATCH) | claim_params(request) | shared
        for i, request in enumerate(requests or [None])
    ]
    gated_queues = gated_queues or GatedQueues()
    more: list[tuple[int, GatedClaims]] = []
    if gated_queues.expected(requests):
        async with pipelined_transaction(conn) as pipeline:
            cursors = [await conn.execute(TICK, call) for call in calls]
            await pipeline.sync()
            ticked, gated = await _read(cursors, requests, gated_queues)
            more = await _claim_gated(conn, pipeline, ticked, gated, True, now, channel)
    else:
        if len(calls) == 1:
            cursors = [await conn.execute(TICK, calls[0])]
        else:
            async with pipelined_transaction(conn):
                cursors = [await conn.execute(TICK, call) for call in calls]
        ticked, gated = await _read(cursors, requests, gated_queues)
        if gated:
            async with pipelined_transaction(conn) as pipeline:
                more = await _claim_gated(conn, pipeline, ticked, gated, False, now, channel)
    for i, claims in more:
        ticked.claimed[i] += await claims.read()
    return ticked


async def _claim_gated(
    conn: AsyncConnection[Any],
    pipeline: AsyncPipeline,
    ticked: Ticked,
    gated: list[tuple[ClaimRequest, list[str], int]],
    locked: bool,
    now: datetime | None,
    channel: str,
) -> list[tuple[int, GatedClaims]]:
    """The claims of gated runs ``gated`` calls for, with each claim's slots left, in the
    pipelined transaction of ``pipeline`` (``locked``: the tick's, holding the locks)."""
    more = []
    for request, queues, i in gated:
        left = request.limit - len(ticked.claimed[i])
        claims = await claim_gated_runs(
            conn, pipeline, request, queues, left, locked=locked, now=now, channel=channel
        )
        more.append((i, claims))
    return more


async def _read(
    cursors: list[AsyncCursor[Any]],
    requests: Sequence[ClaimRequest],
    gated_queues: GatedQueues,
) -> tuple[Ticked, list[tuple[ClaimRequest, list[str], int]]]:
    """The tick's rows; and the claims with gated runs to claim, with slots left: (the
    request, its queues that have had gated runs, its index)."""
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
    for i, request in enumerate(requests):
        gated_queues.learn(request, any(g[2] == i for g in gated))
    return ticked, [g for g in gated if g[0].limit > len(ticked.claimed[g[2]])]


def _claim_of(row: tuple[Any, ...]) -> Claim:
    """A claimed run, from a row of kind ``claim`` (see ``sql.ticking.RESULT``)."""
    return claim_of(*row[6:])
