"""``MemoryStore``: the in-memory store with the operator's queries and actions (listing,
retrying, rerunning and cancelling runs; waits, queues, schedules, workers, the audit log)."""

from __future__ import annotations

from typing import TYPE_CHECKING

import msgspec

from slayq.errors import (
    InputError,
    StoreError,
)
from slayq.model import (
    FINISHED_STATUSES,
    AuditEntry,
    NewRun,
    QueueInfo,
    RunFilter,
    RunId,
    RunPage,
    RunStats,
    ScheduleInfo,
    WaitInfo,
    WorkerInfo,
)
from slayq.runtime.run_filters import (
    check_actor,
    check_filter,
    check_limit,
    contains,
    decode_cursor,
    describe_filter,
    encode_cursor,
    window,
)
from slayq.store._queue_checks import checked_limit, checked_queue
from slayq.store._run_stats import checked_window, count_minutes
from slayq.store.memory._core import MemoryCore
from slayq.store.memory._records import (
    _EARLIEST,
    _copy_struct,
    _info,
    _Run,
)

if TYPE_CHECKING:
    from datetime import datetime, timedelta


class MemoryStore(MemoryCore):
    # -- operations: runs --

    async def list_runs(self, filter: RunFilter, *, limit: int, cursor: str | None) -> RunPage:
        check_filter(filter)
        check_limit(limit)
        after = decode_cursor(cursor) if cursor is not None else None
        runs = self._matching(filter, after=after)[: limit + 1]
        more = len(runs) > limit
        runs = runs[:limit]
        next_cursor = encode_cursor(runs[-1].id) if more else None
        page = RunPage(runs=[_info(run, steps=False) for run in runs], next_cursor=next_cursor)
        return _copy_struct(page)

    def _matching(self, f: RunFilter, *, after: RunId | None = None) -> list[_Run]:
        """The runs ``f`` selects, in list order (newest first by id, as PostgresStore:
        ids are UUIDv7, and canonical UUID text sorts as the UUID does), past ``after``."""
        low, high = window(f, self.clock.now())
        found = [
            run
            for run in self._runs.values()
            if (f.status is None or run.status in f.status)
            and (f.event is None or run.event == f.event)
            and (f.queue is None or run.queue == f.queue)
            and (f.parent is None or (run.parent is not None and run.parent.run_id == f.parent))
            and (low is None or run.created_at >= low)
            and (high is None or run.created_at < high)
            and (f.data is None or contains(run.data, f.data))
            and (after is None or run.id < after)
        ]
        return sorted(found, key=lambda run: run.id, reverse=True)

    async def retry_run(self, run_id: RunId, *, actor: str) -> RunId:
        check_actor(actor)
        run = self._get(run_id)
        if run.status not in ("failed", "cancelled"):
            raise InputError(
                f"run {run_id} is {run.status}: only a failed or cancelled run can be retried"
            )
        status = run.status
        self._retry(run)
        self._record(actor, "retry", run_id, {"status": status})
        return run_id

    def _retry(self, run: _Run) -> None:
        now = self.clock.now()
        run.max_attempts += run.attempt
        run.attempt += 1
        run.status, run.run_at, run.updated_at = "queued", now, now
        run.result, run.finished_at = None, None

    async def fork_run(
        self, run: NewRun, *, source: RunId, before_step: str | None, actor: str
    ) -> RunId:
        check_actor(actor)
        original = self._get(source)
        names = [step.name for step in original.steps]
        if before_step is not None and before_step not in names:
            raise InputError(
                f"run {source} has no step {before_step!r} to rerun from; its steps: {names}"
            )
        if run.id in self._runs:
            raise StoreError(f"a run with id {run.id} already exists")
        kept = original.steps[: names.index(before_step)] if before_step is not None else []
        run = _copy_struct(msgspec.structs.replace(run, key=None, parent=None))
        run_id = self._create(run, self.clock.now())
        new = self._runs[run_id]
        new.steps = [_copy_struct(step) for step in kept]
        new.forked_from = source
        self._record(actor, "rerun", source, {"run_id": run_id, "from_step": before_step})
        return run_id

    async def cancel_runs(self, filter: RunFilter, *, dry_run: bool, actor: str) -> int:
        check_actor(actor)
        check_filter(filter)
        targets = [r for r in self._matching(filter) if r.status not in FINISHED_STATUSES]
        if dry_run:
            return len(targets)
        now = self.clock.now()
        for run in targets:
            self._cancel(run, now)
        self._record(actor, "cancel_runs", describe_filter(filter), {"count": len(targets)})
        return len(targets)

    async def retry_runs(self, filter: RunFilter, *, dry_run: bool, actor: str) -> int:
        check_actor(actor)
        check_filter(filter)
        targets = [r for r in self._matching(filter) if r.status in ("failed", "cancelled")]
        if dry_run:
            return len(targets)
        for run in targets:
            self._retry(run)
        self._record(actor, "retry_runs", describe_filter(filter), {"count": len(targets)})
        return len(targets)

    async def list_audit(self, *, limit: int = 100) -> list[AuditEntry]:
        check_limit(limit)
        return [_copy_struct(entry) for entry in reversed(self._audit[-limit:])]

    # -- operations: queues --

    async def list_waits(self, *, event: str | None = None, limit: int = 100) -> list[WaitInfo]:
        checked_limit("list_waits", limit)
        waits = [
            (p.expires_at, run.id, pos, p.step)
            for run in self._runs.values()
            if run.status not in FINISHED_STATUSES
            for pos, p in enumerate(run.pending.values())
            if p.step.kind == "wait" and (event is None or p.step.event == event)
        ]
        # Soonest deadline first, waits that never expire last; then by run, in step order.
        waits.sort(key=lambda w: (w[0] is None, w[0] or _EARLIEST, w[1], w[2]))
        return [
            _copy_struct(
                WaitInfo(
                    run_id=run_id,
                    step=step.name,
                    event=step.event or "",
                    match_field=step.match_field,
                    match_value=step.match_value,
                    expires_at=expires_at,
                )
            )
            for expires_at, run_id, _, step in waits[:limit]
        ]

    async def pause_queue(self, name: str, *, actor: str) -> bool:
        checked_queue("pause_queue", name, actor)
        changed = name not in self._paused
        self._paused.add(name)
        self._audit.append(AuditEntry(self.clock.now(), actor, "pause_queue", name, None))
        return changed

    async def resume_queue(self, name: str, *, actor: str) -> bool:
        checked_queue("resume_queue", name, actor)
        changed = name in self._paused
        self._paused.discard(name)
        self._audit.append(AuditEntry(self.clock.now(), actor, "resume_queue", name, None))
        return changed

    async def list_queues(self) -> list[QueueInfo]:
        now = self.clock.now()
        # name -> [due, running, sleeping, waiting], oldest due
        counts: dict[str, list[int]] = {name: [0, 0, 0, 0] for name in self._paused}
        oldest: dict[str, datetime] = {}
        for run in self._runs.values():
            if run.status in FINISHED_STATUSES:
                continue
            row = counts.setdefault(run.queue, [0, 0, 0, 0])
            if run.status == "running":
                row[1] += 1
            elif run.run_at is not None and run.run_at <= now:
                row[0] += 1
                oldest[run.queue] = min(oldest.get(run.queue, run.run_at), run.run_at)
            elif run.status == "waiting":
                row[3] += 1
            else:
                row[2] += 1
        return [
            QueueInfo(
                name=name,
                due=row[0],
                running=row[1],
                sleeping=row[2],
                waiting=row[3],
                oldest_due_at=oldest.get(name),
                paused=name in self._paused,
            )
            for name, row in sorted(counts.items())
        ]

    async def list_schedules(self) -> list[ScheduleInfo]:
        return [
            ScheduleInfo(event=event, cron=e.schedule.cron, app=e.app, next_at=e.next_at)
            for event, e in sorted(self._schedules.items())
        ]

    async def run_stats(self, *, window: timedelta) -> RunStats:
        checked_window(window)
        now = self.clock.now()
        since = now - window
        counts = [
            (r.created_at, "started", 1) for r in self._runs.values() if r.created_at >= since
        ]
        counts += [
            (r.finished_at, r.status, 1)
            for r in self._runs.values()
            if r.finished_at is not None
            and r.finished_at >= since
            and r.status in FINISHED_STATUSES
        ]
        expired = sum(
            1
            for r in self._runs.values()
            if r.status == "running" and r.lease_expires_at is not None and r.lease_expires_at < now
        )
        return RunStats(since=since, now=now, minutes=count_minutes(counts), expired_leases=expired)

    async def list_workers(self) -> list[WorkerInfo]:
        held: dict[str, tuple[int, datetime | None]] = {}
        for run in self._runs.values():
            if run.status == "running" and run.owner is not None:
                n, last = held.get(run.owner, (0, None))
                beat = run.heartbeat_at
                newest = last if beat is None or (last is not None and last >= beat) else beat
                held[run.owner] = (n + 1, newest)
        return [
            WorkerInfo(owner=owner, runs_held=n, last_heartbeat_at=last)
            for owner, (n, last) in sorted(held.items())
        ]
