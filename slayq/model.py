"""The data that flows between the engine, the stores and the transports.

These are plain msgspec Structs: the engine produces them, stores persist them, and the
HTTP transport sends them as JSON. Values that users give or get back (event data, step
outputs, results) are JSON-shaped builtins here: dicts, lists, str, int, float, bool, None.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any, Literal, NewType

import msgspec

RunId = NewType("RunId", str)

StepKind = Literal["run", "sleep", "wait", "invoke", "send"]
PendingKind = Literal["sleep", "wait", "invoke"]
RunStatus = Literal["queued", "running", "sleeping", "waiting", "completed", "failed", "cancelled"]
FINISHED_STATUSES: frozenset[str] = frozenset({"completed", "failed", "cancelled"})


class ErrorInfo(msgspec.Struct, frozen=True):
    """An error as it is kept on a run or step: the exception's type, message, traceback."""

    type: str
    message: str
    traceback: str = ""
    step: str | None = None


# Errors the stores record themselves.
LEASE_EXPIRED = ErrorInfo(
    type="LeaseExpired",
    message="the worker running this attempt stopped renewing its lease (crashed or hung); "
    "the run was taken over",
)
CANCELLED = ErrorInfo(type="Cancelled", message="the invoked run was cancelled")


class StepRecord(msgspec.Struct, frozen=True):
    """A finished step: its memoized output, or the error an invoked run failed with."""

    name: str
    kind: StepKind
    output: Any = None
    error: ErrorInfo | None = None
    finished_at: datetime | None = None
    # When it began (a handler's start; when the run suspended on a sleep, wait or
    # invocation), how long it took, and the run's attempt number when it was recorded.
    started_at: datetime | None = None
    duration: timedelta | None = None
    attempt: int | None = None


class CancelRule(msgspec.Struct, frozen=True):
    """An event named ``event`` whose ``data[field]`` equals ``value`` cancels the run."""

    event: str
    field: str
    value: Any


class ParentLink(msgspec.Struct, frozen=True):
    """The run and step that invoked a run and wait for its result."""

    run_id: RunId
    step: str


class FlowSlot(msgspec.Struct, frozen=True):
    """A concurrency limit: at most ``limit`` runs of ``bucket`` hold a lease at once."""

    bucket: str
    limit: int


class FlowRate(msgspec.Struct, frozen=True):
    """A GCRA rate: one start per ``interval`` on average, ``burst`` more at once."""

    bucket: str
    interval: timedelta
    burst: int


class FlowWindow(msgspec.Struct, frozen=True):
    """Debounce: due ``period`` after the bucket's last event, at most ``timeout`` after
    its first (None: no bound)."""

    bucket: str
    period: timedelta
    timeout: timedelta | None = None


class FlowBatch(msgspec.Struct, frozen=True):
    """Events of ``bucket`` collected into one run: due when ``max_size`` arrived or
    ``timeout`` after the first. The run's data (``{"events": [...]}``) stays within
    ``max_bytes`` of JSON: an event that would take it over opens the next batch. The
    client passes its ``SizeLimits.event_data_bytes`` (512 KiB by default)."""

    bucket: str
    max_size: int
    timeout: timedelta
    max_bytes: int = 512 * 1024


class FlowSingleton(msgspec.Struct, frozen=True):
    """At most one unfinished run of ``bucket``: a new one is skipped or cancels it."""

    bucket: str
    mode: Literal["skip", "cancel"] = "skip"


class FlowOnce(msgspec.Struct, frozen=True):
    """Idempotency: the first run of ``bucket`` answers for ``ttl``."""

    bucket: str
    ttl: timedelta


class Flow(msgspec.Struct, frozen=True, omit_defaults=True):
    """A run's flow controls, resolved by the client when the run is created (see
    ``slayq.runtime.flow``). Claim-time: ``concurrency``, ``throttle``; send-time: the rest.
    A bucket names the function and the key's value, e.g. ``sync customer_id=42``."""

    concurrency: list[FlowSlot] = []
    throttle: FlowRate | None = None
    rate_limit: FlowRate | None = None
    debounce: FlowWindow | None = None
    batch: FlowBatch | None = None
    singleton: FlowSingleton | None = None
    idempotency: FlowOnce | None = None


class NewRun(msgspec.Struct, frozen=True):
    """A run to create, fully resolved by the client (stores know no functions).

    ``delay`` is relative to the store's clock (the database's, in production) so that a
    drifting application clock never makes a run early or late; ``run_at`` is absolute.
    """

    id: RunId
    event: str
    data: dict[str, Any]
    queue: str = "general"
    priority: int = 0
    max_attempts: int = 26
    cancel_on: list[CancelRule] = []
    key: str | None = None
    delay: timedelta | None = None
    run_at: datetime | None = None
    parent: ParentLink | None = None
    # Where the slayq server delivers the run: the sending client's receiver URL.
    endpoint: str | None = None
    # Whether the run may wait for events (its function declares waits_on): only such
    # runs keep events in the event log from being pruned. The registry always says;
    # a run from a sender that does not (an older client) is assumed to wait.
    may_wait: bool = True
    # The W3C trace context (traceparent, tracestate) of the code that sent the event,
    # so the run's spans continue its trace; None without OpenTelemetry.
    trace: dict[str, str] | None = None
    # Flow controls (``Flow``); None for a function with none, so plain runs carry nothing.
    flow: Flow | None = None


class OutgoingEvent(msgspec.Struct, frozen=True):
    """An event to ingest: it may start ``run``, wake waiters and cancel runs.

    ``logged`` events are kept in the event log so that a wait registered a moment after
    the event was sent still sees it (see ``Store.commit``).
    """

    name: str
    data: dict[str, Any]
    run: NewRun | None = None
    logged: bool = False


class PendingStep(msgspec.Struct, frozen=True):
    """A step the run is suspended on, resolved by the store.

    It resolves when its trigger happens (a matching event, the invoked run finishing)
    or, at the latest, when it expires: a sleep always resolves by expiring, a wait or an
    invocation that expires resolves to ``None``. Expiry is ``until`` if given, else the
    store's now + ``delay``; a pending step without either never expires.
    """

    name: str
    kind: PendingKind
    until: datetime | None = None
    delay: timedelta | None = None
    event: str | None = None
    match_field: str | None = None
    match_value: Any = None
    child: NewRun | None = None


class Continue(msgspec.Struct, frozen=True, tag="continue"):
    """New steps finished; the run has more work and should be driven again at once."""


class Suspend(msgspec.Struct, frozen=True, tag="suspend"):
    """The run waits until every pending step has resolved."""

    pending: list[PendingStep]


class Completed(msgspec.Struct, frozen=True, tag="completed"):
    result: Any = None


class Failed(msgspec.Struct, frozen=True, tag="failed"):
    """The attempt failed. ``retry_after`` is None when the run has failed for good."""

    error: ErrorInfo
    retry_after: timedelta | None = None


Outcome = Continue | Suspend | Completed | Failed


class Transition(msgspec.Struct, frozen=True):
    """What one drive of a run produced; a store commits all of it in one transaction."""

    steps: list[StepRecord]
    outcome: Outcome
    sent: list[OutgoingEvent] = []
    # How many memo records this drive answered without running anything (replay).
    replayed: int = 0


class Lease(msgspec.Struct, frozen=True):
    """A claim on a run. ``token`` fences: it changes with every claim, so a commit from an
    earlier holder is refused."""

    run_id: RunId
    token: int
    expires_at: datetime


class Claim(msgspec.Struct, frozen=True):
    """A run handed to a driver, with everything the engine needs to drive it."""

    lease: Lease
    event: str
    data: dict[str, Any]
    queue: str
    attempt: int
    max_attempts: int
    memo: list[StepRecord]
    endpoint: str | None = None
    # Set when this claim took the run over from a holder whose lease ran out (it crashed
    # or stalled): that holder's owner name. Its attempt was counted.
    taken_over_from: str | None = None
    # The trace context stored with the run (``NewRun.trace``).
    trace: dict[str, str] | None = None
    # When the run became due (store clock): its schedule-to-start latency is measured
    # from here. None from a store that does not say.
    due_at: datetime | None = None


AttemptOutcome = Literal[
    "running",
    "completed",
    "failed",
    "retrying",
    "suspended",
    "lease_expired",
    "cancelled",
    "released",
]


class AttemptInfo(msgspec.Struct, frozen=True):
    """One attempt of a run: from a claim to the commit (or takeover) that ended it.

    ``number`` is the attempt number the function saw (``ctx.attempt``): a run that
    suspends and resumes, or is released, goes on with the same number, so several
    entries may share it. ``replayed`` counts memo records answered from the memo,
    ``executed`` the steps this attempt recorded (handlers run, events sent).
    """

    number: int
    started_at: datetime
    ended_at: datetime | None
    owner: str | None
    outcome: AttemptOutcome
    error: ErrorInfo | None = None
    replayed: int = 0
    executed: int = 0


class RunInfo(msgspec.Struct, frozen=True):
    """A snapshot of a run: what it is doing and what it did."""

    id: RunId
    event: str
    queue: str
    status: RunStatus
    data: dict[str, Any]
    attempts: int
    max_attempts: int
    steps: list[StepRecord]
    pending: list[PendingStep]
    created_at: datetime
    updated_at: datetime
    run_at: datetime | None = None
    result: Any = None
    error: ErrorInfo | None = None
    priority: int = 0
    key: str | None = None
    parent: ParentLink | None = None
    finished_at: datetime | None = None
    endpoint: str | None = None
    # Every attempt, oldest first; the current one (outcome "running") last.
    history: list[AttemptInfo] = []
    # The run this one was made from by ``rerun`` (it copied that run's memo).
    forked_from: RunId | None = None
    # Its flow controls (``NewRun.flow``), and why they hold it back now, if they do
    # ("waiting for a concurrency slot of customer_id=42 (2 of 2 running)"): get_run only.
    flow: Flow | None = None
    held_back: str | None = None


# -- operations: runs --


class RunFilter(msgspec.Struct, frozen=True):
    """Which runs ``list_runs`` and the bulk actions select, resolved by the client.

    ``since``/``until`` bound ``created_at`` (from, inclusive; to, exclusive) as points in
    time; ``since_ago``/``until_ago`` do as durations back from the store's clock, which
    the store resolves (so a drifting application clock never moves the window).
    ``data`` is a mapping the run's event data must contain (JSON containment).
    """

    status: list[RunStatus] | None = None
    event: str | None = None
    queue: str | None = None
    since: datetime | None = None
    until: datetime | None = None
    since_ago: timedelta | None = None
    until_ago: timedelta | None = None
    data: dict[str, Any] | None = None
    parent: RunId | None = None


class RunPage(msgspec.Struct, frozen=True):
    """One page of ``list_runs``, newest first. Its runs are a list view: ``steps``,
    ``pending`` (and ``history``) are left empty; ``get_run`` reads them. Pass
    ``next_cursor`` back for the next page; None when this page is the last."""

    runs: list[RunInfo]
    next_cursor: str | None = None


class Schedule(msgspec.Struct, frozen=True):
    """A cron function's schedule: ``template`` is the run to start on every tick."""

    event: str
    cron: str
    template: NewRun


class MinuteStats(msgspec.Struct, frozen=True):
    """One minute of ``run_stats``: runs created in it (``started``), and runs that
    finished in it, by how they finished."""

    at: datetime
    started: int = 0
    completed: int = 0
    failed: int = 0
    cancelled: int = 0


class RunStats(msgspec.Struct, frozen=True):
    """What ``run_stats`` answers: activity per minute over a window ending now.

    ``minutes`` has one entry per minute of the window that saw any run start or finish
    (oldest first; minutes without any are left out), each starting on a whole minute of
    the store's clock; ``since`` is the window's start, ``now`` the store's clock.
    ``expired_leases`` counts the runs still marked running whose lease has expired
    (their holder stopped renewing it; a claim takes them over).
    """

    since: datetime
    now: datetime
    minutes: list[MinuteStats]
    expired_leases: int


# -- operations: queues --------------------------------------------------------------


class WaitInfo(msgspec.Struct, frozen=True):
    """A run's pending ``wait_for_event``: what event (and match) answers it, and when it
    expires (None: never)."""

    run_id: RunId
    step: str
    event: str
    match_field: str | None
    match_value: Any
    expires_at: datetime | None


class QueueInfo(msgspec.Struct, frozen=True):
    """A queue's runs by state, and whether it is paused.

    Every unfinished run of the queue is counted once: ``due`` (claimable now),
    ``running``, ``sleeping`` (due later at a known time: a sleep, a retry's backoff, a
    delayed start) or ``waiting`` (for an event or an invoked run). ``oldest_due_at`` is
    when the longest-waiting due run became due (None if none is).
    """

    name: str
    due: int
    running: int
    sleeping: int
    waiting: int
    oldest_due_at: datetime | None
    paused: bool


class ScheduleInfo(msgspec.Struct, frozen=True):
    """A registered cron schedule: the event it sends, its expression, the app that
    registered it (None for schedules from before apps owned them), its next tick."""

    event: str
    cron: str
    app: str | None
    next_at: datetime


class WorkerInfo(msgspec.Struct, frozen=True):
    """A process holding leases (a worker or a server): how many runs it holds and when it
    last took or renewed a lease. An old heartbeat means it stopped; its runs are taken
    over when their leases expire."""

    owner: str
    runs_held: int
    last_heartbeat_at: datetime | None


class AuditEntry(msgspec.Struct, frozen=True):
    """An operator action: who (``actor``), what (``action`` on ``target``), when."""

    at: datetime
    actor: str
    action: str
    target: str | None = None
    detail: Any = None
