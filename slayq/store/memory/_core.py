"""An in-memory store: for users' unit tests (through ``slayq.testing.Harness``) and ours.

It passes the same contract suite as the Postgres store. Every value is copied through
JSON on the way in and out, as a database would, so a caller mutating what it sent or
got back never changes what is stored. Methods never await in the middle, so each is
atomic on the event loop without locks.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from itertools import count
from typing import TYPE_CHECKING, Any, Literal

import msgspec

from slayq.errors import (
    LeaseLostError,
    RunNotFoundError,
    StoreError,
)
from slayq.model import (
    CANCELLED,
    FINISHED_STATUSES,
    LEASE_EXPIRED,
    AttemptInfo,
    AttemptOutcome,
    AuditEntry,
    Claim,
    Completed,
    Continue,
    ErrorInfo,
    Failed,
    Lease,
    NewRun,
    OutgoingEvent,
    PendingStep,
    RunId,
    RunInfo,
    Schedule,
    StepRecord,
    Suspend,
    Transition,
)
from slayq.runtime.clock import Clock, SystemClock
from slayq.runtime.ids import new_run_id
from slayq.runtime.run_filters import (
    check_actor,
)
from slayq.store._one_by_one import commit_one_by_one
from slayq.store._schedule_sets import checked_schedules
from slayq.store.memory import _flow_once, _flow_rate_limit
from slayq.store.memory._admit import admit
from slayq.store.memory._flow_claims import claim_gated, flow_wakeups, held_back_now
from slayq.store.protocol import EVENT_LOG_GRACE

if TYPE_CHECKING:
    from collections.abc import Collection, Sequence

    from slayq.store._flow_claims import ThrottleState
    from slayq.store.protocol import Batch, ClaimRequest, QueueLimit


from slayq.store.memory._records import (
    _check_times,
    _copy,
    _copy_struct,
    _Event,
    _info,
    _memo_record,
    _Pending,
    _Run,
    _Schedule,
    _times_of,
    _wait_matches,
)


class MemoryCore:
    """Runs, events, claims and commits: the store every driver uses. ``MemoryStore``
    adds the operator's queries and actions."""

    def __init__(self, clock: Clock | None = None) -> None:
        self.clock = clock or SystemClock()
        self._runs: dict[RunId, _Run] = {}
        self._keys: dict[tuple[str, str], RunId] = {}
        self._events: list[_Event] = []
        self._event_seq = 0
        self._run_seq = count()
        self._tokens = count(1)
        self._schedules: dict[str, _Schedule] = {}
        self._paused: set[str] = set()
        self._audit: list[AuditEntry] = []
        # Send-time flow control (``_admit``): per bucket, the idempotency answer and its
        # expiry, and the rate limit's theoretical arrival time.
        self.once: dict[str, tuple[RunId, datetime]] = {}
        self.rate_tats: dict[str, datetime] = {}
        # Concurrency keys and throttles (see _flow_claims): per queue the last bucket a
        # claim visited (round robin), per throttle its GCRA state.
        self.flow_cursors: dict[str, str] = {}
        self.flow_throttles: dict[str, ThrottleState] = {}

    # -- events ------------------------------------------------------------------------

    async def send_events(self, events: Sequence[OutgoingEvent]) -> list[RunId | None]:
        _check_times(self.clock.now(), events, [])
        return [self._ingest(_copy_struct(event)) for event in events]

    def _ingest(self, event: OutgoingEvent) -> RunId | None:
        now = self.clock.now()
        for run in list(self._runs.values()):
            if run.status not in FINISHED_STATUSES and any(
                rule.event == event.name
                and rule.field in event.data
                and event.data[rule.field] == rule.value
                for rule in run.cancel_on
            ):
                self._cancel(run, now)
        seq = self._event_seq + 1
        if event.logged:
            self._event_seq = seq
            self._events.append(_Event(seq, event.name, event.data, now))
        for run in list(self._runs.values()):
            for pending in list(run.pending.values()):
                if _wait_matches(pending.step, event.name, event.data):
                    self._resolve(run, pending.step.name, now, output=event.data)
                    if event.logged:
                        run.event_cursor = max(run.event_cursor, seq)
        if event.run is None:
            return None
        decision = admit(self, event.run, now)
        if decision.run is None:
            return decision.answer
        return self._create(decision.run, now)

    def _create(self, new: NewRun, now: datetime) -> RunId:
        if new.key is not None:
            existing = self._keys.get((new.event, new.key))
            if existing is not None:
                return existing
            self._keys[(new.event, new.key)] = new.id
        if new.id in self._runs:
            raise StoreError(f"a run with id {new.id} already exists")
        run_at = new.run_at or now + (new.delay or timedelta(0))
        self._runs[new.id] = _Run(
            id=new.id,
            seq=next(self._run_seq),
            event=new.event,
            data=new.data,
            queue=new.queue,
            priority=new.priority,
            max_attempts=new.max_attempts,
            cancel_on=list(new.cancel_on),
            key=new.key,
            parent=new.parent,
            endpoint=new.endpoint,
            created_at=now,
            updated_at=now,
            run_at=run_at,
            event_cursor=self._event_seq,
            may_wait=new.may_wait,
            trace=new.trace,
            flow=new.flow,
        )
        return new.id

    # -- claiming ----------------------------------------------------------------------

    async def claim(
        self,
        *,
        queues: Sequence[QueueLimit] | None,
        limit: int,
        lease_for: timedelta,
        owner: str,
    ) -> list[Claim]:
        now = self.clock.now()
        due = sorted(
            (run for run in self._runs.values() if self._claimable(run, now)),
            key=lambda run: (run.priority, run.run_at or now, run.seq),
        )
        capacity: dict[str, list[int]] = {}
        if queues is not None:
            for group in queues:
                held = sum(1 for r in self._runs.values() if self._holds_slot(r, group, now))
                free = [group.concurrency - held]  # shared by the group's queues
                for name in group.names:
                    capacity[name] = free
        claims: list[Claim] = []
        for run in due:
            if len(claims) >= limit:
                break
            if run.gated:
                continue  # claimed below, under its flow controls
            slot = capacity.get(run.queue)
            if queues is not None and (slot is None or slot[0] <= 0):
                continue
            taken_over_from = run.owner if run.status == "running" else None
            if run.status == "running" and not self._take_over(run, now):
                continue
            if slot is not None:
                slot[0] -= 1
            claims.append(self._lease(run, owner, lease_for, now, taken_over_from))
        gated = [run for run in due if run.gated]
        if gated and len(claims) < limit:
            slots = capacity if queues is not None else None
            claims += claim_gated(self, gated, slots, limit - len(claims), lease_for, owner, now)
        return claims

    def _lease(
        self,
        run: _Run,
        owner: str,
        lease_for: timedelta,
        now: datetime,
        taken_over_from: str | None,
    ) -> Claim:
        """Lease a due run to ``owner``: pending steps left expired (they resolve to None)."""
        run.attempt_started_at, run.replayed, run.executed = now, 0, 0
        for pending in list(run.pending.values()):
            self._resolve(run, pending.step.name, now, output=None, wake=False)
        run.status = "running"
        run.token = next(self._tokens)
        run.owner = owner
        run.lease_expires_at = now + lease_for
        run.heartbeat_at = now
        run.updated_at = now
        return Claim(
            lease=Lease(run_id=run.id, token=run.token, expires_at=run.lease_expires_at),
            event=run.event,
            data=_copy(run.data),
            queue=run.queue,
            attempt=run.attempt,
            max_attempts=run.max_attempts,
            memo=[_memo_record(step) for step in run.steps],
            endpoint=run.endpoint,
            taken_over_from=taken_over_from,
            trace=run.trace,
            due_at=run.run_at or now,
        )

    def _is_due(self, run: _Run, now: datetime) -> bool:
        if run.status == "running":
            return run.lease_expires_at is not None and run.lease_expires_at <= now
        if run.status in FINISHED_STATUSES:
            return False
        return run.run_at is not None and run.run_at <= now

    def _claimable(self, run: _Run, now: datetime) -> bool:
        """Due, and not in a paused queue: a paused queue is not claimed, not even to take
        over an expired lease."""
        return run.queue not in self._paused and self._is_due(run, now)

    @staticmethod
    def _holds_slot(run: _Run, group: QueueLimit, now: datetime) -> bool:
        return (
            run.status == "running"
            and run.queue in group.names
            and run.lease_expires_at is not None
            and run.lease_expires_at > now
        )

    def _take_over(self, run: _Run, now: datetime) -> bool:
        """A lease ran out: its holder is presumed dead, which costs the run an attempt."""
        self._end_attempt(run, "lease_expired", now, LEASE_EXPIRED)
        run.error = LEASE_EXPIRED
        if run.attempt >= run.max_attempts:
            self._finish(run, "failed", now)
            return False
        run.attempt += 1
        return True

    # -- committing --------------------------------------------------------------------

    async def commit(self, lease: Lease, transition: Transition) -> None:
        run = self._held(lease)
        transition = _copy_struct(transition)
        now = self.clock.now()
        known = {step.name for step in run.steps}
        for record in transition.steps:
            if record.name in known:
                raise StoreError(f"run {run.id} already has a step named {record.name!r}")
            known.add(record.name)
        # Everything that can fail is checked above this line: nothing is half-applied.
        _check_times(now, transition.sent, _times_of(transition.outcome))
        for record in transition.steps:
            started_at = record.started_at or now
            duration = record.duration if record.duration is not None else now - started_at
            run.steps.append(
                msgspec.structs.replace(
                    record,
                    finished_at=now,
                    started_at=started_at,
                    duration=max(duration, timedelta(0)),
                    attempt=run.attempt,
                )
            )
        run.replayed += transition.replayed
        run.executed += len(transition.steps)
        for event in transition.sent:
            self._ingest(event)
        if run.status != "running" or run.token != lease.token:
            return  # a sent event cancelled this very run; its records stay, the outcome not
        outcome = transition.outcome
        run.updated_at = now
        if isinstance(outcome, Continue):
            return
        run.lease_expires_at = None
        if isinstance(outcome, Suspend):
            self._end_attempt(run, "suspended", now)
            self._suspend(run, outcome.pending, now)
        elif isinstance(outcome, Completed):
            run.result = outcome.result
            self._finish(run, "completed", now)
        elif isinstance(outcome, Failed):
            run.error = outcome.error
            if outcome.retry_after is not None:
                self._end_attempt(run, "retrying", now, outcome.error)
                run.status = "queued"
                run.attempt += 1
                run.run_at = now + outcome.retry_after
            else:
                self._finish(run, "failed", now)

    def _held(self, lease: Lease) -> _Run:
        run = self._runs.get(lease.run_id)
        if run is None or run.status != "running" or run.token != lease.token:
            raise LeaseLostError(
                f"run {lease.run_id}: lease {lease.token} is no longer held "
                "(it expired and was taken over, or the run was cancelled)"
            )
        return run

    def _suspend(self, run: _Run, pending: list[PendingStep], now: datetime) -> None:
        run.status = "waiting"
        for step in pending:
            expires_at = step.until or (now + step.delay if step.delay is not None else None)
            run.pending[step.name] = _Pending(step, expires_at, now)
            if step.child is not None:
                self._create(step.child, now)
        for step in pending:
            if step.kind == "wait":
                hit = next(
                    (
                        (e.seq, e.data)
                        for e in self._events
                        if e.seq > run.event_cursor and _wait_matches(step, e.name, e.data)
                    ),
                    None,
                )
                if hit is not None:
                    run.event_cursor = hit[0]
                    self._resolve(run, step.name, now, output=hit[1])
        self._reschedule(run, now)

    def _resolve(
        self,
        run: _Run,
        step_name: str,
        now: datetime,
        *,
        output: Any = None,
        error: ErrorInfo | None = None,
        wake: bool = True,
    ) -> None:
        pending = run.pending.pop(step_name, None)
        if pending is None:
            return
        run.steps.append(
            StepRecord(
                name=step_name,
                kind=pending.step.kind,
                output=output,
                error=error,
                finished_at=now,
                started_at=pending.started_at,
                duration=now - pending.started_at,
                attempt=run.attempt,
            )
        )
        run.updated_at = now
        if wake:
            self._reschedule(run, now)

    def _reschedule(self, run: _Run, now: datetime) -> None:
        """A suspended run is due when its last pending step resolves or expires."""
        if run.status not in ("sleeping", "waiting", "queued"):
            return
        if not run.pending:
            run.status, run.run_at = "queued", now
            return
        expiries = [p.expires_at for p in run.pending.values()]
        run.run_at = None if None in expiries else max(e for e in expiries if e is not None)
        only_sleeps = all(p.step.kind == "sleep" for p in run.pending.values())
        run.status = "sleeping" if only_sleeps else "waiting"

    def _end_attempt(
        self, run: _Run, outcome: AttemptOutcome, now: datetime, error: ErrorInfo | None = None
    ) -> None:
        """Record the attempt running now (if one is: a takeover recorded it already)."""
        if run.attempt_started_at is None:
            return
        run.history.append(
            AttemptInfo(
                number=run.attempt,
                started_at=run.attempt_started_at,
                ended_at=now,
                owner=run.owner,
                outcome=outcome,
                error=error,
                replayed=run.replayed,
                executed=run.executed,
            )
        )
        run.attempt_started_at = None

    def _finish(
        self, run: _Run, status: Literal["completed", "failed", "cancelled"], now: datetime
    ) -> None:
        if run.status == "running":
            self._end_attempt(run, status, now, run.error if status == "failed" else None)
        run.status = status
        run.finished_at = now
        run.updated_at = now
        run.run_at = None
        run.lease_expires_at = None
        run.pending.clear()
        if run.parent is None:
            return
        parent = self._runs.get(run.parent.run_id)
        if parent is None:
            return
        if status == "completed":
            self._resolve(parent, run.parent.step, now, output=run.result)
        else:
            error = CANCELLED if status == "cancelled" else (run.error or CANCELLED)
            self._resolve(parent, run.parent.step, now, error=error)

    def _cancel(self, run: _Run, now: datetime) -> None:
        self._finish(run, "cancelled", now)

    # -- leases ------------------------------------------------------------------------

    async def commit_batch(
        self, commits: Sequence[tuple[Lease, Transition]], *, claims: Sequence[ClaimRequest]
    ) -> Batch:
        return await commit_one_by_one(self.commit, self.claim, commits, claims)

    async def extend_leases(self, leases: Sequence[Lease], lease_for: timedelta) -> list[Lease]:
        now = self.clock.now()
        kept: list[Lease] = []
        for lease in leases:
            run = self._runs.get(lease.run_id)
            if run is not None and run.status == "running" and run.token == lease.token:
                run.lease_expires_at = now + lease_for
                run.heartbeat_at = now
                kept.append(msgspec.structs.replace(lease, expires_at=run.lease_expires_at))
        return kept

    async def release(
        self, lease: Lease, *, delay: timedelta | None = None, error: ErrorInfo | None = None
    ) -> None:
        run = self._runs.get(lease.run_id)
        if run is not None and run.status == "running" and run.token == lease.token:
            now = self.clock.now()
            self._end_attempt(run, "released", now, error)
            run.status, run.lease_expires_at, run.updated_at = "queued", None, now
            run.run_at = now + (delay or timedelta(0))
            if error is not None:
                run.error = error

    # -- reading and managing ----------------------------------------------------------

    async def get_run(self, run_id: RunId) -> RunInfo:
        run = self._get(run_id)
        info = _info(run, steps=True)
        if run.flow is not None:
            info = msgspec.structs.replace(info, held_back=held_back_now(self, run, info))
        return _copy_struct(info)

    def _get(self, run_id: RunId) -> _Run:
        run = self._runs.get(run_id)
        if run is None:
            raise RunNotFoundError(f"no run has id {run_id!r}")
        return run

    def _record(self, actor: str, action: str, target: str, detail: dict[str, Any]) -> None:
        at = self.clock.now()
        self._audit.append(
            AuditEntry(at=at, actor=actor, action=action, target=target, detail=_copy(detail))
        )

    async def cancel_run(self, run_id: RunId, *, actor: str = "api") -> bool:
        check_actor(actor)
        run = self._get(run_id)
        if run.status in FINISHED_STATUSES:
            return False
        self._cancel(run, self.clock.now())
        self._record(actor, "cancel", run_id, {})
        return True

    async def set_schedules(
        self, schedules: Sequence[Schedule], *, app: str, events: Collection[str]
    ) -> None:
        checked = checked_schedules(schedules, app=app, events=events)
        now = self.clock.now()
        kept: dict[str, _Schedule] = {}
        for event, (schedule, spec) in checked.items():
            old = self._schedules.get(event)
            next_at = old.next_at if old and old.spec.text == spec.text else spec.next_after(now)
            kept[event] = _Schedule(_copy_struct(schedule), spec, next_at, app)
        runs = set(events)
        for event, entry in list(self._schedules.items()):
            # The app runs this event without a cron now, or it owned a removed function.
            if event not in kept and (event in runs or entry.app == app):
                del self._schedules[event]
        self._schedules.update(kept)

    async def fire_schedules(self) -> list[RunId]:
        now = self.clock.now()
        started: list[RunId] = []
        for entry in self._schedules.values():
            if entry.next_at > now:
                continue
            tick = entry.next_at
            entry.next_at = entry.spec.next_after(now)
            template = entry.schedule.template
            new = msgspec.structs.replace(
                template, id=new_run_id(), key=f"cron:{tick.isoformat()}", run_at=tick
            )
            started.append(self._create(new, now))
        return started

    async def next_wakeup(self) -> datetime | None:
        now = self.clock.now()
        times = [s.next_at for s in self._schedules.values()]
        for run in self._runs.values():
            if run.queue in self._paused:
                continue  # nothing of it becomes due before the resume, which notifies
            if run.status == "running" and run.lease_expires_at is not None:
                times.append(run.lease_expires_at)
            elif run.status not in FINISHED_STATUSES and run.run_at is not None and not run.gated:
                times.append(run.run_at)
        times += flow_wakeups(self, now)
        return min(times, default=None)

    async def due_by_queue(self) -> dict[str, int]:
        now = self.clock.now()
        due: dict[str, int] = {}
        for run in self._runs.values():
            if run.status != "running" and self._is_due(run, now):
                due[run.queue] = due.get(run.queue, 0) + 1
        return due

    async def delete_finished(self, older_than: timedelta, *, batch: int = 1000) -> int:
        cutoff = self.clock.now() - older_than
        old = [
            run.id
            for run in self._runs.values()
            if run.finished_at is not None and run.finished_at < cutoff
        ][:batch]
        for run_id in old:
            run = self._runs.pop(run_id)
            if run.key is not None:
                self._keys.pop((run.event, run.key), None)
        if len(old) < batch:  # caught up with the runs, as the Postgres store prunes
            self._prune_events(older_than)
            _flow_once.prune(self, self.clock.now())
            _flow_rate_limit.prune(self, self.clock.now())
            now = self.clock.now()  # a throttle whose time passed is as good as new
            self.flow_throttles = {
                name: state
                for name, state in self.flow_throttles.items()
                if state.tat is None or state.tat >= now
            }
        return len(old)

    def _prune_events(self, older_than: timedelta) -> None:
        """Drop the logged events no wait can see any more (see ``Store.delete_finished``)."""
        now = self.clock.now()
        cursors = [
            run.event_cursor
            for run in self._runs.values()
            if run.may_wait and run.status not in FINISHED_STATUSES
        ]
        horizon = min(cursors, default=None)
        self._events = [
            e
            for e in self._events
            if e.created_at >= now - older_than
            and (e.created_at >= now - EVENT_LOG_GRACE or (horizon is not None and e.seq > horizon))
        ]

    async def open(self) -> None:
        return None

    async def aclose(self) -> None:
        return None
