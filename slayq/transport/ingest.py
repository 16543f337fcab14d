"""The ingest RPC's messages: what an app without database credentials asks the server.

Every request is a signed POST (the same headers as deliveries, over the exact body) to
``<server>/ingest/<method>``; every answer is JSON. Errors answer ``{"error": reason}``
with 400 (a bad body, or a value refused: an ``InputError``), 401 (signature), 404 (no
such run), 408 (the body stalled), 413 (too large) or 503 (the database is unavailable).
``send-events`` carries each event's data once, as deliveries' answers do
(``slayq.transport.wire``).
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any, TypeVar

import msgspec

from slayq.model import (
    NewRun,
    OutgoingEvent,
    QueueInfo,
    RunFilter,
    RunId,
    Schedule,
    ScheduleInfo,
    WaitInfo,
    WorkerInfo,
)
from slayq.transport.wire import events_from_wire, events_to_wire

T = TypeVar("T")

SEND_EVENTS = "send-events"
GET_RUN = "get-run"
CANCEL_RUN = "cancel-run"
SET_SCHEDULES = "set-schedules"
# -- operations: runs --
LIST_RUNS = "list-runs"
RETRY_RUN = "retry-run"
FORK_RUN = "fork-run"
CANCEL_RUNS = "cancel-runs"
RETRY_RUNS = "retry-runs"
LIST_AUDIT = "list-audit"
RUN_STATS = "run-stats"


class SendEvents(msgspec.Struct, frozen=True):
    events: list[OutgoingEvent]


class SentEvents(msgspec.Struct, frozen=True):
    run_ids: list[RunId | None]


class RunRef(msgspec.Struct, frozen=True):
    run_id: RunId


class Cancelled(msgspec.Struct, frozen=True):
    cancelled: bool


class SetSchedules(msgspec.Struct, frozen=True):
    """An app's cron schedules, and every event it runs (see ``Store.set_schedules``)."""

    schedules: list[Schedule]
    app: str
    events: list[str]


# -- operations: runs --


class ListRuns(msgspec.Struct, frozen=True):
    filter: RunFilter
    limit: int
    cursor: str | None = None


class RunAction(msgspec.Struct, frozen=True):
    """An action on one run (retry; cancel), audited as done by ``actor``."""

    run_id: RunId
    actor: str = "api"


class ForkRun(msgspec.Struct, frozen=True):
    run: NewRun
    source: RunId
    before_step: str | None
    actor: str


class BulkAction(msgspec.Struct, frozen=True):
    filter: RunFilter
    dry_run: bool
    actor: str


class Counted(msgspec.Struct, frozen=True):
    count: int


class ListAudit(msgspec.Struct, frozen=True):
    limit: int = 100


class RunStatsRequest(msgspec.Struct, frozen=True):
    """``Store.run_stats``: the window, back from the server's database clock."""

    window: timedelta


# -- operations: queues --

LIST_WAITS = "list-waits"
PAUSE_QUEUE = "pause-queue"
RESUME_QUEUE = "resume-queue"
LIST_QUEUES = "list-queues"
LIST_SCHEDULES = "list-schedules"
LIST_WORKERS = "list-workers"


class ListWaits(msgspec.Struct, frozen=True):
    event: str | None = None
    limit: int = 100


class Waits(msgspec.Struct, frozen=True):
    waits: list[WaitInfo]


class QueueAction(msgspec.Struct, frozen=True):
    """Pause or resume queue ``name``, on behalf of ``actor``."""

    name: str
    actor: str


class Changed(msgspec.Struct, frozen=True):
    changed: bool


class Nothing(msgspec.Struct, frozen=True):
    """The request of a listing that takes no arguments."""


class Queues(msgspec.Struct, frozen=True):
    queues: list[QueueInfo]


class Schedules(msgspec.Struct, frozen=True):
    schedules: list[ScheduleInfo]


class Workers(msgspec.Struct, frozen=True):
    workers: list[WorkerInfo]


class Failure(msgspec.Struct, frozen=True):
    error: str


def encode_request(request: msgspec.Struct) -> bytes:
    """The JSON body of an ingest request; a ``SendEvents`` carries event data once."""
    if isinstance(request, SendEvents):
        return msgspec.json.encode({"events": events_to_wire(request.events)})
    return msgspec.json.encode(request)


def decode_request(body: bytes, type_: type[T]) -> T:
    """The request in ``body``; raises msgspec's errors (and RecursionError) as they come."""
    wire: Any = msgspec.json.decode(body)
    if type_ is SendEvents and isinstance(wire, dict):
        events_from_wire(wire.get("events"))
    return msgspec.convert(wire, type_)
