"""Singletons in the memory store: at most one unfinished run per bucket.

An unfinished run (queued, running, sleeping or waiting) of the bucket, however it was
created, makes a new event either answer it and start nothing (``mode="skip"``) or
cancel it, as ``cancel_run`` does, and start its own (``mode="cancel"``).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from slayq.model import FINISHED_STATUSES
from slayq.store.memory._decision import Decision

if TYPE_CHECKING:
    from datetime import datetime

    from slayq.model import NewRun
    from slayq.store.memory._core import MemoryCore


def decide(core: MemoryCore, run: NewRun, now: datetime) -> Decision:
    single = run.flow.singleton if run.flow is not None else None
    if single is None:
        return Decision(run)
    active = sorted(
        (
            r
            for r in core._runs.values()
            if r.status not in FINISHED_STATUSES
            and r.flow is not None
            and r.flow.singleton is not None
            and r.flow.singleton.bucket == single.bucket
        ),
        key=lambda r: r.seq,
    )
    if active and single.mode == "skip":
        return Decision(None, answer=active[0].id)
    for old in active:
        core._cancel(old, now)
    return Decision(run)
