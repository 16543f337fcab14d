"""The in-memory store's records of runs, events and schedules, and the conversions of
those records into what the store answers (copies, never the records themselves)."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any, TypeVar

import msgspec

from slayq.errors import (
    StoreInputError,
)
from slayq.model import (
    AttemptInfo,
    CancelRule,
    ErrorInfo,
    Failed,
    Flow,
    OutgoingEvent,
    ParentLink,
    PendingStep,
    RunId,
    RunInfo,
    RunStatus,
    Schedule,
    StepRecord,
    Suspend,
)
from slayq.store._flow_claims import fair_bucket

if TYPE_CHECKING:
    from collections.abc import Sequence

    from slayq.model import Outcome
    from slayq.runtime.cron import CronSpec

_S = TypeVar("_S", bound=msgspec.Struct)
_EARLIEST = datetime.min.replace(tzinfo=UTC)


def _copy(value: Any) -> Any:
    return msgspec.json.decode(msgspec.json.encode(value))


@dataclass
class _Pending:
    step: PendingStep
    expires_at: datetime | None
    started_at: datetime


@dataclass
class _Run:
    id: RunId
    seq: int
    event: str
    data: dict[str, Any]
    queue: str
    priority: int
    max_attempts: int
    cancel_on: list[CancelRule]
    key: str | None
    parent: ParentLink | None
    endpoint: str | None
    created_at: datetime
    updated_at: datetime
    run_at: datetime | None
    event_cursor: int
    may_wait: bool
    trace: dict[str, str] | None = None
    flow: Flow | None = None
    status: RunStatus = "queued"
    attempt: int = 1
    steps: list[StepRecord] = field(default_factory=list)
    pending: dict[str, _Pending] = field(default_factory=dict)
    token: int = 0
    owner: str | None = None
    lease_expires_at: datetime | None = None
    heartbeat_at: datetime | None = None  # when the lease was last taken or extended
    result: Any = None
    error: ErrorInfo | None = None
    finished_at: datetime | None = None
    forked_from: RunId | None = None
    # The attempt running now: set from its claim until it ends (see ``_end_attempt``).
    attempt_started_at: datetime | None = None
    replayed: int = 0
    executed: int = 0
    history: list[AttemptInfo] = field(default_factory=list)

    @property
    def gated(self) -> bool:
        """Under a concurrency key or a throttle: claimed by ``_flow_claims.claim_gated``."""
        return fair_bucket(self.flow) is not None


@dataclass(frozen=True)
class _Event:
    seq: int
    name: str
    data: dict[str, Any]
    created_at: datetime


@dataclass
class _Schedule:
    schedule: Schedule
    spec: CronSpec
    next_at: datetime
    app: str


def _info(run: _Run, *, steps: bool) -> RunInfo:
    """A run as ``get_run`` shows it, or (without ``steps``) as ``list_runs`` lists it."""
    return RunInfo(
        id=run.id,
        event=run.event,
        queue=run.queue,
        status=run.status,
        data=run.data,
        attempts=run.attempt,
        max_attempts=run.max_attempts,
        steps=list(run.steps) if steps else [],
        pending=[p.step for p in run.pending.values()] if steps else [],
        created_at=run.created_at,
        updated_at=run.updated_at,
        run_at=run.run_at,
        result=run.result,
        error=run.error,
        priority=run.priority,
        key=run.key,
        parent=run.parent,
        finished_at=run.finished_at,
        endpoint=run.endpoint,
        history=[*run.history, *_running(run)] if steps else [],
        forked_from=run.forked_from,
        flow=run.flow,
    )


def _times_of(outcome: Outcome) -> list[tuple[str, datetime | None, timedelta | None]]:
    """(what, until, delay) of every time ``outcome`` makes the store compute."""
    if isinstance(outcome, Failed):
        return [("the retry", None, outcome.retry_after)]
    if not isinstance(outcome, Suspend):
        return []
    times = [(f"step {p.name!r}", p.until, p.delay) for p in outcome.pending]
    children = [p.child for p in outcome.pending if p.child is not None]
    times += [(f"the run of {c.event!r}", c.run_at, c.delay) for c in children]
    return times


def _check_times(
    now: datetime,
    sent: Sequence[OutgoingEvent],
    times: list[tuple[str, datetime | None, timedelta | None]],
) -> None:
    """Refuse a time past what a datetime holds, as PostgreSQL refuses one past its range."""
    times = times + [
        (f"the run of {e.name!r}", e.run.run_at, e.run.delay) for e in sent if e.run is not None
    ]
    for what, until, delay in times:
        if until is None and delay is not None:
            try:
                now + delay
            except OverflowError:
                raise StoreInputError(f"{what}: now + {delay} is out of range") from None


def _wait_matches(step: PendingStep, name: str, data: dict[str, Any]) -> bool:
    if step.kind != "wait" or step.event != name:
        return False
    # An event lacking the field matches nothing, even a run whose own value is None.
    if step.match_field is None:
        return True
    return step.match_field in data and data[step.match_field] == step.match_value


def _memo_record(step: StepRecord) -> StepRecord:
    """A step as the engine replays it: timings and attempts are for readers, not replay."""
    return _copy_struct(msgspec.structs.replace(step, started_at=None, duration=None, attempt=None))


def _copy_struct(value: _S) -> _S:
    return msgspec.json.decode(msgspec.json.encode(value), type=type(value))


def _running(run: _Run) -> list[AttemptInfo]:
    """The attempt in progress, as history shows it (the store records it when it ends)."""
    if run.status != "running" or run.attempt_started_at is None:
        return []
    running = AttemptInfo(
        number=run.attempt,
        started_at=run.attempt_started_at,
        ended_at=None,
        owner=run.owner,
        outcome="running",
        replayed=run.replayed,
        executed=run.executed,
    )
    return [running]
