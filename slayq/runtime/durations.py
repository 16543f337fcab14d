"""Durations and points in time as users write them.

Durations follow the JavaScript ``ms`` package that Slay Q users know ("5m", "2 hours",
"3 years", "500ms", "1.5h"), and also accept a ``timedelta`` or a number of seconds.
Unlike ``ms``, a bare number in a string is refused: "500" could mean seconds or
milliseconds, and guessing wrong delays a run by a factor of a thousand.
"""

from __future__ import annotations

import math
import re
from datetime import UTC, datetime, timedelta

from slayq.errors import DurationError

_UNIT_SECONDS: dict[str, float] = {}
for _names, _seconds in (
    (("ms", "msec", "msecs", "millisecond", "milliseconds"), 0.001),
    (("s", "sec", "secs", "second", "seconds"), 1.0),
    (("m", "min", "mins", "minute", "minutes"), 60.0),
    (("h", "hr", "hrs", "hour", "hours"), 3600.0),
    (("d", "day", "days"), 86400.0),
    (("w", "week", "weeks"), 7 * 86400.0),
    # ms counts a year as 365.25 days and a month as a twelfth of that.
    (("mo", "month", "months"), 365.25 * 86400.0 / 12),
    (("y", "yr", "yrs", "year", "years"), 365.25 * 86400.0),
):
    for _name in _names:
        _UNIT_SECONDS[_name] = _seconds

_DURATION = re.compile(r"^\s*(-?\d+(?:\.\d+)?|-?\.\d+)\s*([a-z]+)\s*$", re.IGNORECASE)

Duration = str | int | float | timedelta

# The longest duration accepted. Every store must be able to hold now + it: Python's
# datetime ends in 9999 (PostgreSQL's timestamps in 294276), and no run sleeps longer.
MAX_DURATION = timedelta(days=365_250)


def parse_duration(value: Duration, *, what: str = "duration") -> timedelta:
    """Turn "5m", "2 hours", 30 (seconds) or a timedelta into a non-negative timedelta."""
    if isinstance(value, timedelta):
        delta = value
    elif isinstance(value, bool):
        raise DurationError(
            f"{what} must be a string like '5m', seconds or a timedelta, got {value!r}"
        )
    elif isinstance(value, int | float):
        if not math.isfinite(value):
            raise DurationError(f"{what} must be a finite number of seconds, got {value!r}")
        delta = _timedelta_of(value, value, what)
    elif isinstance(value, str):
        match = _DURATION.match(value)
        if match is None:
            raise DurationError(
                f"{what} {value!r} is not a duration: write a number and a unit, "
                "like '500ms', '5m', '2 hours' or '3 years'"
            )
        number, unit = match.groups()
        seconds = _UNIT_SECONDS.get(unit.lower())
        if seconds is None:
            raise DurationError(
                f"{what} {value!r} has an unknown unit {unit!r}: use ms, s, m, h, d, w, mo or y "
                "(or their long forms, like 'minutes')"
            )
        delta = _timedelta_of(float(number) * seconds, value, what)
    else:
        raise DurationError(
            f"{what} must be a string like '5m', seconds or a timedelta, got {type(value).__name__}"
        )
    if delta < timedelta(0):
        raise DurationError(f"{what} {value!r} is negative")
    if delta > MAX_DURATION:
        raise DurationError(
            f"{what} {value!r} is longer than 1000 years, the longest duration slayq stores"
        )
    return delta


def parse_timeout(value: Duration | None, *, what: str) -> timedelta | None:
    """A timeout: ``None`` (no limit) or a duration above zero."""
    if value is None:
        return None
    delta = parse_duration(value, what=what)
    if delta <= timedelta(0):
        raise DurationError(f"{what} {value!r} must be more than zero (None means no limit)")
    return delta


def describe_duration(delta: timedelta) -> str:
    """``delta`` the way users write durations: "50ms", "1.5s", "300s"."""
    seconds = delta.total_seconds()
    return f"{seconds * 1000:g}ms" if seconds < 1 else f"{seconds:g}s"


def short_duration(delta: timedelta | None) -> str:
    """A duration for people to read at a glance (the CLI's tables, the dashboard):
    ``120ms``, ``4.2s``, ``5m``, ``3m12s``, ``2h05m``, ``1d``, ``3d4h``; empty for None."""
    if delta is None:
        return ""
    seconds = delta.total_seconds()
    if seconds < 1:
        return f"{seconds * 1000:.0f}ms"
    if seconds < 60:
        return f"{seconds:.1f}s".replace(".0s", "s")
    whole = int(seconds)
    for unit, size, small, small_size in (
        ("d", 86400, "h", 3600),
        ("h", 3600, "m", 60),
        ("m", 60, "s", 1),
    ):
        if whole >= size:
            rest = whole % size // small_size
            width = 1 if unit == "d" else 2
            return f"{whole // size}{unit}" + (f"{rest:0{width}d}{small}" if rest else "")
    raise AssertionError("unreachable: seconds >= 60")


def _timedelta_of(seconds: float, given: object, what: str) -> timedelta:
    try:
        return timedelta(seconds=seconds)
    except OverflowError:
        raise DurationError(f"{what} {given!r} is too long (more than 999,999,999 days)") from None


def parse_instant(value: datetime | str, *, what: str = "time") -> datetime:
    """Turn an aware datetime or an ISO-8601 string with an offset into an aware UTC datetime."""
    if isinstance(value, str):
        try:
            parsed = datetime.fromisoformat(value)
        except ValueError:
            raise DurationError(
                f"{what} {value!r} is not an ISO-8601 time, like '2025-01-01T00:00:00Z'"
            ) from None
    elif isinstance(value, datetime):
        parsed = value
    else:
        raise DurationError(f"{what} must be a datetime or an ISO-8601 string, got {value!r}")
    if parsed.tzinfo is None or parsed.utcoffset() is None:
        raise DurationError(
            f"{what} {value!r} has no timezone: give an offset ('2025-01-01T00:00:00+00:00' or "
            "'...Z') or an aware datetime, so it means the same on every machine"
        )
    try:
        return parsed.astimezone(UTC)
    except OverflowError:
        raise DurationError(
            f"{what} {value!r} is out of range: in UTC it falls after 9999-12-31"
        ) from None
