"""Debounce and batch, the rules both stores share: what run a burst or a batch becomes.

Pure functions over the model, so the memory store (one event at a time) and the
PostgreSQL store (every event of a ``send_events`` call at once) cannot disagree on
what is due when, or on which event fits which batch.

A batch run's data is ``{"events": [d1, d2, ...]}``, written compactly (msgspec's
encoding: no spaces), so its size in bytes is known without encoding it again: 13
bytes of wrapper, each event's data, and a comma between two. A batch is *full* when it
has ``max_size`` events, or when the next event would take its data over ``max_bytes``
(the client's limit on one event's data); a full batch is due at once. Its first event
always fits, whatever its size: one event's data is already within the client's limit.

Runs these features start take no per-send ``key``: each stands for several events.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import msgspec

if TYPE_CHECKING:
    from collections.abc import Sequence

    from slayq.model import FlowBatch, FlowWindow, NewRun

WRAPPER_BYTES = len(b'{"events":[]}')


def debounce_run(first: NewRun, last: NewRun, window: FlowWindow) -> NewRun:
    """The run a burst starts: ``first``'s id, ``last``'s data and cancel rules, due
    ``period`` from now (``timeout`` after the first event, if that is sooner)."""
    due_in = window.period if window.timeout is None else min(window.period, window.timeout)
    return msgspec.structs.replace(
        first, data=last.data, cancel_on=last.cancel_on, key=None, delay=due_in, run_at=None
    )


def fits(batch: FlowBatch, count: int, size: int, item: int) -> bool:
    """Whether an event of ``item`` bytes joins a batch of ``count`` events whose data
    is ``size`` bytes; an empty batch takes any event."""
    if count == 0:
        return True
    return count < batch.max_size and size + 1 + item <= batch.max_bytes


def batch_run(
    first: NewRun, batch: FlowBatch, events: list[dict[str, Any]], *, full: bool
) -> NewRun:
    """The run a new batch is: ``first``'s id (the event that opened it), the batch's
    events as its data, due at once if full, else ``timeout`` from now."""
    return msgspec.structs.replace(
        first,
        data={"events": events},
        key=None,
        delay=None if full else batch.timeout,
        run_at=None,
    )


class Plan(msgspec.Struct, frozen=True):
    """Where the events of one bucket go, in order: the first ``joining`` join the open
    batch (``open_full``: which is then full), the rest make ``new`` batches, each a
    (start, end, full) slice of the events."""

    joining: int
    open_full: bool
    new: list[tuple[int, int, bool]]


def plan(batch: FlowBatch, items: Sequence[int], open_batch: tuple[int, int] | None) -> Plan:
    """Split events of ``items`` bytes each over the open batch (its event count and
    bytes; None without one) and as many new batches as they need, exactly as sending
    them one at a time would."""
    if open_batch is not None and open_batch[0] >= batch.max_size:
        open_batch = None  # full already, and due: nothing to change
    count, size = open_batch if open_batch is not None else (0, 0)
    # where the batch being filled began; None: it is the open one
    start: int | None = None if open_batch is not None else 0
    joining, open_full = 0, False
    new: list[tuple[int, int, bool]] = []
    for i, item in enumerate(items):
        if not fits(batch, count, size, item):  # the batch being filled is full
            if start is None:
                open_full = True
            else:
                new.append((start, i, True))
            start, count, size = i, 0, 0
        size = WRAPPER_BYTES + item if count == 0 else size + 1 + item
        count += 1
        if start is None:
            joining = i + 1
    if start is None:
        open_full = open_full or count >= batch.max_size
    elif items:
        new.append((start, len(items), count >= batch.max_size))
    return Plan(joining=joining, open_full=open_full, new=new)
