"""``Harness``: run functions in-process on a MemoryStore with a virtual clock.

    async with Harness([process_upload]) as h:
        run_id = await h.send_event("media/upload/process", {"file_id": "f1"})
        await h.run_until_idle()        # runs what is due now
        await h.advance("1 year")       # moves the clock, runs what becomes due
        run = await h.get_run(run_id)
        assert run.status == "completed"

Nothing sleeps for real: a one-year sleep takes milliseconds. Retries wait out their
backoff in virtual time too, so ``advance`` past it (or ``run_until_finished``).
"""

from __future__ import annotations

import random
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

from slayq.client import Client
from slayq.model import FINISHED_STATUSES, AuditEntry, RunId, RunInfo, RunPage
from slayq.runtime.clock import VirtualClock
from slayq.runtime.driver import drive
from slayq.runtime.durations import Duration, parse_duration
from slayq.runtime.limits import DEFAULT_LIMITS, SizeLimits
from slayq.runtime.retry import DEFAULT_RETRY_POLICY, RetryPolicy
from slayq.store.memory import MemoryStore

if TYPE_CHECKING:
    from collections.abc import Iterable, Sequence
    from types import TracebackType

    from slayq.model import QueueInfo, RunStats, ScheduleInfo, WaitInfo, WorkerInfo
    from slayq.runtime.functions import Function

__all__ = ["Harness"]

_LEASE = timedelta(minutes=5)


class Harness:
    """Runs ``functions`` on a fresh ``MemoryStore`` whose clock starts at ``start``
    (2025-01-01 UTC by default) and moves only when told to (``advance``).

    ``seed`` fixes the retry backoff's jitter, so a test replays the same way every time.
    Use it as ``async with Harness([...]) as h:``, which registers the cron schedules.
    """

    def __init__(
        self,
        functions: Iterable[Function],
        *,
        start: datetime | None = None,
        retry_policy: RetryPolicy = DEFAULT_RETRY_POLICY,
        seed: int = 0,
        limits: SizeLimits = DEFAULT_LIMITS,
        max_drives: int = 100_000,
    ) -> None:
        self.clock = VirtualClock(start or datetime(2025, 1, 1, tzinfo=UTC))
        self.store = MemoryStore(self.clock)
        # The same Client an app uses, on the memory store: sending validates the same way.
        self.client = Client(functions, store=self.store, limits=limits)
        self.registry = self.client.registry
        self._retry_policy = retry_policy
        self._rng = random.Random(seed)
        self._max_drives = max_drives

    async def __aenter__(self) -> Harness:
        await self.client.register_schedules()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.store.aclose()

    @property
    def now(self) -> datetime:
        return self.clock.now()

    async def send_event(
        self,
        event: str,
        data: object = None,
        *,
        delay: Duration | None = None,
        run_at: datetime | str | None = None,
        key: str | None = None,
    ) -> RunId | None:
        """Send an event; returns the run it started (None if it only wakes or cancels)."""
        return await self.client.send_event(event, data, delay=delay, run_at=run_at, key=key)

    async def send_events(self, events: Sequence[tuple[str, Any]]) -> list[RunId | None]:
        return await self.client.send_events(events)

    async def run_until_idle(self) -> None:
        """Run everything due at the current virtual time, until nothing is."""
        for _ in range(self._max_drives):
            await self.store.fire_schedules()
            claims = await self.store.claim(queues=None, limit=1, lease_for=_LEASE, owner="harness")
            if not claims:
                return
            await drive(
                self.registry,
                claims[0],
                self.store.commit,
                retry_policy=self._retry_policy,
                rng=self._rng,
                clock=self.clock,
            )
        raise RuntimeError(
            f"run_until_idle: still busy after {self._max_drives} drives; "
            "is a function starting runs in an endless loop?"
        )

    async def advance(self, duration: Duration) -> None:
        """Move the clock forward by ``duration``, running everything on the way, on time."""
        target = self.clock.now() + parse_duration(duration)
        await self.run_until_idle()
        while True:
            wakeup = await self.store.next_wakeup()
            if wakeup is None or wakeup > target:
                break
            self.clock.set(max(wakeup, self.clock.now()))
            await self.run_until_idle()
        self.clock.set(target)
        await self.run_until_idle()

    async def run_until_finished(self, run_id: RunId, *, limit: Duration = "100 years") -> RunInfo:
        """Advance the clock from wakeup to wakeup until the run finishes (or ``limit``)."""
        deadline = self.clock.now() + parse_duration(limit)
        await self.run_until_idle()
        while (run := await self.get_run(run_id)).status not in FINISHED_STATUSES:
            wakeup = await self.store.next_wakeup()
            if wakeup is None or wakeup > deadline:
                return run
            self.clock.set(max(wakeup, self.clock.now()))
            await self.run_until_idle()
        return run

    async def get_run(self, run_id: RunId) -> RunInfo:
        return await self.client.get_run(run_id)

    # -- operations: runs --

    async def list_runs(self, **options: Any) -> RunPage:
        """``Client.list_runs``: a page of runs, newest first."""
        return await self.client.list_runs(**options)

    async def retry(self, run_id: RunId, *, actor: str | None = None) -> RunId:
        """``Client.retry``; the run is due at once: ``run_until_idle`` runs it."""
        return await self.client.retry(run_id, actor=actor)

    async def rerun(
        self,
        run_id: RunId,
        *,
        from_step: str | None = None,
        data: object = None,
        actor: str | None = None,
    ) -> RunId:
        """``Client.rerun``: a new run with the memo up to ``from_step``."""
        return await self.client.rerun(run_id, from_step=from_step, data=data, actor=actor)

    async def cancel_runs(
        self, *, dry_run: bool = False, actor: str | None = None, **filters: Any
    ) -> int:
        return await self.client.cancel_runs(dry_run=dry_run, actor=actor, **filters)

    async def retry_runs(
        self, *, dry_run: bool = False, actor: str | None = None, **filters: Any
    ) -> int:
        return await self.client.retry_runs(dry_run=dry_run, actor=actor, **filters)

    async def list_audit(self, *, limit: int = 100) -> list[AuditEntry]:
        return await self.client.list_audit(limit=limit)

    async def run_stats(self, *, window: Duration = "1h") -> RunStats:
        return await self.client.run_stats(window=window)

    async def cancel(self, run_id: RunId, *, actor: str | None = None) -> bool:
        return await self.client.cancel(run_id, actor=actor)

    # -- operations: queues --

    async def list_waits(self, *, event: str | None = None, limit: int = 100) -> list[WaitInfo]:
        return await self.client.list_waits(event=event, limit=limit)

    async def pause_queue(self, name: str, *, actor: str | None = None) -> bool:
        return await self.client.pause_queue(name, actor=actor)

    async def resume_queue(self, name: str, *, actor: str | None = None) -> bool:
        return await self.client.resume_queue(name, actor=actor)

    async def list_queues(self) -> list[QueueInfo]:
        return await self.client.list_queues()

    async def list_schedules(self) -> list[ScheduleInfo]:
        return await self.client.list_schedules()

    async def list_workers(self) -> list[WorkerInfo]:
        return await self.client.list_workers()
