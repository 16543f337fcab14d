"""Model values to statement parameters and back.

JSON goes to the database as the text msgspec encodes, kept as given in ``json`` columns,
and comes back as that same text, which msgspec decodes straight into the model's
Structs, timestamps included: key order, float spellings and big integers survive.
"""

from __future__ import annotations

import uuid
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

import msgspec

from slayq.model import CancelRule, Flow, NewRun, PendingStep, RunId, StepRecord

if TYPE_CHECKING:
    from collections.abc import Sequence

_encoder = msgspec.json.Encoder()
_MICROSECOND = timedelta(microseconds=1)
_memo_decoder = msgspec.json.Decoder(list[StepRecord])


def dump(value: Any) -> str:
    return _encoder.encode(value).decode()


def dump_or_none(value: Any) -> str | None:
    return None if value is None else dump(value)


def load_memo(text: str | None) -> list[StepRecord]:
    return [] if text is None else _memo_decoder.decode(text)


def valid_id(run_id: str) -> bool:
    """Run ids are UUIDs; anything else names no run (rather than failing a cast)."""
    try:
        uuid.UUID(run_id)
    except (ValueError, TypeError, AttributeError):
        return False
    return True


class _RunRow(msgspec.Struct, kw_only=True, omit_defaults=True):
    """One row of INSERT_RUNS: a NewRun, flattened, with its place in the batch. Fields
    at their defaults are left out (``json_to_recordset`` reads a missing key as null):
    a plain run's row is a third as long, to encode and for Postgres to parse."""

    idx: int
    cursor: int | None = None
    id: str
    event: str
    data: dict[str, Any]
    queue: str
    priority: int
    max_attempts: int
    key: str | None = None
    delay_us: int | None = None  # ISO 8601 durations cannot be negative in Postgres
    run_at: datetime | None = None
    parent_id: str | None = None
    parent_step: str | None = None
    cancel_on: list[CancelRule] = []  # an empty list and null both store null
    endpoint: str | None = None
    may_wait: bool
    trace: dict[str, str] | None = None
    flow: Flow | None = None


def _delay_us(run: NewRun) -> int | None:
    # In microseconds: ISO 8601 durations cannot be negative in Postgres.
    return None if run.delay is None else run.delay // _MICROSECOND


def run_rows(
    runs: Sequence[tuple[int, NewRun, int | None]],
    *,
    first_seq: int | None = None,
    guard: tuple[RunId, int] | None = None,
) -> dict[str, Any]:
    """Parameters of INSERT_RUNS for (index, run, event cursor or None) triples: the
    rows go as one JSON document, which Postgres parses far faster than 14 arrays."""
    rows = [
        _RunRow(
            idx=idx,
            cursor=cursor,
            id=run.id,
            event=run.event,
            data=run.data,
            queue=run.queue,
            priority=run.priority,
            max_attempts=run.max_attempts,
            key=run.key,
            delay_us=_delay_us(run),
            run_at=run.run_at,
            parent_id=run.parent.run_id if run.parent else None,
            parent_step=run.parent.step if run.parent else None,
            cancel_on=run.cancel_on,
            endpoint=run.endpoint,
            may_wait=run.may_wait,
            trace=run.trace,
            flow=run.flow,
        )
        for idx, run, cursor in runs
    ]
    return {
        "rows": dump(rows),
        "first_seq": first_seq,
        "guard_id": guard[0] if guard else None,
        "token": guard[1] if guard else None,
    }


# What msgspec writes for a NUL character in a string, which PostgreSQL cannot read back
# as text. A backslash followed by "u0000" is written with the same six characters after
# one more backslash: such a run takes the batch statement too, which is only slower.
NUL_ESCAPE = "\\u0000"


def run_params(run: NewRun) -> dict[str, Any] | None:
    """Parameters of INSERT_QUIET_RUN for a run with no key, cancel rules or parent:
    each column as ``run_rows`` puts it in its row. None if a JSON value may hold a NUL
    (INSERT_QUIET_RUN would keep it; the batch statement refuses it)."""
    values = {
        "data": dump(run.data),
        "trace": dump_or_none(run.trace),
        "flow": dump_or_none(run.flow),
    }
    if any(NUL_ESCAPE in text for text in values.values() if text is not None):
        return None
    return values | {
        "id": run.id,
        "event": run.event,
        "queue": run.queue,
        "priority": run.priority,
        "max_attempts": run.max_attempts,
        "delay_us": _delay_us(run),
        "run_at": run.run_at,
        "endpoint": run.endpoint,
        "may_wait": run.may_wait,
    }


def step_rows(run_id: RunId, token: int, steps: Sequence[StepRecord]) -> dict[str, Any]:
    return {
        "id": run_id,
        "token": token,
        "names": [s.name for s in steps],
        "kinds": [s.kind for s in steps],
        "outputs": [dump(s.output) for s in steps],
        "errors": [dump_or_none(s.error) for s in steps],
        "started_ats": [s.started_at for s in steps],
        "durations": [s.duration for s in steps],
    }


def pending_rows(run_id: RunId, token: int, pending: Sequence[PendingStep]) -> dict[str, Any]:
    return {
        "id": run_id,
        "token": token,
        "names": [p.name for p in pending],
        "kinds": [p.kind for p in pending],
        "events": [p.event for p in pending],
        "fields": [p.match_field for p in pending],
        # a wait on a field compares to a JSON value, null included
        "values": [dump(p.match_value) if p.match_field is not None else None for p in pending],
        "untils": [p.until for p in pending],
        "delays": [p.delay for p in pending],
        "specs": [dump(p) for p in pending],
    }


def due_now(run: NewRun, now: datetime) -> bool:
    """Whether a new run is due at once (its queue's listeners are told)."""
    if run.run_at is not None:
        return run.run_at <= now
    return run.delay is None or run.delay <= timedelta(0)
