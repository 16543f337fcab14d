"""What the CLI prints: plain aligned tables and short times for people, JSON for machines.

Results go to stdout (one JSON document with ``--json``, nothing else); progress,
prompts and errors go to stderr, so a pipe never sees them.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

import click
import msgspec

from slayq.runtime.durations import short_duration

if TYPE_CHECKING:
    from collections.abc import Iterable, Sequence

    from slayq.model import ErrorInfo

_CELL = 60  # a table cell longer than this is cut, so one run stays on one line


span = short_duration  # the tables' name for it


def emit_json(value: Any) -> None:
    """Write ``value`` (model structs, lists, dicts) as one JSON document on stdout."""
    click.echo(msgspec.json.encode(value).decode())


def progress(message: str) -> None:
    """A line for the operator on stderr (never part of the result)."""
    click.echo(message, err=True)


def table(
    headers: Sequence[str], rows: Iterable[Sequence[str]], *, empty: str, indent: str = ""
) -> None:
    """Print rows under their headers in columns two spaces apart; ``empty`` if none."""
    lines = [[_cell(value) for value in row] for row in rows]
    if not lines:
        click.echo(indent + empty)
        return
    widths = [max(len(h), *(len(line[i]) for line in lines)) for i, h in enumerate(headers)]
    for line in [list(headers), *lines]:
        padded = [value.ljust(width) for value, width in zip(line, widths, strict=True)]
        click.echo(indent + "  ".join(padded).rstrip())


def fields(pairs: Iterable[tuple[str, str]]) -> None:
    """Print ``name  value`` lines with the values aligned; multi-line values indented."""
    shown = [(name, value) for name, value in pairs if value]
    width = max((len(name) for name, _ in shown), default=0)
    for name, value in shown:
        first, *rest = value.splitlines() or [""]
        click.echo(f"{name.ljust(width)}  {first}")
        for line in rest:
            click.echo(f"{' ' * width}  {line}")


def _cell(value: str) -> str:
    value = " ".join(value.split())  # newlines and tabs would break the columns
    return value if len(value) <= _CELL else value[: _CELL - 1] + "…"


def when(at: datetime | None) -> str:
    """A time in UTC, to the second: ``2025-03-01T12:00:05Z``; empty for None."""
    if at is None:
        return ""
    return at.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def ago(at: datetime | None, now: datetime | None = None) -> str:
    """How long ago ``at`` was (``3m12s ago``), or how far ahead (``in 5m``)."""
    if at is None:
        return ""
    delta = (now or datetime.now(UTC)) - at
    if delta < timedelta(0):
        return f"in {span(-delta)}"
    return f"{span(delta)} ago"


def json_text(value: Any) -> str:
    """A value as compact JSON, the way a user wrote the event data."""
    return msgspec.json.encode(value).decode()


def error_line(error: ErrorInfo | None) -> str:
    """``Type: message`` of an error (no traceback); empty for None."""
    if error is None:
        return ""
    return f"{error.type}: {error.message}" if error.message else error.type
