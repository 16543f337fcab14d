"""The run filters that ``runs list`` and the bulk ``retry``/``cancel`` share.

They are the keyword arguments of ``Client.list_runs``, ``cancel_runs`` and
``retry_runs``; the decorated command receives them as one ``filters`` mapping holding
only the options given.
"""

from __future__ import annotations

import functools
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

import click

from slayq.cli.output import json_text, span, when
from slayq.cli.params import STATUS, data_filter, time_bound

if TYPE_CHECKING:
    from collections.abc import Callable

_OPTIONS = [
    click.option(
        "--status",
        type=STATUS,
        multiple=True,
        help="Runs in this status (repeat for several).",
    ),
    click.option("--event", help="Runs of this event (function)."),
    click.option("--queue", help="Runs in this queue."),
    click.option(
        "--since",
        metavar="DURATION|TIME",
        callback=time_bound,
        help="Created at or after: a duration back from now (1h) or an ISO time.",
    ),
    click.option(
        "--until",
        metavar="DURATION|TIME",
        callback=time_bound,
        help="Created before: a duration back from now (1h) or an ISO time.",
    ),
    click.option(
        "--data",
        metavar="KEY=JSON",
        callback=data_filter,
        multiple=True,
        help="KEY=JSON the run's event data must hold, like customer='\"acme\"' "
        "(dotted keys reach into objects; repeat for several).",
    ),
    click.option("--parent", help="Runs invoked by this run."),
]


def filter_options(command: Callable[..., None]) -> Callable[..., None]:
    """Add the filter options to ``command``, passed to it as ``filters``."""

    @functools.wraps(command)
    def with_filters(
        *,
        status: tuple[str, ...],
        event: str | None,
        queue: str | None,
        since: Any,
        until: Any,
        data: dict[str, Any] | None,
        parent: str | None,
        **kwargs: Any,
    ) -> None:
        given = {
            "status": list(status) or None,
            "event": event,
            "queue": queue,
            "since": since,
            "until": until,
            "data": data,
            "parent": parent,
        }
        command(filters={k: v for k, v in given.items() if v is not None}, **kwargs)

    decorated: Callable[..., None] = with_filters
    for option in reversed(_OPTIONS):
        decorated = option(decorated)
    return decorated


def describe(filters: dict[str, Any]) -> str:
    """The filters as the operator gave them, for prompts: ``status=failed event=x``."""
    if not filters:
        return "(no filter: every run)"
    return " ".join(f"{name}={_shown(value)}" for name, value in filters.items())


def _shown(value: Any) -> str:
    if isinstance(value, list):
        return ",".join(value)
    if isinstance(value, timedelta):
        return f"{span(value)} ago"
    if isinstance(value, datetime):
        return when(value)
    return value if isinstance(value, str) else json_text(value)
