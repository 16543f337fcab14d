"""Debounce and batch in the memory store: the same rules as PostgreSQL's
(``slayq.store._flow_collect``), one event at a time.

Each bucket's newest debounce or batch run is remembered per store. It is *pending*
(debounce) or *open* (batch) while it never started: still queued and never leased
(``token`` 0; the first claim sets it). A debounced event joins the pending run (its data,
due ``period`` from now, never later than ``timeout`` after the first event) or starts
one; a batched event joins the open batch if it fits, else opens the next.
"""

from __future__ import annotations

from typing import TYPE_CHECKING
from weakref import WeakKeyDictionary

import msgspec

from slayq.store._flow_collect import batch_run, debounce_run, plan
from slayq.store.memory._decision import Decision

if TYPE_CHECKING:
    from datetime import datetime

    from slayq.model import NewRun, RunId
    from slayq.store.memory._core import MemoryCore
    from slayq.store.memory._records import _Run

# (feature, bucket) -> the bucket's newest run, per store; kept beside the store rather
# than in it so that a store without these features carries nothing.
_NEWEST: WeakKeyDictionary[MemoryCore, dict[tuple[str, str], RunId]] = WeakKeyDictionary()


def debounce(core: MemoryCore, run: NewRun, now: datetime) -> Decision:
    window = run.flow.debounce if run.flow is not None else None
    if window is None:
        return Decision(run)
    newest = _NEWEST.setdefault(core, {})
    pending = _unstarted(core, newest.get(("debounce", window.bucket)))
    if pending is None:
        started = debounce_run(run, run, window)
        newest[("debounce", window.bucket)] = started.id
        return Decision(started)
    due = now + window.period
    if window.timeout is not None:
        due = min(due, pending.created_at + window.timeout)
    pending.data, pending.cancel_on = run.data, list(run.cancel_on)
    pending.run_at, pending.updated_at = due, now
    return Decision(None, pending.id)


def batch(core: MemoryCore, run: NewRun, now: datetime) -> Decision:
    spec = run.flow.batch if run.flow is not None else None
    if spec is None:
        return Decision(run)
    newest = _NEWEST.setdefault(core, {})
    open_run = _unstarted(core, newest.get(("batch", spec.bucket)))
    size = (
        (len(open_run.data["events"]), len(msgspec.json.encode(open_run.data)))
        if open_run is not None
        else None
    )
    at = plan(spec, [len(msgspec.json.encode(run.data))], size)
    if open_run is not None and (at.joining or at.open_full):
        if at.joining:
            open_run.data["events"].append(run.data)
        if at.open_full:  # full: due at once
            open_run.run_at = min(open_run.run_at or now, now)
        open_run.updated_at = now
    if at.joining:
        assert open_run is not None
        return Decision(None, open_run.id)
    ((_, _, full),) = at.new
    started = batch_run(run, spec, [run.data], full=full)
    newest[("batch", spec.bucket)] = started.id
    return Decision(started)


def _unstarted(core: MemoryCore, run_id: RunId | None) -> _Run | None:
    run = core._runs.get(run_id) if run_id is not None else None
    if run is None or run.status != "queued" or run.token != 0:
        return None
    return run
