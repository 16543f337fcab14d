"""Turning a user's ``send_event`` arguments into a resolved ``OutgoingEvent``."""

from __future__ import annotations

from typing import TYPE_CHECKING

from slayq.errors import InputError
from slayq.runtime.durations import Duration, parse_duration, parse_instant
from slayq.runtime.names import name_problem

if TYPE_CHECKING:
    from datetime import datetime

    from slayq.model import OutgoingEvent
    from slayq.runtime.registry import Registry


def outgoing_event(
    registry: Registry,
    event: str,
    data: object,
    *,
    delay: Duration | None = None,
    run_at: datetime | str | None = None,
    key: str | None = None,
    traced: bool = True,
) -> OutgoingEvent:
    if delay is not None and run_at is not None:
        raise InputError(f"send_event({event!r}): give delay or run_at, not both")
    if key is not None and (not isinstance(key, str) or not key):
        raise InputError(f"send_event({event!r}): key must be a non-empty string, got {key!r}")
    problem = name_problem(key) if key is not None else None
    if problem is not None:
        raise InputError(f"send_event({event!r}): key {problem}")
    return registry.outgoing(
        event,
        {} if data is None else data,
        key=key,
        traced=traced,
        delay=parse_duration(delay, what=f"send_event({event!r}) delay")
        if delay is not None
        else None,
        run_at=parse_instant(run_at, what=f"send_event({event!r}) run_at")
        if run_at is not None
        else None,
    )
