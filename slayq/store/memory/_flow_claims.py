"""Claim-time flow control in the memory store: concurrency keys and throttles.

The decision is ``slayq.store._flow_claims``' (the PostgreSQL store makes the same one);
here are the runs it is made on: every due gated run of the claimed queues, and the
slots of the runs that hold a lease now.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from slayq.store._flow_claims import Candidate, choose, cursors, held_back_of, offer

if TYPE_CHECKING:
    from collections.abc import Iterable
    from datetime import datetime, timedelta

    from slayq.model import Claim, RunInfo
    from slayq.store.memory._core import MemoryCore
    from slayq.store.memory._records import _Run


def claim_gated(
    core: MemoryCore,
    due: Iterable[_Run],
    free: dict[str, list[int]] | None,
    limit: int,
    lease_for: timedelta,
    owner: str,
    now: datetime,
) -> list[Claim]:
    """Claim up to ``limit`` of the ``due`` gated runs, in the queues of ``free`` (a
    queue's group's free slots; None: every queue, without limits)."""
    candidates: list[Candidate] = []
    for run in due:
        if free is not None and (run.queue not in free or free[run.queue][0] <= 0):
            continue  # a queue whose group is full is not visited: its buckets keep their turn
        assert run.flow is not None
        if run.status == "running" and run.attempt >= run.max_attempts:
            # Its lease ran out on its last attempt: it fails, and needs no slot for that.
            core._take_over(run, now)
            continue
        candidates.append(
            Candidate(
                run_id=run.id,
                queue=run.queue,
                priority=run.priority,
                due_at=run.run_at or now,
                seq=run.seq,
                flow=run.flow,
                started=run.token > 0,  # claimed before
                expired=run.status == "running",
            )
        )
    held = held_slots(core, now)
    throttles = core.flow_throttles
    offered = offer(
        candidates, held=held, throttles=throttles, cursors=core.flow_cursors, limit=limit, now=now
    )
    chosen = choose(offered, held=held, throttles=throttles, free=free, limit=limit, now=now)
    core.flow_cursors.update(cursors(offered, chosen))
    claims: list[Claim] = []
    for candidate in chosen:
        run = core._runs[candidate.run_id]
        taken_over_from = run.owner if candidate.expired else None
        if candidate.expired:
            core._take_over(run, now)  # not its last attempt: it goes on with the next
        claims.append(core._lease(run, owner, lease_for, now, taken_over_from))
    return claims


def held_slots(core: MemoryCore, now: datetime) -> dict[str, int]:
    """Per concurrency bucket, how many runs hold a lease that has not expired."""
    held: dict[str, int] = {}
    for run in core._runs.values():
        if run.flow is None or run.status != "running":
            continue
        if run.lease_expires_at is None or run.lease_expires_at <= now:
            continue
        for slot in run.flow.concurrency:
            held[slot.bucket] = held.get(slot.bucket, 0) + 1
    return held


def flow_wakeups(core: MemoryCore, now: datetime) -> list[datetime]:
    """When a gated run may become claimable: a future due time, or the end of a
    throttle's hold (due gated runs held back by a full key wake with the commit or the
    lease expiry that frees the slot)."""
    times = [t.blocked_until for t in core.flow_throttles.values() if t.blocked_until is not None]
    for run in core._runs.values():
        if run.queue in core._paused:
            continue
        if run.gated and run.status != "running" and run.run_at is not None:
            times.append(run.run_at)
    return [t for t in times if t > now]


def held_back_now(core: MemoryCore, run: _Run, info: RunInfo) -> str | None:
    """Why flow control holds ``run`` back now, in ``RunInfo.held_back``'s words."""
    now = core.clock.now()
    throttle = run.flow.throttle if run.flow is not None else None
    state = core.flow_throttles.get(throttle.bucket) if throttle is not None else None
    tat = state.tat if state is not None and run.token == 0 else None  # first starts only
    return held_back_of(info, held_slots(core, now), tat, now)
