"""Idempotency in the memory store: the first answer of a bucket holds for ``ttl``.

A bucket's answer is the run its first event started, or the existing run it was
answered with (a singleton skip); an event that started nothing (rate limited) leaves
no answer, so the next one is decided afresh. After ``ttl`` the bucket is free again.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from slayq.store._flow_sends import later
from slayq.store.memory._decision import Decision

if TYPE_CHECKING:
    from datetime import datetime

    from slayq.model import NewRun, RunId
    from slayq.store.memory._core import MemoryCore


def decide(core: MemoryCore, run: NewRun, now: datetime) -> Decision:
    once = run.flow.idempotency if run.flow is not None else None
    if once is None:
        return Decision(run)
    kept = core.once.get(once.bucket)
    if kept is not None and kept[1] > now:
        return Decision(None, answer=kept[0])
    expires_at = later(now, once.ttl, what=f"idempotency bucket {once.bucket!r}")

    def keep(answer: RunId | None) -> None:
        if answer is not None:
            core.once[once.bucket] = (answer, expires_at)

    return Decision(run, then=keep)


def prune(core: MemoryCore, now: datetime) -> None:
    """Forget the expired answers (``delete_finished``): they decide nothing any more."""
    core.once = {bucket: kept for bucket, kept in core.once.items() if kept[1] > now}
