"""Claim-time flow control, decided the same way by every store.

A run under concurrency keys or a throttle (``model.Flow.concurrency``, ``.throttle``) is
*gated*: a claim takes it only after the plain runs it takes, and only when

- every concurrency bucket it is under has fewer than its limit of runs holding an
  unexpired lease (sleeping and waiting runs hold none);
- its queue group has a free slot, and the claim's ``limit`` is not reached;
- it is a first start and its throttle (GCRA) allows one now, or it was started before
  (a resume, a retry, a takeover): those are never throttled.

Each run takes its turn in one *fair bucket*: its first concurrency bucket, else its
throttle's. A claim visits a queue's fair buckets round robin, in name order from the
bucket after the queue's cursor (where the previous claim stopped), and stops
after ``limit`` buckets that can offer a run (``offer``): a full bucket, or one whose
first starts a throttle holds back (and which has nothing else due), is skipped and
holds back no other. Each bucket offers its first due runs, as many as it has room for,
first starts apart from the others (so first starts held back never hold back a
resume). The claim then takes every visited bucket's first run before any bucket's
second (``choose``), each only if all its limits have room.

The stores gather the candidates (the memory store from its dicts, PostgreSQL with an
index per bucket, see ``postgres._flow_claim``) and apply the decision; the rules are
here, so both prove the same semantics.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from itertools import groupby
from typing import TYPE_CHECKING

from slayq.runtime import flow_status

if TYPE_CHECKING:
    from collections.abc import Iterable
    from datetime import datetime

    from slayq.model import Flow, FlowRate, RunId, RunInfo


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
class ThrottleState:
    """A throttle bucket's GCRA state: its theoretical arrival time (None: unused), and
    until when a first start is held back (set by the claim that held one back)."""

    tat: datetime | None = None
    blocked_until: datetime | None = None


@dataclass
class Offer:
    """What a claim may take: the takeovers (expired leases, tried first: their runs had
    started), the runs the visited buckets offer, each bucket's turn (its place in its
    queue's round) and per queue the last bucket that offered runs."""

    takeovers: list[Candidate] = field(default_factory=list)
    runs: list[Candidate] = field(default_factory=list)
    turns: dict[str, int] = field(default_factory=dict)
    cursors: dict[str, str] = field(default_factory=dict)


def room(flow: Flow, held: dict[str, int], limit: int) -> int:
    """How many runs a fair bucket may start: the room under its concurrency limit, at
    most ``limit`` (a bucket of a throttle alone: ``limit``)."""
    if not flow.concurrency:
        return limit
    first = flow.concurrency[0]
    return max(0, min(limit, first.limit - held.get(first.bucket, 0)))


def held_back(run: Candidate, throttles: dict[str, ThrottleState], now: datetime) -> bool:
    """Whether a first start's throttle held one back until later than now."""
    throttle = run.flow.throttle
    if run.started or throttle is None:
        return False
    until = throttles.get(throttle.bucket, ThrottleState()).blocked_until
    return until is not None and until > now


def offer(
    candidates: Iterable[Candidate],
    *,
    held: dict[str, int],
    throttles: dict[str, ThrottleState],
    cursors: dict[str, str],
    limit: int,
    now: datetime,
) -> Offer:
    """Visit each queue's fair buckets round robin from its cursor, until ``limit`` of
    them offered runs: up to ``room`` of its runs started before and up to ``room`` of
    its first starts (none while their throttle holds one back), each in claim order.
    When ``n`` buckets of a queue offer runs, each offers at most ``limit - n + 1`` of
    each kind (enough to fill the claim if the others offer one each). Every expired
    lease is offered, as a takeover."""
    made = Offer()
    timed: list[Candidate] = []
    for run in candidates:
        (made.takeovers if run.expired else timed).append(run)
    made.takeovers.sort(key=lambda c: c.order)
    by_queue = sorted(timed, key=lambda c: (c.queue, c.bucket, c.started, c.order))
    for queue, runs in groupby(by_queue, key=lambda c: c.queue):
        buckets = {b: list(r) for b, r in groupby(runs, key=lambda c: c.bucket)}
        cursor = cursors.get(queue)
        names = sorted(buckets)
        if cursor is not None:  # the buckets after the cursor, then from the first on
            names = [b for b in names if b > cursor] + [b for b in names if b <= cursor]
        offers: list[tuple[list[Candidate], list[Candidate]]] = []
        for name in names:
            if len(offers) >= limit:
                break
            stream = buckets[name]
            space = room(stream[0].flow, held, limit)
            started = [r for r in stream if r.started][:space]
            first = [r for r in stream if not r.started][:space]
            if first and held_back(first[0], throttles, now):
                first = []
            if not started and not first:
                continue
            made.turns[name] = len(offers)
            made.cursors[queue] = name
            offers.append((started, first))
        cap = limit - len(offers) + 1
        for started, first in offers:
            made.runs += started[:cap] + first[:cap]
    return made


def choose(
    offered: Offer,
    *,
    held: dict[str, int],
    throttles: dict[str, ThrottleState],
    free: dict[str, list[int]] | None,
    limit: int,
    now: datetime,
) -> list[Candidate]:
    """The runs to claim, in claim order: the takeovers, then each visited bucket's first
    run, in turn, then each one's second, and so on; each taken only if all its limits
    have room.

    ``held`` (runs holding a lease, per concurrency bucket), ``throttles`` and ``free``
    (a queue's group's free slots, one counter shared by the group's queues; None: no
    queue limits) are updated as runs are taken.
    """
    rank: dict[RunId, int] = {}  # a run's place in its bucket's offer
    ranked: dict[str, int] = {}  # how many of a bucket's runs are ranked so far
    for run in sorted(offered.runs, key=lambda c: (c.bucket, c.order)):
        rank[run.run_id] = ranked.get(run.bucket, 0)
        ranked[run.bucket] = rank[run.run_id] + 1

    def turn(run: Candidate) -> tuple[int, int, tuple[int, datetime, int]]:
        return (rank[run.run_id], offered.turns[run.bucket], run.order)

    chosen: list[Candidate] = []
    for run in [*offered.takeovers, *sorted(offered.runs, key=turn)]:
        if len(chosen) >= limit:
            break
        slots = free.get(run.queue) if free is not None else None
        if free is not None and (slots is None or slots[0] <= 0):
            continue
        if any(held.get(s.bucket, 0) >= s.limit for s in run.flow.concurrency):
            continue
        throttle = run.flow.throttle if not run.started else None
        if throttle is not None and not _pace(throttles, throttle, now):
            continue
        for slot in run.flow.concurrency:
            held[slot.bucket] = held.get(slot.bucket, 0) + 1
        if slots is not None:
            slots[0] -= 1
        chosen.append(run)
    return chosen


def _pace(throttles: dict[str, ThrottleState], throttle: FlowRate, now: datetime) -> bool:
    """GCRA: a start is allowed while the bucket's theoretical arrival time is at most
    ``burst`` intervals ahead of now; each start moves it one interval on. So ``burst +
    1`` start at once, then one per interval. A start held back marks when it may go."""
    state = throttles.setdefault(throttle.bucket, ThrottleState())
    tat = max(state.tat or now, now)
    tolerance = throttle.interval * throttle.burst
    if tat - now > tolerance:
        state.blocked_until = tat - tolerance
        return False
    state.tat = tat + throttle.interval
    state.blocked_until = None
    return True


def throttle_opens(throttle: FlowRate, state: ThrottleState | None) -> datetime | None:
    """When the bucket's throttle lets the next first start go (``_pace``'s rule); None
    if it has never started one."""
    if state is None or state.tat is None:
        return None
    return state.tat - throttle.interval * throttle.burst


def cursors(offered: Offer, chosen: Iterable[Candidate]) -> dict[str, str]:
    """Where each queue's next round starts after: the last bucket in turn a run was
    taken from; if none was, the last one visited (which all held something back)."""
    moved = dict(offered.cursors)
    last: dict[str, int] = {}
    for run in chosen:
        turn = offered.turns.get(run.bucket)
        if turn is not None and turn >= last.get(run.queue, -1):
            last[run.queue] = turn
            moved[run.queue] = run.bucket
    return moved


def held_back_of(
    run: RunInfo, held: dict[str, int], tat: datetime | None, now: datetime
) -> str | None:
    """``RunInfo.held_back`` of ``run``: ``held`` runs per concurrency bucket (as claims
    count them), ``tat`` its throttle's GCRA state if it is a first start (else None)."""
    flow = run.flow
    if flow is None:
        return None
    full = [
        (s, held.get(s.bucket, 0)) for s in flow.concurrency if held.get(s.bucket, 0) >= s.limit
    ]
    opens = None
    if flow.throttle is not None and tat is not None:
        opens = throttle_opens(flow.throttle, ThrottleState(tat=tat))
    return flow_status.held_back(
        event=run.event,
        status=run.status,
        run_at=run.run_at,
        data=run.data,
        flow=flow,
        now=now,
        full=full,
        throttled_until=opens,
    )
