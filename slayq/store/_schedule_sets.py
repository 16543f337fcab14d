"""Checking an app's schedule registration, the same way in every store."""

from __future__ import annotations

from typing import TYPE_CHECKING

from slayq.errors import InputError
from slayq.runtime.cron import CronSpec

if TYPE_CHECKING:
    from collections.abc import Collection, Sequence

    from slayq.model import Schedule


def checked_schedules(
    schedules: Sequence[Schedule], *, app: str, events: Collection[str]
) -> dict[str, tuple[Schedule, CronSpec]]:
    """Each event's schedule (a repeated event: the last one wins) with its parsed cron.

    Raises ``InputError`` before anything is stored: an app must be named, may only
    schedule events it runs, and every cron must be valid.
    """
    if not isinstance(app, str) or not app.strip():
        raise InputError(f"set_schedules: app must be a non-empty name, got {app!r}")
    runs = set(events)
    latest = {s.event: s for s in schedules}
    foreign = sorted(set(latest) - runs)
    if foreign:
        raise InputError(
            f"set_schedules: app {app!r} schedules {foreign} but does not list them among "
            "the events it runs"
        )
    return {event: (s, CronSpec(s.cron)) for event, s in latest.items()}
