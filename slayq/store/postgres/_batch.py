"""``commit_batch``: many runs' transitions and the claims into the slots they free, in
one tick (``_tick``): one statement, one round trip.

The transitions that touch only their own run (Continue, a retry, a suspension on sleeps
only, finishing a run no caller waits for) go into the batch commit
(``COMMIT_BATCH_CTES``, in the tick function): one statement for the whole batch, its rows as JSON documents (Postgres parses one document far faster
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
from slayq.store.postgres._codec import dump
from slayq.store.postgres._tick import GatedQueues, tick

if TYPE_CHECKING:
    from collections.abc import Sequence

    from psycopg import AsyncConnection

    from slayq.errors import StoreError
    from slayq.model import Claim, Lease, Transition
    from slayq.store.protocol import ClaimRequest

_MICROSECOND = timedelta(microseconds=1)


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
    """Whether the batch commit can take the transition (else it takes the full path)."""
    outcome = transition.outcome
    if transition.sent:
        return False
    return not isinstance(outcome, Suspend) or all(p.kind == "sleep" for p in outcome.pending)


def _micros(delta: timedelta | None) -> int | None:
    return None if delta is None else delta // _MICROSECOND


def batch_params(commits: Sequence[tuple[int, Lease, Transition]]) -> dict[str, Any]:
    """The three documents of the batch commit for (index, lease, transition) triples."""
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
    runs.sort(key=lambda row: row.run)  # the batch commit locks the runs in this order
    return {"runs": dump(runs), "steps": dump(steps), "naps": dump(naps)}


def lost_lease(lease: Lease) -> LeaseLostError:
    return LeaseLostError(
        f"run {lease.run_id}: lease {lease.token} is no longer held "
        "(it expired and was taken over, or the run was cancelled)"
    )


@dataclass
class BatchCommitted:
    """What the tick did: per transition, the error that kept it out (None: committed,
    or left to the full path); the transitions left to the full path, by index; and
    each claim's runs."""

    errors: list[StoreError | None]
    full_path: list[int]
    claimed: list[list[Claim]]


async def commit_batch(
    conn: AsyncConnection[Any],
    commits: Sequence[tuple[Lease, Transition]],
    claims: Sequence[ClaimRequest],
    *,
    now: datetime | None,
    channel: str,
    gated_queues: GatedQueues | None = None,
) -> BatchCommitted:
    """Commit the batchable transitions and claim, in one tick (see ``_tick``)."""
    errors: list[StoreError | None] = [None] * len(commits)
    batched = [(i, lease, t) for i, (lease, t) in enumerate(commits) if batchable(t)]
    full = [i for i, (_lease, t) in enumerate(commits) if not batchable(t)]
    batch = None
    if batched:
        claiming = sorted({n for c in claims if c.queues for g in c.queues for n in g.names})
        claim_all = any(c.queues is None for c in claims)
        batch = batch_params(batched) | {"claiming": claiming, "claim_all": claim_all}
    ticked = await tick(conn, batch, claims, now=now, channel=channel, gated_queues=gated_queues)
    for idx, held, parented in ticked.commits:
        if not held:
            errors[idx] = lost_lease(commits[idx][0])
        elif parented:  # finishing answers a caller: the full path
            full.append(idx)
    return BatchCommitted(errors=errors, full_path=sorted(full), claimed=ticked.claimed)
