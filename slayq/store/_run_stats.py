"""``run_stats``, the same way in every store: its window checked, its minutes counted."""

from __future__ import annotations

from datetime import timedelta
from typing import TYPE_CHECKING

from slayq.errors import InputError
from slayq.model import MinuteStats

if TYPE_CHECKING:
    from collections.abc import Iterable
    from datetime import datetime

MAX_WINDOW = timedelta(days=1)


def checked_window(window: object) -> timedelta:
    """``window`` if it is a ``timedelta`` from 1 minute to 1 day; ``InputError`` naming it
    otherwise (a longer window would read more runs than an overview should)."""
    if not isinstance(window, timedelta) or not timedelta(minutes=1) <= window <= MAX_WINDOW:
        raise InputError(
            f"run_stats: window must be a timedelta from 1 minute to 1 day, got {window!r}"
        )
    return window


def minute_of(at: datetime) -> datetime:
    """The whole minute ``at`` falls in (PostgreSQL's ``date_trunc('minute', at)``)."""
    return at.replace(second=0, microsecond=0)


def count_minutes(counts: Iterable[tuple[datetime, str, int]]) -> list[MinuteStats]:
    """Minute entries, oldest first, from (time, what, how many) triples: ``what`` is
    ``started`` or a finished status; each time counts in the minute it falls in."""
    minutes: dict[datetime, dict[str, int]] = {}
    for at, what, n in counts:
        minute = minutes.setdefault(minute_of(at), {})
        minute[what] = minute.get(what, 0) + n
    return [MinuteStats(at=at, **minutes[at]) for at in sorted(minutes)]
