"""Claim-time flow control, decided the same way by every store.

A run under concurrency keys or a throttle (``model.Flow.concurrency``, ``.throttle``) is
*gated*: a claim takes it only after the store's plain runs, and only when

- every concurrency bucket it is under has fewer than its limit of runs holding an
  unexpired lease (sleeping and waiting runs hold none);
- its queue group has a free slot, and the claim's ``limit`` is not reached;
- it is a first start and its throttle (GCRA) allows one now, or it was started before
  (a resume, a retry, a takeover): those are never throttled.

Each run takes its turn in one *fair bucket*: its first concurrency bucket, else its
throttle's. A bucket offers its first due runs, as many as it has room for (``offer``),
and the claim walks them round robin (``choose``): every bucket's first run before any
bucket's second, the bucket served longest ago first. A bucket that is full, or a
throttle that is spent, never holds back another bucket's runs.

The stores gather the candidates (the memory store from its dicts, PostgreSQL with an
index per bucket, see ``postgres._flow_claim``) and apply the decision; the decision
itself is here, so both prove the same semantics.
"""

from __future__ import annotations

from dataclasses import dataclass
from itertools import groupby
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from collections.abc import Iterable, Sequence
    from datetime import datetime

    from slayq.model import Flow, FlowRate, RunId

_NEVER_SERVED = -1


def fair_bucket(flow: Flow | None) -> str | None:
    """The bucket a run takes its turn in; None for a run no claim-time control gates."""
    if flow is None:
        return None
    if flow.concurrency:
        return flow.concurrency[0].bucket
    return flow.throttle.bucket if flow.throttle is not None else None


@dataclass(frozen=True)
class Candidate:
    """A gated run that is due: queued or suspended and due, or running under a lease
    that ran out (``expired``: a takeover, which costs it an attempt)."""

    run_id: RunId
    queue: str
    priority: int
    due_at: datetime
    seq: int
    flow: Flow
    started: bool  # claimed before: a resume, retry or takeover is not throttled
    expired: bool = False

    @property
    def bucket(self) -> str:
        bucket = fair_bucket(self.flow)
        assert bucket is not None, "only gated runs are candidates"
        return bucket

    @property
    def order(self) -> tuple[int, datetime, int]:
        """Claim order inside a bucket, as for every run: priority, then due, then age."""
        return (self.priority, self.due_at, self.seq)


@dataclass
class Bucket:
    """What a claim knows of a bucket: the lease token of its last claim (``served``;
    round robin serves the bucket served longest ago first) and, for a throttle, its
    GCRA theoretical arrival time ``tat`` (None: never used, or long ago)."""

    served: int | None = None
    tat: datetime | None = None
    # Set by ``choose``: a first start was held back by this throttle until then.
    blocked_until: datetime | None = None


def room(candidate: Candidate, held: dict[str, int], limit: int) -> int:
    """How many runs the candidate's fair bucket may start: the room under its
    concurrency limit, at most ``limit`` (a throttle-only bucket: ``limit``)."""
    flow = candidate.flow
    if not flow.concurrency:
        return limit
    first = flow.concurrency[0]
    return max(0, min(limit, first.limit - held.get(first.bucket, 0)))


def offer(candidates: Iterable[Candidate], held: dict[str, int], limit: int) -> list[Candidate]:
    """The runs each fair bucket puts forward: its first due runs in claim order, as many
    as ``room`` allows. Runs started before and first starts are offered apart, each up
    to the room, so first starts that a throttle holds back never hold back a resume."""
    offered: list[Candidate] = []
    by_bucket = sorted(candidates, key=lambda c: (c.bucket, c.started, c.order))
    for _, runs in groupby(by_bucket, key=lambda c: (c.bucket, c.started)):
        stream = list(runs)
        offered += stream[: room(stream[0], held, limit)]
    return offered


def choose(
    offered: Sequence[Candidate],
    *,
    held: dict[str, int],
    buckets: dict[str, Bucket],
    free: dict[str, list[int]] | None,
    limit: int,
    now: datetime,
) -> list[Candidate]:
    """The runs to claim, in claim order: round robin over the fair buckets (each
    bucket's first run, the bucket served longest ago first, then every bucket's second,
    and so on), each taken only if all its limits have room.

    ``held`` (runs holding a lease, per concurrency bucket), ``buckets`` (per fair and
    throttle bucket) and ``free`` (a queue's group's free slots, shared by the group's
    queues; None: no queue limits) are updated as runs are taken.
    """
    rank: dict[RunId, int] = {}  # a run's place in its bucket's offer
    taken: dict[str, int] = {}  # how many of a bucket's runs are ranked so far
    for run in sorted(offered, key=lambda c: (c.bucket, c.order)):
        rank[run.run_id] = taken.get(run.bucket, 0)
        taken[run.bucket] = rank[run.run_id] + 1

    def turn(run: Candidate) -> tuple[int, int, tuple[int, datetime, int]]:
        served = buckets.get(run.bucket, Bucket()).served
        return (rank[run.run_id], _NEVER_SERVED if served is None else served, run.order)

    chosen: list[Candidate] = []
    for run in sorted(offered, key=turn):
        if len(chosen) >= limit:
            break
        slots = free.get(run.queue) if free is not None else None
        if free is not None and (slots is None or slots[0] <= 0):
            continue
        if any(held.get(s.bucket, 0) >= s.limit for s in run.flow.concurrency):
            continue
        throttle = run.flow.throttle if not run.started else None
        if throttle is not None and not _pace(buckets, throttle, now):
            continue
        for slot in run.flow.concurrency:
            held[slot.bucket] = held.get(slot.bucket, 0) + 1
        if slots is not None:
            slots[0] -= 1
        chosen.append(run)
    return chosen


def _pace(buckets: dict[str, Bucket], throttle: FlowRate, now: datetime) -> bool:
    """GCRA: a start is allowed while the bucket's theoretical arrival time is at most
    ``burst`` intervals ahead of now; each start moves it one interval on. So ``burst +
    1`` start at once, then one per interval. A start held back marks when it may go."""
    state = buckets.setdefault(throttle.bucket, Bucket())
    tat = max(state.tat or now, now)
    tolerance = throttle.interval * throttle.burst
    if tat - now > tolerance:
        state.blocked_until = tat - tolerance
        return False
    state.tat = tat + throttle.interval
    state.blocked_until = None
    return True


def served(buckets: dict[str, Bucket], chosen: Sequence[Candidate], tokens: Sequence[int]) -> None:
    """Record, per fair bucket, the lease token of its last claimed run (round robin)."""
    for run, token in zip(chosen, tokens, strict=True):
        state = buckets.setdefault(run.bucket, Bucket())
        state.served = max(state.served or _NEVER_SERVED, token)
