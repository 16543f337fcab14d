"""The dispatcher: claims runs from a store and hands each to an executor.

The in-process worker's executor drives the engine here; the server's delivers the run
over HTTP to the app. Fixed slot tasks, one per unit of concurrency, execute the runs,
each taking the next claim from a stream (starting a task per run cost more than a
no-op run's own work). One loop, the ticker, talks to the store for claims and commits:
every tick sends the commits that queued up since the last one (each run's task waits
for its own) and claims into the local slots they freed, as one ``commit_batch``, which
PostgreSQL applies in one transaction. No timer: what arrives while a tick is in flight
forms the next batch, so under load batches grow and the cost per run falls, while an
idle worker commits a lone run at once. (The server sets ``gather``: a tick waits for the
other runs in flight to answer while answers keep coming, see ``_gathered``.) Without a
cluster-wide limit (``queues=None``), ticks claim ``claim_ahead`` runs (default: twice as
many as the slots) beyond the free slots, and a run gives its slot to another while its
commit is in a tick: the handlers go on while the ticker commits and claims. Around it:

* a listener wakes the ticker to claim when the store announces new work (LISTEN/NOTIFY
  on Postgres), so an idle worker starts a sent event within milliseconds; without one,
  or if it drops, the ticker still polls every ``poll_interval``;
* a heartbeat extends the leases of runs in flight; a run whose lease was lost (it was
  taken over after this process stalled, or cancelled) is stopped here;
* a scheduler fires due cron ticks and removes old finished runs, once a minute
  warns about runs due in queues that no process serves, and every
  ``queue_metrics_interval`` refreshes the queue gauges of the Prometheus metrics.

Every commit goes through ``_commit``, the one place where what a run did becomes a log
line (a failed attempt at WARNING, with its step, attempt and error) and metrics (runs
started and finished, failed attempts, steps), and where a commit
the store refuses (a value the database cannot hold) becomes a failed attempt instead of
a run left ``running`` until its lease expires and its handler runs again.

``stop()`` (SIGTERM/SIGINT in ``python -m slayq.worker``) stops claiming, lets in-flight
runs finish until ``grace`` runs out, then cancels the rest and releases their leases so
another worker takes them at once instead of after the lease expires.
"""

from __future__ import annotations

import logging
import math
import os
import socket
import time
from collections.abc import Awaitable, Callable, Collection
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING

import anyio
import anyio.lowlevel

from slayq.errors import LeaseLostError, StoreError, StoreInputError, StoreUnavailableError
from slayq.model import Continue, ErrorInfo, Failed, Suspend, Transition
from slayq.runtime.retry import DEFAULT_RETRY_POLICY, RetryPolicy
from slayq.store.protocol import Batch, ClaimRequest
from slayq.telemetry import metrics

if TYPE_CHECKING:
    from collections.abc import Sequence

    from anyio.streams.memory import MemoryObjectReceiveStream, MemoryObjectSendStream

    from slayq.model import Claim, Lease
    from slayq.runtime.driver import Commit
    from slayq.store.protocol import QueueLimit, Store

logger = logging.getLogger(__name__)


# A run claimed ahead should start within about this long, going by how long the group's
# runs take: a run that would wait longer is left to other processes (``_Group.ahead_now``).
AHEAD_WAIT = 1.0


@dataclass
class _Group:
    limit: QueueLimit | None  # None: every queue, no cluster-wide limit
    slots: int
    # Runs claimed beyond its slots, to start as soon as a slot is free (see ``claim_ahead``):
    # at most this many, fewer if its runs are slow (``adaptive``), or this many.
    ahead: int = 0
    adaptive: bool = False
    run_seconds: float | None = None  # a moving average of its runs' times, start to end
    in_flight: int = 0  # claimed here and not released: running or waiting for a slot
    # With runs claimed ahead, its slots: a run holds one while its handler may run, not
    # while its commit is in a tick (made by run(); None: a run holds its task's slot).
    handlers: anyio.Semaphore | None = None
    shared_at: float = float("-inf")  # when a tick last left its freed slots to others
    held_back_until: float = float("-inf")  # its free slots are left to others until then

    def ahead_now(self) -> int:
        """How many runs to hold claimed beyond the slots now. Adaptive: as many as start
        within ``AHEAD_WAIT`` on average (the k-th waits k/slots run times), none until a
        run has ended. Short runs get them all; runs of minutes, none, so that runs do not
        wait here behind them while another process may be idle."""
        if not self.adaptive:
            return self.ahead
        if self.run_seconds is None:
            return 0
        return min(self.ahead, int(AHEAD_WAIT * self.slots / max(self.run_seconds, 1e-6)))

    def ran(self, seconds: float) -> None:
        """A run of the group took ``seconds`` from its start to its end."""
        last = self.run_seconds
        self.run_seconds = seconds if last is None else last + (seconds - last) / 5


@dataclass
class _InFlight:
    lease: Lease
    group: _Group
    scope: anyio.CancelScope = field(default_factory=anyio.CancelScope)
    # Its slot was given back by the tick that committed its final transition (and maybe
    # refilled by that tick's claim), before its task ended.
    released: bool = False
    committing: bool = False  # a commit of it is queued or in a tick
    begun: bool = False  # its handler began (else it is claimed ahead, waiting for a slot)
    holding: bool = False  # it holds one of its group's ``handlers``
    waiting: bool = False  # for one of them
    cancel_after_commit: bool = False

    def cancel(self) -> None:
        """Stop the run. One waiting for a commit is stopped once it knows how the commit
        ended: as if every commit were waited for shielded, without a shielded scope per
        commit (``_commit_durably`` shields the wait only if the run was stopped before)."""
        if self.committing:
            self.cancel_after_commit = True
        else:
            self.scope.cancel()


@dataclass
class _Queued:
    """A commit waiting for the next tick, and the run's task waiting for it."""

    entry: _InFlight
    lease: Lease
    transition: Transition
    done: anyio.Event  # the tick's, set when it ended: one event for all of its commits
    error: BaseException | None = None

    @property
    def final(self) -> bool:
        """The run's task stops after this commit: anything but Continue."""
        return not isinstance(self.transition.outcome, Continue)


# How often a process holding a whole cluster-wide limit lets other processes take a
# freed slot, and for how long it leaves them (see ``Dispatcher._shares_now``).
SHARE_EVERY = 1.0
SHARE_GRACE = 0.03

# A tick with commits waits for the other runs in flight while their answers come at
# most ``gather`` apart, and at most this many times ``gather`` in all.
GATHER_AT_MOST = 5

Execute = Callable[["Claim", "Commit"], Awaitable[object]]
"""Runs a claim to its next stop, committing through the given function."""


class CommitRefusedError(StoreError):
    """The store refused a run's transition; a failed attempt was committed in its place."""


async def unserved_queues(store: Store, served: Collection[str]) -> dict[str, int]:
    """Due runs waiting in queues that nothing here serves: not in limbo unseen."""
    due = await store.due_by_queue()
    return {queue: count for queue, count in sorted(due.items()) if queue not in served}


class Dispatcher:
    def __init__(
        self,
        store: Store,
        execute: Execute,
        *,
        register_schedules: Callable[[], Awaitable[object]] | None = None,
        queues: Sequence[QueueLimit] | None = None,
        concurrency: int = 10,
        lease_for: timedelta = timedelta(seconds=30),
        poll_interval: timedelta = timedelta(seconds=1),
        grace: timedelta = timedelta(seconds=30),
        retention: timedelta | None = timedelta(days=7),
        owner: str | None = None,
        retry_policy: RetryPolicy = DEFAULT_RETRY_POLICY,
        queue_metrics_interval: timedelta | None = timedelta(seconds=15),
        gather: timedelta = timedelta(0),
        claim_ahead: int | None = None,
    ) -> None:
        # How long a tick with commits waits for the next of the other runs in flight to
        # queue theirs (0: not at all; see _gathered). The server's deliveries of one
        # claim answer spread over a few milliseconds, and without it the first answer
        # took a tick alone.
        self.gather = gather.total_seconds()
        self.store = store
        self.execute = execute
        self.register_schedules = register_schedules
        self.lease_for = lease_for
        self.poll_interval = poll_interval.total_seconds()
        self.grace = grace.total_seconds()
        self.retention = retention
        self.owner = owner or f"{socket.gethostname()}:{os.getpid()}"
        self.retry_policy = retry_policy
        self.queue_metrics_interval = queue_metrics_interval
        self._gauged_queues: set[str] = set()
        # None: every queue is served here, so none can be unserved.
        self.served = None if queues is None else {name for limit in queues for name in limit.names}
        # Claiming ahead: only without a cluster-wide limit, where a run claimed but not
        # started takes nobody's slot (under a limit it would hold one of the cluster's).
        # While the slots run one batch, the next is claimed and waits: the slots do not
        # sit idle through the tick that commits their runs and claims the next ones.
        if claim_ahead is not None and claim_ahead < 0:
            raise ValueError(f"claim_ahead must be 0 or more, not {claim_ahead}")
        if claim_ahead and queues is not None:
            raise ValueError(
                "claim_ahead is for a worker without queue limits (queues=None): a run "
                "claimed ahead would hold one of a cluster-wide limit's slots unstarted"
            )
        # By default at most twice the slots, fewer for slow runs (``_Group.ahead_now``):
        # ticks of 20-30 runs for 10 slots cost less per run than ticks of 10-20 (no-op
        # runs/s +35%, 3 times the slots no better: claiming.md).
        self.claim_ahead = (
            0 if queues is not None else 2 * concurrency if claim_ahead is None else claim_ahead
        )
        self.claim_ahead_adapts = queues is None and claim_ahead is None
        self._groups = (
            [_Group(limit, limit.concurrency) for limit in queues]
            if queues is not None
            else [_Group(None, concurrency, self.claim_ahead, self.claim_ahead_adapts)]
        )
        self._in_flight: dict[str, _InFlight] = {}
        self._to_slots: MemoryObjectSendStream[tuple[Claim, _InFlight]]  # made by run()
        self._queued: list[_Queued] = []
        self._queued_done = anyio.Event()  # set when the tick that takes _queued ends
        self._ticker_stopped = False
        # The ticker claims once the clock passes this (anyio time): 0 while claims fill
        # every free slot, later after one came back short (nothing more was due).
        self._claim_after = 0.0
        self._wakes = 0  # wake-ups so far: one during a tick means its claim may be stale
        self._tick_needed = anyio.Event()  # a commit queued, a slot freed, new work
        self._run_ended = anyio.Event()
        self._stopping = anyio.Event()
        self.started = anyio.Event()

    def stop(self) -> None:
        """Stop claiming and drain; ``run()`` returns when done."""
        self._stopping.set()
        self._tick_needed.set()

    def _wake(self) -> None:
        """New work may be due: claim at the next tick."""
        self._wakes += 1
        self._claim_after = 0.0
        self._tick_needed.set()

    async def run(self) -> None:
        if self.register_schedules is not None:  # an app's, at start (the server has none)
            await self.register_schedules()
        # Claims on their way to the slot tasks; closed at shutdown, ending the slots.
        self._to_slots, claimed = anyio.create_memory_object_stream[tuple["Claim", _InFlight]](
            math.inf
        )
        with self._to_slots, claimed:
            async with anyio.create_task_group() as services:
                services.start_soon(self._listen)
                services.start_soon(self._heartbeat)
                services.start_soon(self._housekeeping)
                async with anyio.create_task_group() as slots:
                    # The ticker outlives the runs: their last commits go through it.
                    services.start_soon(self._ticker)
                    for group in self._groups:
                        if group.ahead:
                            group.handlers = anyio.Semaphore(group.slots)
                    for _ in range(sum(group.slots + group.ahead for group in self._groups)):
                        slots.start_soon(self._slot, claimed)
                    self.started.set()
                    await self._stopping.wait()
                    await self._hand_back_unstarted(claimed)
                    with anyio.move_on_after(self.grace):
                        while self._in_flight:
                            await self._run_ended.wait()
                            self._run_ended = anyio.Event()
                    for run in list(self._in_flight.values()):
                        run.cancel()
                    # A claim handed over but not started yet meets its cancelled scope
                    # and is released unstarted; then the slots find the stream ended.
                    self._to_slots.close()
                services.cancel_scope.cancel()

    async def _hand_back_unstarted(
        self, claimed: MemoryObjectReceiveStream[tuple[Claim, _InFlight]]
    ) -> None:
        """At ``stop()``: the runs whose handler has not begun (claimed ahead, waiting for
        a slot) go back to the queue now, for another process to start, instead of
        starting here during the grace."""
        for entry in list(self._in_flight.values()):
            if not entry.begun:
                entry.scope.cancel()
        while True:  # and those no task has taken yet
            try:
                claim, entry = claimed.receive_nowait()
            except anyio.WouldBlock:
                return
            await self._execute(claim, entry)  # skips the handler, releases the lease

    async def _slot(self, claimed: MemoryObjectReceiveStream[tuple[Claim, _InFlight]]) -> None:
        """Executes claimed runs one after another: one task per unit of concurrency, and
        per run claimed ahead (those wait for one of the group's ``handlers``)."""
        async for claim, entry in claimed:
            await self._execute(claim, entry)

    @staticmethod
    async def _hold_slot(entry: _InFlight) -> None:
        handlers = entry.group.handlers
        if handlers is not None and not entry.holding:
            entry.waiting = True
            try:
                await handlers.acquire()
            finally:
                entry.waiting = False
        entry.holding = True

    @staticmethod
    def _let_go_slot(entry: _InFlight) -> None:
        handlers = entry.group.handlers
        if handlers is not None and entry.holding:
            handlers.release()
        entry.holding = False

    # -- claiming ----------------------------------------------------------------------

    async def _ticker(self) -> None:
        """Commit what queued up and claim into the free slots, one batch at a time.

        If it stops (a claim the database refuses for good, or shutdown), every commit
        still waiting learns so (a run stopped meanwhile is stopped after it learns).
        """
        batch: list[_Queued] = []
        try:
            while True:
                if self._tick_needed.is_set():
                    # What signalled it is seen by this tick: taking the queued commits,
                    # the free slots and the time to claim after this reset loses nothing.
                    self._tick_needed = anyio.Event()
                batch, self._queued = self._queued, []
                if batch and self.gather > 0 and not self._stopping.is_set():
                    batch += await self._gathered()
                requests = self._claim_requests(batch) if self._may_claim() else []
                if not batch and not requests:
                    await self._wait_for_tick()
                    continue
                if batch:
                    self._queued_done = anyio.Event()  # for the commits of the next tick
                wakes = self._wakes
                result = await self._commit_batch(batch, [request for _, request in requests])
                for queued, error in zip(batch, result.errors, strict=True):
                    queued.error = error
                    if error is None and queued.final and not queued.entry.released:
                        queued.entry.released = True
                        queued.entry.group.in_flight -= 1
                if batch:
                    batch[0].done.set()  # the one event of all of the batch's commits
                await self._start_claimed(requests, result, wakes)
        finally:
            self._ticker_stopped = True
            stopped = StoreUnavailableError("the worker stopped before this commit was made")
            for queued in [*batch, *self._queued]:
                if not queued.done.is_set():
                    queued.error = stopped
            for queued in [*batch, *self._queued]:
                queued.done.set()
            self._queued = []

    async def _gathered(self) -> list[_Queued]:
        """The commits queued while the tick waited for every run in flight to queue one:
        it waits as long as each next commit comes within ``gather`` of the one before,
        and ``GATHER_AT_MOST`` times ``gather`` at most. (A bound on the whole wait, 1 ms
        in the server, split the answers of a claim of ten, which an app answers one
        after another over 2-3 ms: ticks carried 5.5 commits on average, 9.9 now.)

        Signals that came meanwhile are read off the state after it (the queue, the free
        slots, the time to claim), so resetting the event loses none; the commits taken
        share the batch's ``done`` event, made before they queued."""
        with anyio.move_on_after(self.gather * GATHER_AT_MOST):
            while any(not (e.committing or e.waiting) for e in self._in_flight.values()):
                with anyio.move_on_after(self.gather) as lull:
                    await self._tick_needed.wait()
                if lull.cancelled_caught:
                    break
                self._tick_needed = anyio.Event()
        more, self._queued = self._queued, []
        return more

    def _may_claim(self) -> bool:
        return not self._stopping.is_set() and anyio.current_time() >= self._claim_after

    def _claim_requests(self, batch: Sequence[_Queued]) -> list[tuple[_Group, ClaimRequest]]:
        """A claim per group with free slots, counting those the batch's final commits
        free: the claim runs after them, in their transaction."""
        freed: dict[int, int] = {}
        for queued in batch:
            if queued.final and not queued.entry.released:
                freed[id(queued.entry.group)] = freed.get(id(queued.entry.group), 0) + 1
        requests = []
        now = anyio.current_time()
        for group in self._groups:
            free = group.slots + group.ahead_now() - group.in_flight + freed.get(id(group), 0)
            if freed.get(id(group)) and self._shares_now(group, now):
                continue
            if now < group.held_back_until:  # its free slots are left to others a while
                continue
            if free > 0:
                queues = None if group.limit is None else [group.limit]
                requests.append((group, ClaimRequest(queues, free, self.lease_for, self.owner)))
        return requests

    def _shares_now(self, group: _Group, now: float) -> bool:
        """Whether this tick leaves the slots it frees to other processes.

        Holding every slot of a cluster-wide limit, refilling them in the same transaction
        would keep them here for good, and other processes serving the queue would
        starve. So, at most every ``SHARE_EVERY`` seconds, a tick does not claim them,
        its commit tells the queue's listeners (the queue is not being claimed in it),
        and for ``SHARE_GRACE`` seconds this process claims none of the group's slots:
        time for another process to take them. Then it claims what is left in one tick,
        so its runs stay in one batch. A process that got a slot refills its own. Alone,
        a process thus pauses a group ``SHARE_GRACE`` every ``SHARE_EVERY`` (3%).
        """
        if group.limit is None or group.in_flight < group.limit.concurrency:
            return False
        if now - group.shared_at < SHARE_EVERY:
            return False
        group.shared_at = now
        group.held_back_until = now + SHARE_GRACE
        return True

    async def _commit_batch(self, batch: list[_Queued], requests: list[ClaimRequest]) -> Batch:
        commits = [(queued.lease, queued.transition) for queued in batch]
        try:
            return await self.store.commit_batch(commits, claims=requests)
        except Exception as exc:  # a defect: fail these commits, keep the ticker alive
            logger.exception("committing %d runs failed", len(batch))
            return _failed_batch(exc, len(batch), len(requests))

    async def _start_claimed(
        self, requests: list[tuple[_Group, ClaimRequest]], result: Batch, wakes: int
    ) -> None:
        """Hand the tick's claims to the slots. ``wakes``: the count of wake-ups when the
        tick began; one since means new work its claim's snapshot may have missed."""
        if result.claim_error is not None:
            if not isinstance(result.claim_error, StoreUnavailableError):
                # Refused for good (a schema or pooler misconfiguration, a defect): stop
                # the process with it, rather than claim nothing while looking alive.
                raise result.claim_error
            logger.warning("claiming failed, will retry: %s", result.claim_error)
            self._claim_after = anyio.current_time() + self.poll_interval
            return
        starved = False
        for (group, request), claims in zip(requests, result.claims, strict=True):
            for claim in claims:
                entry = _InFlight(claim.lease, group)
                try:
                    self._to_slots.send_nowait((claim, entry))
                except anyio.ClosedResourceError:  # claimed by a tick overlapping shutdown
                    await self._release(claim.lease)
                    continue
                metrics.record_claim(claim, self.lease_for)
                group.in_flight += 1
                self._in_flight[claim.lease.run_id] = entry
            starved = starved or len(claims) < request.limit
        if starved:  # nothing more is due now: ask again when something will be
            # The runs just claimed start first: asking the database when to claim next
            # takes a round trip, which an idle worker's next run should not wait for.
            await anyio.lowlevel.checkpoint()
            wait = await self._idle_timeout()
            if self._wakes == wakes:  # else claim at once: a wake-up came meanwhile
                self._claim_after = anyio.current_time() + wait

    async def _wait_for_tick(self) -> None:
        """Wait for a commit, new work, a freed slot, or the time to claim again.

        A signal that came during the tick is already set and returns at once: the
        event is reset only at the start of a tick, so none is lost."""
        at_most = None
        if not self._stopping.is_set():
            # Every slot busy: the tick that frees one comes with a commit (a wake-up);
            # polling only guards against a lost one.
            at_most = self.poll_interval
            now = anyio.current_time()
            for group in self._groups:
                if group.in_flight < group.slots + group.ahead_now():
                    # It claims when it may again and its slots left to others (if any)
                    # are its own again; waking before, the ticker would only spin.
                    claims_at = max(self._claim_after, group.held_back_until)
                    at_most = min(max(claims_at - now, 0.0), at_most)
        with anyio.move_on_after(at_most):
            await self._tick_needed.wait()

    async def _idle_timeout(self) -> float:
        """Sleep until the next sleeper or timeout is due, but at most ``poll_interval``.

        The database decides what is due at claim time; this only picks when to ask.
        """
        try:
            wakeup = await self.store.next_wakeup()
        except StoreUnavailableError:
            return self.poll_interval
        if wakeup is None:
            return self.poll_interval
        until = (wakeup - datetime.now(UTC)).total_seconds()
        if until <= 0:  # due already, yet not claimed: not ours, or our slots are full
            return self.poll_interval
        return min(self.poll_interval, until + 0.002)

    async def _execute(self, claim: Claim, entry: _InFlight) -> None:
        committed = False
        began: float | None = None

        async def commit(lease: Lease, transition: Transition) -> None:
            nonlocal committed
            # Its handler waits for the commit: another run's may have its slot meanwhile.
            self._let_go_slot(entry)
            await self._commit(claim, entry, lease, transition, first=not committed)
            committed = True
            if isinstance(transition.outcome, Continue):  # its handler goes on
                await self._hold_slot(entry)

        try:
            with entry.scope:
                await self._hold_slot(entry)
                if self._stopping.is_set():  # stopped before its handler began: hand it back
                    entry.scope.cancel()
                else:
                    entry.begun = True
                    began = time.monotonic()
                    _log_takeover(claim)
                    await self.execute(claim, commit)
        except LeaseLostError:
            logger.info(
                "run %s was taken over or cancelled", claim.lease.run_id, extra=_run_fields(claim)
            )
        except CommitRefusedError:
            pass  # logged where it was turned into a failed attempt
        except Exception:
            logger.exception(
                "executing run %s failed", claim.lease.run_id, extra=_run_fields(claim)
            )
        finally:
            self._let_go_slot(entry)
            if began is not None:
                entry.group.ran(time.monotonic() - began)
            metrics.record_release()
            self._in_flight.pop(claim.lease.run_id, None)
            if entry.scope.cancel_called and self._stopping.is_set():
                # Shutdown cut the run short: hand it back so another worker starts it now.
                with anyio.CancelScope(shield=True), anyio.move_on_after(5):
                    await self._release(claim.lease)
            if not entry.released:  # ended without a final commit: its slot is free now
                entry.released = True
                entry.group.in_flight -= 1
                self._tick_needed.set()
            self._run_ended.set()

    async def _commit(
        self,
        claim: Claim,
        entry: _InFlight,
        lease: Lease,
        transition: Transition,
        *,
        first: bool = False,
    ) -> None:
        """Commit ``transition``; if the store refuses it, commit a failed attempt instead.

        A refusal caused by the values (``StoreInputError``) would recur on every attempt,
        so the run fails for good; any other refusal is retried with backoff. Either way
        the real error is on the run, naming its step, and ``CommitRefusedError`` tells
        the executor to stop driving the run.
        """
        try:
            await self._commit_durably(entry, lease, transition)
        except (LeaseLostError, StoreUnavailableError):
            raise
        except StoreError as exc:
            failed = self._refused(claim, transition, exc)
            _log_failure(claim, failed)
            instead = Transition(steps=[], outcome=failed)
            await self._commit_durably(entry, lease, instead)
            metrics.record_commit(claim, instead, first=first)
            raise CommitRefusedError(str(exc)) from exc
        metrics.record_commit(claim, transition, first=first)
        if isinstance(transition.outcome, Failed):
            _log_failure(claim, transition.outcome)

    def _refused(self, claim: Claim, transition: Transition, exc: StoreError) -> Failed:
        names = [s.name for s in transition.steps]
        if isinstance(transition.outcome, Suspend):
            names += [p.name for p in transition.outcome.pending]
        what = f"step {names[0]!r}" if len(names) == 1 else f"steps {names}" if names else "run"
        error = ErrorInfo(
            type=type(exc).__name__,
            message=f"the store refused to record the {what}: {exc}",
            step=names[0] if names else None,
        )
        retry = not isinstance(exc, StoreInputError) and claim.attempt < claim.max_attempts
        return Failed(error, retry_after=self.retry_policy.delay(claim.attempt) if retry else None)

    async def _commit_durably(self, entry: _InFlight, lease: Lease, transition: Transition) -> None:
        """Commit at the next tick, riding out a database restart for as long as the lease
        lasts. A run stopped meanwhile (``_InFlight.cancel``) still learns how its commit
        ended: it is stopped after."""
        # time.monotonic is the asyncio loop's clock, without anyio's look-up per call.
        deadline = time.monotonic() + self.lease_for.total_seconds()
        delay = 0.05
        while True:
            if self._ticker_stopped:  # nothing would make the commit: fail it now
                raise StoreUnavailableError("the worker stopped before this commit was made")
            try:
                queued = _Queued(entry, lease, transition, self._queued_done)
                self._queued.append(queued)
                self._tick_needed.set()
                entry.committing = True
                try:
                    if entry.scope.cancel_called:
                        # Stopped already (it ran on without suspending since): the stop
                        # would land in this wait, so wait shielded, the rare case.
                        with anyio.CancelScope(shield=True):
                            await queued.done.wait()
                    else:
                        await queued.done.wait()
                finally:
                    entry.committing = False
                    if entry.cancel_after_commit:
                        entry.scope.cancel()
                if queued.error is not None:
                    raise queued.error
                return
            except StoreUnavailableError:
                if self._ticker_stopped or time.monotonic() + delay > deadline:
                    raise
                logger.warning("commit of run %s failed; retrying in %.2fs", lease.run_id, delay)
                await anyio.sleep(delay)
                delay = min(delay * 2, 2.0)

    async def _release(self, lease: Lease) -> None:
        try:
            await self.store.release(lease)
        except Exception:
            logger.warning("could not release run %s; it will be taken over", lease.run_id)

    # -- services ----------------------------------------------------------------------

    async def _listen(self) -> None:
        listen = getattr(self.store, "listen", None)
        if listen is None:
            return
        delay = 0.1
        while True:
            try:
                async for _queue in listen():
                    delay = 0.1
                    self._wake()
            except Exception as exc:
                logger.warning("listening for new work failed, polling meanwhile: %s", exc)
            await anyio.sleep(delay)
            delay = min(delay * 2, 5.0)

    async def _heartbeat(self) -> None:
        interval = self.lease_for.total_seconds() / 3
        while True:
            await anyio.sleep(interval)
            # A released run committed its final transition: its lease is gone already.
            held = {e.lease.run_id: e for e in self._in_flight.values() if not e.released}
            if not held:
                continue
            try:
                kept = await self.store.extend_leases(
                    [entry.lease for entry in held.values()], self.lease_for
                )
            except StoreUnavailableError as exc:
                logger.warning("extending leases failed: %s", exc)
                continue
            kept_ids = {lease.run_id for lease in kept}
            for run_id, entry in held.items():
                # A run whose commit is under way may have just finished (its lease gone
                # with it); if its lease was lost instead, the commit says so.
                lost = not (entry.released or entry.committing)
                if lost and run_id not in kept_ids and run_id in self._in_flight:
                    logger.warning("lost the lease of run %s; stopping it here", run_id)
                    entry.cancel()

    async def _housekeeping(self) -> None:
        last_cleanup = last_unserved_check = last_gauges = 0.0
        every = self.queue_metrics_interval
        while True:
            try:
                await self.store.fire_schedules()
                if (
                    every is not None
                    and anyio.current_time() - last_gauges >= every.total_seconds()
                ):
                    last_gauges = anyio.current_time()
                    await self._refresh_queue_gauges()
                if self.retention is not None and anyio.current_time() - last_cleanup > 60:
                    last_cleanup = anyio.current_time()
                    while await self.store.delete_finished(self.retention) > 0:
                        await anyio.lowlevel.checkpoint()
                if self.served is not None and anyio.current_time() - last_unserved_check > 60:
                    last_unserved_check = anyio.current_time()
                    await self._warn_about_unserved_queues(self.served)
            except StoreUnavailableError as exc:
                logger.warning("housekeeping failed: %s", exc)
            await anyio.sleep(_seconds_to_next_second())

    async def _refresh_queue_gauges(self) -> None:
        """The queue gauges, from one cheap query (not per scrape, not per run)."""
        infos = await self.store.list_queues()
        due = {info.name: info.due for info in infos}
        oldest = {info.name: info.oldest_due_at for info in infos}
        metrics.set_queue_gauges(due, oldest, now=datetime.now(UTC), known=self._gauged_queues)

    async def _warn_about_unserved_queues(self, served: Collection[str]) -> None:
        """Runs due in a queue that no config names would wait forever: say so."""
        for queue, count in (await unserved_queues(self.store, served)).items():
            logger.warning(
                "%d run(s) are due in queue %r, which this process does not serve; add it "
                "to slay-config.json or run a server or worker for it",
                count,
                queue,
                extra={"queue": queue},
            )


def _run_fields(claim: Claim) -> dict[str, object]:
    """The run's fields for a log record's ``extra`` (made only when one is logged)."""
    return {"run_id": claim.lease.run_id, "event": claim.event, "queue": claim.queue}


def _log_takeover(claim: Claim) -> None:
    if claim.taken_over_from is not None:
        logger.warning(
            "run %s (%s): taken over from %s, whose lease ran out (it crashed or stalled); "
            "now attempt %d/%d",
            claim.lease.run_id,
            claim.event,
            claim.taken_over_from,
            claim.attempt,
            claim.max_attempts,
            extra=_run_fields(claim) | {"previous_owner": claim.taken_over_from},
        )


def _log_failure(claim: Claim, failed: Failed) -> None:
    """One WARNING per failed attempt, so the first cause of a failing run is never lost."""
    error = failed.error
    at_step = f" at step {error.step!r}" if error.step else ""
    then = (
        "failed for good"
        if failed.retry_after is None
        else f"will retry in {failed.retry_after.total_seconds():.1f}s"
    )
    logger.warning(
        "run %s (%s) attempt %d/%d failed%s: %s: %s; %s",
        claim.lease.run_id,
        claim.event,
        claim.attempt,
        claim.max_attempts,
        at_step,
        error.type,
        error.message,
        then,
        extra={
            "run_id": claim.lease.run_id,
            "event": claim.event,
            "queue": claim.queue,
            "step": error.step,
            "attempt": claim.attempt,
            "max_attempts": claim.max_attempts,
            "error_type": error.type,
        },
    )


def _failed_batch(exc: Exception, commits: int, claims: int) -> Batch:
    error = StoreError(f"committing failed: {exc!r}")
    return Batch(errors=[error] * commits, claims=[[] for _ in range(claims)], claim_error=error)


def _seconds_to_next_second() -> float:
    now = datetime.now(UTC)
    return 1.0 - now.microsecond / 1_000_000 + 0.01
