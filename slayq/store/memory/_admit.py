"""Send-time flow control in the memory store: what an event's run becomes.

The same decisions as ``slayq.store.postgres._admit``, for one run at a time (the memory
store ingests events one after another, so there is nothing to lock). Each feature, in
``FEATURES`` order, returns a ``Decision``: the run to start (maybe changed), or none and
the id ``send_events`` answers instead (an existing run's, or None).

A run whose per-send ``key`` is taken is a repeated send: it answers the keyed run and
no feature sees it (a retried send must not cancel its own run, nor spend a rate).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from slayq.store.memory import _flow_collect, _flow_once, _flow_rate_limit, _flow_singleton
from slayq.store.memory._decision import Decision, Feature

if TYPE_CHECKING:
    from collections.abc import Callable
    from datetime import datetime

    from slayq.model import NewRun, RunId
    from slayq.store.memory._core import MemoryCore

# In this order. Debounce and batch last: an event the others answer joins no burst or
# batch.
FEATURES: list[Feature] = [
    _flow_once.decide,
    _flow_rate_limit.decide,
    _flow_singleton.decide,
    _flow_collect.debounce,
    _flow_collect.batch,
]


def admit(core: MemoryCore, run: NewRun, now: datetime) -> Decision:
    decision = Decision(run)
    if run.flow is None or (run.key is not None and (run.event, run.key) in core._keys):
        return decision
    settle: list[Callable[[RunId | None], None]] = []
    for feature in FEATURES:
        if decision.run is None or decision.run.flow is None:
            break
        decision = feature(core, decision.run, now)
        if decision.then is not None:
            settle.append(decision.then)
    answer = decision.run.id if decision.run is not None else decision.answer
    for then in settle:
        then(answer)
    return decision
