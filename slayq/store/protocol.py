"""The store protocol: what every store (memory, Postgres, HTTP ingest) does.

Stores know no functions and run no user code: events arrive already resolved by the
client's registry, and transitions already computed by the engine. Each method is one
atomic unit: it is applied whole or not at all (``commit_batch``: each of its commits).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta
from typing import TYPE_CHECKING, Protocol

from msgspec import Struct

if TYPE_CHECKING:
    from collections.abc import Collection, Sequence
    from datetime import datetime

    from slayq.errors import StoreError
    from slayq.model import (
        AuditEntry,
        Claim,
        ErrorInfo,
        Lease,
        NewRun,
        OutgoingEvent,
        QueueInfo,
        RunFilter,
        RunId,
        RunInfo,
        RunPage,
        RunStats,
        Schedule,
        ScheduleInfo,
        Transition,
        WaitInfo,
        WorkerInfo,
    )


# The least time a logged event is kept even when no run could see it: a run created in
# a transaction that has not committed yet may still need it.
EVENT_LOG_GRACE = timedelta(minutes=5)


class QueueLimit(Struct, frozen=True):
    """Queues that share one cluster-wide concurrency limit (a queue and its aliases)."""

    names: list[str]
    concurrency: int


class ClaimRequest(Struct, frozen=True):
    """A claim to make (see ``Store.claim``), as part of ``Store.commit_batch``."""

    queues: list[QueueLimit] | None
    limit: int
    lease_for: timedelta
    owner: str


@dataclass
class Batch:
    """What ``Store.commit_batch`` did: per commit, in order, None if it committed or the
    error that stopped it (``LeaseLostError``, a refusal, ``StoreUnavailableError``);
    per claim request, the runs it claimed (none if ``claim_error`` is set)."""

    errors: list[StoreError | None]
    claims: list[list[Claim]]
    claim_error: StoreError | None = None


class Store(Protocol):
    async def send_events(self, events: Sequence[OutgoingEvent]) -> list[RunId | None]:
        """Ingest events in order, in one transaction.

        For each event: cancel the runs whose cancel rules match it, answer the waits that
        match it, keep it in the event log if it is ``logged``, then start its run. Returns,
        per event, the id of the run it started, or of the run that already had the same
        idempotency key for that event, or None if it starts no run.

        A run with send-time flow controls (``NewRun.flow``) starts only as they decide,
        in this order, exactly under concurrent senders; the event is ingested whatever
        they decide. A run whose ``key`` is taken is a repeated send: no control sees it.

        - ``idempotency``: within ``ttl`` of a bucket's first event, its events answer
          what the first was answered with (unless None) and start nothing.
        - ``rate_limit``: an event over the bucket's rate (GCRA) starts nothing; None.
        - ``singleton``: with an unfinished run in the bucket, ``skip`` answers the oldest
          and starts nothing; ``cancel`` cancels them (as ``cancel_run``) and starts.

        Sent events of a ``commit`` are decided the same way.
        """
        ...

    async def claim(
        self,
        *,
        queues: Sequence[QueueLimit] | None,
        limit: int,
        lease_for: timedelta,
        owner: str,
    ) -> list[Claim]:
        """Claim up to ``limit`` due runs, lower priority first, then earliest due.

        A queue group's concurrency counts every run of those queues held by anyone. Due
        means: queued and due, suspended with every pending step resolved or expired
        (expired ones resolve to None), or running under a lease that expired (its holder
        is presumed dead; this counts as a failed attempt). ``queues=None`` claims from
        every queue without limits.

        Runs under concurrency keys or a throttle (``NewRun.flow``) take the slots the
        plain runs left, within their limits, keys taking turns: see
        ``slayq.store._flow_claims``. A throttle holds back first starts only.
        """
        ...

    async def commit(self, lease: Lease, transition: Transition) -> None:
        """Apply a transition atomically: records, sent events and the outcome.

        Raises ``LeaseLostError`` (applying nothing) if the lease is no longer the run's
        current one. A ``Continue`` keeps the lease; every other outcome ends it.
        A wait sees every matching logged event sent since the run started or since its
        previous wait was answered, so an event sent a moment early is not missed.
        """
        ...

    async def commit_batch(
        self, commits: Sequence[tuple[Lease, Transition]], *, claims: Sequence[ClaimRequest]
    ) -> Batch:
        """Commit each transition as ``commit`` would, then make each claim.

        Each commit stands alone: one that fails (a lost lease, a refused value) leaves the
        others committed, and its error takes its place in ``Batch.errors``. The claims see
        every commit before them, so slots the batch freed are claimed at once. A store may
        do it all in one transaction (Postgres does, for the transitions that touch only
        their own run) or one by one.
        """
        ...

    async def extend_leases(self, leases: Sequence[Lease], lease_for: timedelta) -> list[Lease]:
        """Push the expiry of leases still held; returns them. Lost ones are left out."""
        ...

    async def release(
        self, lease: Lease, *, delay: timedelta | None = None, error: ErrorInfo | None = None
    ) -> None:
        """Hand a claimed run back without counting an attempt, due after ``delay`` (at
        once by default). ``error``, if given, is recorded on the run, so that reading it
        shows why it waits (an app that could not be reached, say). A lease no longer
        held changes nothing."""
        ...

    async def get_run(self, run_id: RunId) -> RunInfo:
        """A snapshot of the run, its steps and its attempt history; ``RunNotFoundError``
        if there is none.

        Every claim starts an attempt; whatever ends it (a commit that does not continue,
        a takeover of its expired lease, a release, a cancel) records it, with the memo
        records its commits replayed (``Transition.replayed``) and the steps they
        recorded. Steps record their start, duration and the run's attempt number.
        """
        ...

    # -- operations: runs --

    async def list_runs(self, filter: RunFilter, *, limit: int, cursor: str | None) -> RunPage:
        """The runs that match ``filter``, newest first (``created_at``, then id), at most
        ``limit`` (1 to 1000) after ``cursor`` (a ``next_cursor`` of an earlier page).

        Keyset pagination: runs created after the first page do not shift later pages.
        Runs come as a list view (no steps, pending or history). ``InputError`` for a bad
        filter, limit or cursor.
        """
        ...

    async def retry_run(self, run_id: RunId, *, actor: str) -> RunId:
        """Run a failed or cancelled run again from where it stopped, and audit it.

        The same run: finished steps kept, result and finish time cleared, error kept
        until the next attempt ends, cancel rules restored, due now; the attempt budget
        is renewed (``max_attempts += attempt``, ``attempt += 1``). ``InputError`` naming
        the status of a run in any other status; ``RunNotFoundError`` for no such run.
        """
        ...

    async def fork_run(
        self, run: NewRun, *, source: RunId, before_step: str | None, actor: str
    ) -> RunId:
        """Start ``run`` (a new run, made by ``rerun``) with the memo of ``source`` copied
        up to, not including, ``before_step`` (None: nothing copied); it records
        ``forked_from``, and the action is audited. ``InputError`` naming the source's steps
        if ``before_step`` is not one of them; ``RunNotFoundError`` for no such source.
        """
        ...

    async def cancel_runs(self, filter: RunFilter, *, dry_run: bool, actor: str) -> int:
        """Cancel the unfinished runs that match ``filter``; returns how many. With
        ``dry_run``, only count them. Works in batches, each its own transaction, over the
        runs created before the call; one audit row records the action."""
        ...

    async def retry_runs(self, filter: RunFilter, *, dry_run: bool, actor: str) -> int:
        """Retry (as ``retry_run``) the failed and cancelled runs that match ``filter``;
        returns how many. Batched and audited as ``cancel_runs``."""
        ...

    async def list_audit(self, *, limit: int = 100) -> list[AuditEntry]:
        """The latest operator actions, newest first."""
        ...

    async def run_stats(self, *, window: timedelta) -> RunStats:
        """Runs started (created) and finished (by outcome) per minute of the last
        ``window`` (1 minute to 1 day; ``InputError`` otherwise) by the store's clock, and
        how many running runs hold an expired lease. Reads only that window (an index
        range), so its cost follows the runs of the window, not the table."""
        ...

    async def cancel_run(self, run_id: RunId, *, actor: str = "api") -> bool:
        """Cancel a run that has not finished; False if it had already finished. A run
        cancelled is audited as done by ``actor``."""
        ...

    async def set_schedules(
        self, schedules: Sequence[Schedule], *, app: str, events: Collection[str]
    ) -> None:
        """Register the cron schedules of ``app``, which runs the functions of ``events``.

        In one transaction: ``schedules`` are upserted, owned by ``app`` (one kept with the
        same cron keeps its next tick; a changed cron gets a new one); the schedules of
        ``events`` that have no cron any more go, whoever registered them (``app`` runs
        those functions now); the schedules ``app`` owns whose event is not in ``events``
        go (their function was removed). Every other app's schedules are left alone.
        Raises ``InputError`` (changing nothing) for an empty ``app``, a schedule whose
        event is not in ``events``, or an invalid cron.
        """
        ...

    # -- operations: queues --

    async def list_waits(self, *, event: str | None = None, limit: int = 100) -> list[WaitInfo]:
        """Pending waits of unfinished runs (of ``event`` only, if given), soonest deadline
        first, waits without one last; at most ``limit`` (``InputError`` below 1)."""
        ...

    async def pause_queue(self, name: str, *, actor: str) -> bool:
        """Stop every process from claiming runs of queue ``name`` (runs already running
        go on); True if it was not paused already. Records ``actor`` in the audit log.
        ``InputError`` (changing nothing) for an empty name or actor."""
        ...

    async def resume_queue(self, name: str, *, actor: str) -> bool:
        """Let queue ``name`` be claimed again, waking idle claimers at once; True if it was
        paused. Records ``actor`` in the audit log."""
        ...

    async def list_queues(self) -> list[QueueInfo]:
        """Every queue that has unfinished runs or is paused, by name."""
        ...

    async def list_schedules(self) -> list[ScheduleInfo]:
        """Every registered cron schedule, by event."""
        ...

    async def list_workers(self) -> list[WorkerInfo]:
        """Every owner of a running run's lease (expired ones too: a stopped worker shows
        until its runs are taken over), by owner."""
        ...

    async def fire_schedules(self) -> list[RunId]:
        """Start one run per schedule whose tick is due, and move it to its next tick.

        Ticks missed while nothing ran fire once, not once each.
        """
        ...

    async def next_wakeup(self) -> datetime | None:
        """The earliest time at which something becomes due, or None. Paused queues are
        left out: nothing of theirs is due before ``resume_queue``, which notifies. Runs
        under flow control count from their due time while it is ahead, and a throttle
        holding back a first start from when it lets one go; one waiting for a slot of
        its key wakes with the commit (or the lease expiry) that frees it."""
        ...

    async def due_by_queue(self) -> dict[str, int]:
        """How many runs are due now but unclaimed, per queue (to spot unserved queues)."""
        ...

    async def delete_finished(self, older_than: timedelta, *, batch: int = 1000) -> int:
        """Remove up to ``batch`` runs that finished more than ``older_than`` ago; returns
        how many.

        A call that removes fewer (caught up) also prunes the event log, whole: an event
        goes once no unfinished run that may wait can see it (the run's function declares
        ``waits_on``; a run sees the events past its cursor) and it is older than
        ``EVENT_LOG_GRACE``, or once it is older than ``older_than`` whoever might see it.
        So a wait sees the matching events sent since its run started or its previous
        wait was answered, up to the retention. That call also forgets the expired
        idempotency answers and rate-limit states, which decide nothing any more.
        """
        ...

    async def open(self) -> None:
        """Connect and prepare (run migrations); idempotent. Other methods open lazily."""
        ...

    async def aclose(self) -> None: ...
