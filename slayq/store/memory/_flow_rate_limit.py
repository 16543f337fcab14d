"""Rate limits in the memory store: an event over its bucket's rate starts no run.

The event is ingested all the same (logged, waking waits, cancelling runs); only its run
is dropped, and ``send_events`` answers None for it. GCRA, as ``_flow_sends.gcra``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from slayq.store._flow_sends import gcra
from slayq.store.memory._decision import Decision

if TYPE_CHECKING:
    from datetime import datetime

    from slayq.model import NewRun
    from slayq.store.memory._core import MemoryCore


def decide(core: MemoryCore, run: NewRun, now: datetime) -> Decision:
    rate = run.flow.rate_limit if run.flow is not None else None
    if rate is None:
        return Decision(run)
    tat = gcra(core.rate_tats.get(rate.bucket), now, rate)
    if tat is None:
        return Decision(None, answer=None)
    core.rate_tats[rate.bucket] = tat
    return Decision(run)


def prune(core: MemoryCore, now: datetime) -> None:
    """Forget the buckets whose arrival time passed (``delete_finished``): such a bucket
    allows what an unused one does."""
    core.rate_tats = {bucket: tat for bucket, tat in core.rate_tats.items() if tat > now}
