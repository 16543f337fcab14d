"""Option callbacks that check what the operator typed before anything is connected.

A bad value is a usage error (exit status 2) whose message names the option and the
value, and nothing is changed. (Callbacks rather than ``click.ParamType`` subclasses:
their typing differs between click releases.)
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, get_args

import click
import msgspec

from slayq.errors import DurationError
from slayq.model import RunStatus
from slayq.runtime.durations import parse_duration, parse_instant

if TYPE_CHECKING:
    from collections.abc import Sequence
    from datetime import datetime, timedelta

STATUSES: tuple[str, ...] = get_args(RunStatus)
STATUS = click.Choice(STATUSES)


def duration(ctx: click.Context, param: click.Parameter, value: str | None) -> timedelta | None:
    """``5m``, ``2 hours``, ``30d``: a ``timedelta``."""
    if value is None:
        return None
    try:
        return parse_duration(value, what=_name(param))
    except DurationError as exc:
        raise click.BadParameter(str(exc), ctx, param) from None


def time_bound(
    ctx: click.Context, param: click.Parameter, value: str | None
) -> timedelta | datetime | None:
    """A duration back from now (``1h``: an hour ago) or an ISO 8601 time with a zone."""
    if value is None:
        return None
    try:
        return parse_duration(value, what=_name(param))
    except DurationError:
        pass
    try:
        return parse_instant(value, what=_name(param))
    except DurationError:
        raise click.BadParameter(
            f"{value!r} is neither a duration back from now ('1h', '30m', '7d') nor an "
            "ISO 8601 time with a zone ('2025-01-01T00:00:00Z')",
            ctx,
            param,
        ) from None


def json_value(ctx: click.Context, param: click.Parameter, value: str | None) -> Any:
    """A JSON document: ``'{"file_id": "f1"}'``."""
    if value is None:
        return None
    try:
        return msgspec.json.decode(value)
    except msgspec.DecodeError as exc:
        raise click.BadParameter(f"{value!r} is not JSON ({exc})", ctx, param) from None


def data_filter(
    ctx: click.Context, param: click.Parameter, values: Sequence[str]
) -> dict[str, Any] | None:
    """``KEY=JSON`` pairs: the mapping the run's data must contain (None if none given).

    A dotted key, ``customer.id=5``, reaches into nested objects.
    """
    if not values:
        return None
    merged: dict[str, Any] = {}
    for pair in values:
        key, sep, text = pair.partition("=")
        path = key.split(".")
        if not sep or not all(path):
            raise click.BadParameter(
                f"{pair!r} is not KEY=JSON, like customer='\"acme\"' or total=5", ctx, param
            )
        try:
            value = msgspec.json.decode(text)
        except msgspec.DecodeError:
            raise click.BadParameter(
                f"{pair!r}: {text!r} is not JSON; quote a string as JSON: {key}='\"{text}\"'",
                ctx,
                param,
            ) from None
        node = merged
        for part in path[:-1]:
            child = node.get(part)
            if not isinstance(child, dict):
                child = node[part] = {}
            node = child
        node[path[-1]] = value
    return merged


def _name(param: click.Parameter) -> str:
    return max(param.opts, key=len) if param.opts else "value"
