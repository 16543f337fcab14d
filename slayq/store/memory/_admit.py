"""Send-time flow control in the memory store: what an event's run becomes.

The same decisions as ``slayq.store.postgres._admit``, for one run at a time (the memory
store ingests events one after another, so there is nothing to lock). Each feature, in
``FEATURES`` order, returns a ``Decision``: the run to start (maybe changed), or none and
the id ``send_events`` answers instead (an existing run's, or None).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from slayq.store.memory import _flow_collect

if TYPE_CHECKING:
    from datetime import datetime

    from slayq.model import NewRun, RunId
    from slayq.store.memory._core import MemoryCore


@dataclass(frozen=True)
class Decision:
    run: NewRun | None
    answer: RunId | None = None


Feature = Callable[["MemoryCore", "NewRun", "datetime"], Decision]

# Filled in feature by feature: idempotency, rate limit, singleton, debounce, batch.
FEATURES: list[Feature] = []
# Debounce and batch last: an event the others answer joins no burst or batch.
FEATURES += [_flow_collect.debounce, _flow_collect.batch]


def admit(core: MemoryCore, run: NewRun, now: datetime) -> Decision:
    decision = Decision(run)
    for feature in FEATURES:
        if decision.run is None or decision.run.flow is None:
            break
        decision = feature(core, decision.run, now)
    return decision
