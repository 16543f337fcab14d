"""The ingest RPC's messages: what an app without database credentials asks the server.

Every request is a signed POST (the same headers as deliveries, over the exact body) to
``<server>/ingest/<method>``; every answer is JSON. Errors answer ``{"error": reason}``
with 400 (a bad body, or a value refused such as an invalid cron), 401 (signature), 404
(no such run), 413 (too large) or 503 (the database is unavailable).
"""

from __future__ import annotations

import msgspec

from slayq.model import OutgoingEvent, RunId, Schedule

SEND_EVENTS = "send-events"
GET_RUN = "get-run"
CANCEL_RUN = "cancel-run"
SET_SCHEDULES = "set-schedules"


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


class Failure(msgspec.Struct, frozen=True):
    error: str
