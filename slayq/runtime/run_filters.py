"""The filters of ``list_runs`` and the bulk actions: checked, resolved, matched in memory.

The client turns what a user wrote (a status or a list, "1h" or a datetime) into a
``RunFilter``; every store checks it again (an ``HttpStore`` call arrives from anywhere)
and reads its page cursor with ``decode_cursor``.
"""

from __future__ import annotations

import base64
import binascii
import uuid
from collections.abc import Mapping
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any, get_args

import msgspec

from slayq.errors import DurationError, InputError
from slayq.model import RunFilter, RunId, RunStatus
from slayq.runtime.durations import Duration, parse_duration, parse_instant
from slayq.runtime.ids import first_id_at

if TYPE_CHECKING:
    from collections.abc import Iterable

STATUSES: tuple[str, ...] = get_args(RunStatus)
MAX_LIMIT = 1000
# Bulk actions change runs this many at a time, each batch in a transaction of its own.
BULK_BATCH = 500


def run_filter(
    *,
    status: str | Iterable[str] | None = None,
    event: str | None = None,
    queue: str | None = None,
    since: datetime | Duration | None = None,
    until: datetime | Duration | None = None,
    data: Mapping[str, Any] | None = None,
    parent: str | None = None,
) -> RunFilter:
    """A ``RunFilter`` from user arguments; ``InputError`` naming the bad one."""
    statuses = None
    if status is not None:
        statuses = [status] if isinstance(status, str) else list(status)
    since_at, since_ago = _bound(since, "since")
    until_at, until_ago = _bound(until, "until")
    resolved = RunFilter(
        status=statuses,  # type: ignore[arg-type]  # checked just below
        event=event,
        queue=queue,
        since=since_at,
        until=until_at,
        since_ago=since_ago,
        until_ago=until_ago,
        data=dict(data) if isinstance(data, Mapping) else data,
        parent=RunId(parent) if isinstance(parent, str) else parent,
    )
    check_filter(resolved)
    return resolved


def _bound(
    value: datetime | Duration | None, what: str
) -> tuple[datetime | None, timedelta | None]:
    """A point in time, or a duration meaning "that long ago"."""
    if value is None:
        return None, None
    if isinstance(value, datetime):
        return parse_instant(value, what=what), None
    if isinstance(value, str):
        try:
            return None, parse_duration(value, what=what)
        except DurationError:
            try:
                return parse_instant(value, what=what), None
            except DurationError:
                raise DurationError(
                    f"{what} {value!r} is neither a duration ('1h', '30m', '7 days') nor an "
                    "ISO 8601 time with a zone ('2025-01-01T00:00:00Z')"
                ) from None
    return None, parse_duration(value, what=what)


def check_filter(f: RunFilter) -> None:
    """Raise ``InputError`` naming what is wrong with a filter (changing nothing)."""
    for status in f.status or ():
        if status not in STATUSES:
            raise InputError(f"status {status!r} is not a run status: use one of {list(STATUSES)}")
    if f.status is not None and not f.status:
        raise InputError("status: give at least one status, or None for any")
    for name in ("event", "queue"):
        value = getattr(f, name)
        if value is not None and (not isinstance(value, str) or not value):
            raise InputError(f"{name} must be a non-empty string, got {value!r}")
    if f.data is not None and not isinstance(f.data, dict):
        raise InputError(f"data must be a mapping the run's data contains, got {f.data!r}")
    if f.parent is not None and not _is_uuid(f.parent):
        raise InputError(f"parent {f.parent!r} is not a run id")
    for name in ("since_ago", "until_ago"):
        ago = getattr(f, name)
        if ago is not None and ago < timedelta(0):
            raise InputError(f"{name} must not be negative, got {ago}")
    for name in ("since", "until"):
        at = getattr(f, name)
        if at is not None and at.tzinfo is None:
            raise InputError(f"{name} must be an aware datetime, got {at!r}")


def describe_filter(f: RunFilter) -> str:
    """A bulk action's target in the audit log: the filter's given fields, as JSON."""
    given = {k: v for k, v in msgspec.to_builtins(f).items() if v is not None}
    return msgspec.json.encode(given).decode()


def check_actor(actor: object) -> None:
    """Who an action is audited as done by: a non-empty string."""
    if not isinstance(actor, str) or not actor:
        raise InputError(f"actor must be a non-empty string, got {actor!r}")


def check_limit(limit: object, *, what: str = "limit") -> int:
    if isinstance(limit, bool) or not isinstance(limit, int) or not 1 <= limit <= MAX_LIMIT:
        raise InputError(f"{what} must be an integer from 1 to {MAX_LIMIT}, got {limit!r}")
    return limit


# Cursors name the last run of a page; a version prefix lets a later format refuse them.
_CURSOR_PREFIX = "r1:"


def encode_cursor(run_id: str) -> str:
    """An opaque cursor: the next page lists the runs whose id sorts before ``run_id``."""
    return base64.urlsafe_b64encode(f"{_CURSOR_PREFIX}{run_id}".encode()).decode().rstrip("=")


def decode_cursor(cursor: str) -> RunId:
    """The run id a cursor names; ``InputError`` for anything else."""
    bad = InputError(f"cursor {cursor!r} is not one that list_runs returned")
    if not isinstance(cursor, str):
        raise bad
    try:
        text = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)).decode()
    except (ValueError, binascii.Error, UnicodeDecodeError):
        raise bad from None
    run_id = text.removeprefix(_CURSOR_PREFIX)
    if run_id == text or not _is_uuid(run_id) or run_id != str(uuid.UUID(run_id)):
        raise bad
    return RunId(run_id)


# How far a run's id time may be from its created_at and still be found by a time window:
# the clocks of the process that made the id, of the database and of the process listing
# may disagree, and an id is made a little before its run is stored (by a step.send_event,
# up to the end of the attempt that sent it).
ID_CLOCK_MARGIN = timedelta(minutes=5)


def id_window(
    low: datetime | None, high: datetime | None, *, margin: timedelta = ID_CLOCK_MARGIN
) -> tuple[RunId | None, RunId | None]:
    """Run ids bounding a ``created_at`` window [low, high): ids are UUIDv7, their first
    48 bits the milliseconds of the clock that made them, so the runs created in the
    window have ids in [first id of low - margin, first id of the millisecond after
    high + margin). A store adds these to its exact created_at filter so that a window
    is a range of the primary key; a run whose id time is further than ``margin`` from
    its created_at is not found by a window."""
    return _first_id(low, -margin), _first_id(high, margin + timedelta(milliseconds=1))


def _first_id(at: datetime | None, shift: timedelta) -> RunId | None:
    if at is None:
        return None
    try:
        return first_id_at(at + shift)
    except OverflowError:  # a bound at the end of datetime's range bounds nothing
        return None


def window(f: RunFilter, now: datetime) -> tuple[datetime | None, datetime | None]:
    """The filter's created_at bounds, durations resolved against ``now``."""
    lows = [t for t in (f.since, now - f.since_ago if f.since_ago else None) if t is not None]
    highs = [t for t in (f.until, now - f.until_ago if f.until_ago else None) if t is not None]
    return max(lows, default=None), min(highs, default=None)


def contains(value: Any, wanted: Any) -> bool:
    """JSON containment as PostgreSQL's ``jsonb @>``: objects by their keys (recursively),
    arrays by each wanted element being contained in some element, scalars by equality
    of the same JSON type."""
    if isinstance(wanted, dict):
        return isinstance(value, dict) and all(
            k in value and contains(value[k], v) for k, v in wanted.items()
        )
    if isinstance(wanted, list):
        if not isinstance(value, list):
            return False
        return all(any(contains(item, w) for item in value) for w in wanted)
    return _same_scalar(value, wanted)


def _same_scalar(a: Any, b: Any) -> bool:
    if isinstance(a, dict | list) or isinstance(b, dict | list):
        return False
    if isinstance(a, bool) or isinstance(b, bool) or a is None or b is None:
        return a is b
    if isinstance(a, int | float) and isinstance(b, int | float):
        return a == b
    return type(a) is type(b) and bool(a == b)


def _is_uuid(value: object) -> bool:
    try:
        uuid.UUID(str(value))
    except ValueError:
        return False
    return isinstance(value, str)
