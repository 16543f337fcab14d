"""The current run on log records: a context variable, a filter and a JSON formatter.

The engine boundary (``drive`` and the receiver) sets the run's fields around each
attempt, and ``_call`` adds the step's name around each handler, so a record logged by the
user's own code inside a handler can carry ``run_id``, ``event``, ``queue``, ``attempt``
and ``step``. Add ``RunContextFilter`` to a logging handler to get them; ``JsonFormatter``
writes one JSON object per record with every such field.
"""

from __future__ import annotations

import json
import logging
import sys
import time
from contextlib import contextmanager
from contextvars import ContextVar, Token
from typing import TYPE_CHECKING, Any, Literal

if TYPE_CHECKING:
    from collections.abc import Iterator

LogFormat = Literal["text", "json"]
TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"

# The fields of the run being driven in this task (a tuple keeps setting it cheap).
_RUN: ContextVar[tuple[str, str, str, int] | None] = ContextVar("slayq_run", default=None)
_STEP: ContextVar[str | None] = ContextVar("slayq_step", default=None)

# What every LogRecord has: anything else on a record came from ``extra`` or a filter.
# uvicorn's ``color_message`` repeats the message with terminal colours: not for shippers.
_STANDARD = frozenset(logging.makeLogRecord({}).__dict__) | {
    "message",
    "asctime",
    "color_message",
}


def log_context() -> dict[str, Any]:
    """The current run's fields (``run_id``, ``event``, ``queue``, ``attempt``, ``step``);
    empty outside a run. ``step`` is there only inside a step handler."""
    run = _RUN.get()
    if run is None:
        return {}
    fields: dict[str, Any] = {
        "run_id": run[0],
        "event": run[1],
        "queue": run[2],
        "attempt": run[3],
    }
    step = _STEP.get()
    if step is not None:
        fields["step"] = step
    return fields


def current_event() -> str:
    """The event (function) of the run being driven; "" outside one."""
    run = _RUN.get()
    return "" if run is None else run[1]


def enter_run(
    run_id: str, event: str, queue: str, attempt: int
) -> Token[tuple[str, str, str, int] | None]:
    """Mark what runs from here as driving this run, until ``leave_run(token)``."""
    return _RUN.set((run_id, event, queue, attempt))


def leave_run(token: Token[tuple[str, str, str, int] | None]) -> None:
    _RUN.reset(token)


@contextmanager
def run_context(run_id: str, event: str, queue: str, attempt: int) -> Iterator[None]:
    """Mark the code inside as driving this run (the engine boundary uses it)."""
    token = enter_run(run_id, event, queue, attempt)
    try:
        yield
    finally:
        leave_run(token)


def enter_step(step: str) -> Token[str | None]:
    """Mark what runs from here as this step's handler, until ``leave_step(token)``
    (plain calls, not a context manager: they run once per step)."""
    return _STEP.set(step)


def leave_step(token: Token[str | None]) -> None:
    _STEP.reset(token)


class RunContextFilter(logging.Filter):
    """Adds the current run's fields to each record that passes (never drops one).

    A field the record already has (given with ``extra=``) is kept. Attach it to a
    *handler* (``handler.addFilter(RunContextFilter())``) so that it sees the records
    of every logger that propagates to that handler, your own included.
    """

    def filter(self, record: logging.LogRecord) -> bool:
        if _RUN.get() is not None:
            for name, value in log_context().items():
                if not hasattr(record, name):
                    setattr(record, name, value)
        return True


class JsonFormatter(logging.Formatter):
    """One JSON object per record: ``time`` (UTC, ISO 8601), ``level``, ``logger``,
    ``message``, every field given with ``extra=`` (or added by ``RunContextFilter``), and
    ``exception`` / ``stack`` when the record has them. Values JSON cannot hold are
    written as their ``str()``."""

    def format(self, record: logging.LogRecord) -> str:
        line: dict[str, Any] = {
            "time": _iso_utc(record.created),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        for name, value in record.__dict__.items():
            if name not in _STANDARD and not name.startswith("_") and value is not None:
                line.setdefault(name, value)
        if record.exc_info:
            line["exception"] = self.formatException(record.exc_info)
        if record.stack_info:
            line["stack"] = self.formatStack(record.stack_info)
        return json.dumps(line, default=str, ensure_ascii=False)


def configure_logging(level: str | int = "INFO", fmt: LogFormat = "text") -> logging.Handler:
    """Log to stderr in ``fmt`` at ``level``, with the run fields on every record: what
    ``python -m slayq.worker`` and ``python -m slayq.server`` do with ``--log-format``.
    Replaces the root logger's handlers; returns the new handler."""
    if fmt not in ("text", "json"):
        raise ValueError(f"log format must be 'text' or 'json', got {fmt!r}")
    handler = logging.StreamHandler(sys.stderr)
    handler.addFilter(RunContextFilter())
    handler.setFormatter(JsonFormatter() if fmt == "json" else logging.Formatter(TEXT_FORMAT))
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(level.upper() if isinstance(level, str) else level)
    return handler


def _iso_utc(created: float) -> str:
    seconds = int(created)
    millis = int((created - seconds) * 1000)
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(seconds)) + f".{millis:03d}Z"
