"""Claims: the parameters of a claim, and the claim of gated runs (flow control) that a
tick leaves to a transaction of its own.

A queue group's limit is cluster-wide: a claim counts the runs of the group's queues
that anyone holds under an unexpired lease. Two claimers counting at once could both see
the same free slot, so a claim first takes an exclusive transaction-scoped advisory lock
per queue it claims from; the count runs in a later statement, whose snapshot includes
every claim that held the lock before. Claims from unrelated queues do not wait on each
other; ``queues=None`` claims without limits and takes no lock.

The claim of plain runs, and what its rows call for, runs in the tick function
(``_tick``, ``sql.ticking``). Runs under flow control are claimed after the plain ones,
by ``_flow_claim``, in the tick's transaction or in one that takes the queues' locks
again and counts the slots afresh: ``claim_gated_runs``, with the same follow-ups, sent
from here.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from slayq.model import CANCELLED, LEASE_EXPIRED, Claim, Lease, RunId
from slayq.store.postgres._codec import dump, load_memo
from slayq.store.postgres._flow_claim import claim_gated
from slayq.store.postgres.sql.claiming import CLAIM_COLUMNS, LOCK_QUEUES_GENERIC, MEMOS
from slayq.store.postgres.sql.common import INDEXED_PLANS, QUEUE_LOCKS
from slayq.store.postgres.sql.ticking import FOLLOW_UP, FOLLOW_UP_COLUMNS

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


def claim_params(request: ClaimRequest | None) -> dict[str, Any]:
    """A claim's parameters (``limit`` 0: none), with ``locks``, the queues it locks."""
    if request is None or not claims_anything(request):
        return group_params(()) | {"locks": [], "limit": 0, "lease_for": None, "owner": None}
    groups = group_params(request.queues)
    locks = sorted(set(groups["member_queues"]))
    return groups | {
        "locks": locks,
        "limit": request.limit,
        "lease_for": request.lease_for,
        "owner": request.owner,
    }


def claims_anything(request: ClaimRequest) -> bool:
    queues = request.queues
    return request.limit > 0 and (queues is None or any(g.names for g in queues))


class GatedClaims:
    """The gated runs a claim took, read once its transaction committed: their memos
    were queued in its pipeline and arrive with the COMMIT, costing no round trip."""

    def __init__(self, rows: list[tuple[Any, ...]], memos: AsyncCursor[Any] | None) -> None:
        self._rows = rows
        self._memos = memos

    async def read(self) -> list[Claim]:
        memos = self._memos
        memo_by_run: dict[str, str] = dict(await memos.fetchall()) if memos is not None else {}
        return [claim_of_row(row, memo_by_run.get(row[0])) for row in self._rows]


async def claim_gated_runs(
    conn: AsyncConnection[Any],
    pipeline: AsyncPipeline,
    request: ClaimRequest,
    queues: list[str],
    limit: int,
    *,
    locked: bool,
    now: datetime | None,
    channel: str,
) -> GatedClaims:
    """Claim up to ``limit`` gated runs of ``queues`` (those of ``request`` that have had
    gated runs) in the caller's pipelined transaction: the queues' locks first, unless
    the transaction holds them already (``locked``: the tick's), then ``claim_gated``,
    then what the claimed and doomed runs call for."""
    params = claim_params(request) | {
        "now": now,
        "limit": limit,
        "lease_expired": dump(LEASE_EXPIRED),
    }
    # Planned as in the tick function, by index (claim_gated then sets the plan cache
    # mode around each of its statements, and leaves it at auto).
    if request.queues is not None and not locked:
        await conn.execute(LOCK_QUEUES_GENERIC, {"ns": QUEUE_LOCKS, "names": params["locks"]})
    else:
        await conn.execute(INDEXED_PLANS)
    rows = await claim_gated(conn, pipeline, request, queues, params)
    claimed = [row for row in rows if row[1] is not None]
    await _follow_up(conn, rows, now=now, channel=channel)
    resuming = [row[0] for row in claimed if row[15] is not None or row[16] is not None]
    memos = await conn.execute(MEMOS, {"ids": resuming}) if resuming else None
    return GatedClaims(claimed, memos)


async def _follow_up(
    conn: AsyncConnection[Any],
    rows: list[tuple[Any, ...]],
    *,
    now: datetime | None,
    channel: str,
) -> None:
    """What a claim's rows call for, by the tick function's follow-up (``FOLLOW_UP``):
    sent only if a run was taken over, doomed, or resumes with pending steps, which runs
    claimed for the first time (most) are not."""
    columns = {name: i for i, (name, _kind) in enumerate(CLAIM_COLUMNS)}
    token, previous, pending = (
        columns["lease_token"],
        columns["previous_owner"],
        columns["has_pending"],
    )
    if not any(r[token] is None or r[previous] is not None or r[pending] is not None for r in rows):
        return
    docs = [{name: row[columns[name]] for name in FOLLOW_UP_COLUMNS} for row in rows]
    await conn.execute(
        FOLLOW_UP,
        {
            "rows": dump(docs),
            "now": now,
            "channel": channel,
            "lease_expired": dump(LEASE_EXPIRED),
            "cancelled": dump(CANCELLED),
        },
    )


def claim_of_row(row: tuple[Any, ...], memo: str | None) -> Claim:
    """A claimed run, from a row as ``CLAIM_ROWS`` gives it (see ``CLAIM_COLUMNS``)."""
    (run_id, token, expires_at, event, data, queue, attempt, max_attempts, endpoint) = row[:9]
    previous_owner, trace, due_at = row[9], row[14], row[12]
    return claim_of(
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
    )


def claim_of(
    run_id: str,
    token: int,
    expires_at: datetime,
    event: str,
    data: Any,
    queue: str,
    attempt: int,
    max_attempts: int,
    endpoint: str | None,
    previous_owner: str | None,
    trace: Any,
    due_at: datetime,
    memo: str | None,
) -> Claim:
    """A claimed run, from its columns (``sql.ticking.CLAIMED``) and its memo."""
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
