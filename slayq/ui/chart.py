"""The overview's chart: runs started and finished per minute as bars of an inline SVG
(no script library): one slot per minute of the window, oldest on the left."""

from __future__ import annotations

from datetime import timedelta
from typing import TYPE_CHECKING

import msgspec

if TYPE_CHECKING:
    from slayq.model import RunStats

WIDTH, HEIGHT, SLOT = 600, 120, 10  # viewBox units; each minute a slot of 10


class Bar(msgspec.Struct, frozen=True):
    x: int
    started_height: float
    finished_height: float
    failed_height: float
    title: str


def bars(stats: RunStats) -> list[Bar]:
    by_minute = {m.at: m for m in stats.minutes}
    last = stats.now.replace(second=0, microsecond=0)  # the minute entries are keyed by
    slots = WIDTH // SLOT
    minutes = [last - timedelta(minutes=slots - 1 - i) for i in range(slots)]
    peak = max([max(m.started, m.completed + m.failed + m.cancelled) for m in stats.minutes] or [1])
    scale = (HEIGHT - 4) / max(peak, 1)
    result = []
    for i, at in enumerate(minutes):
        m = by_minute.get(at)
        started = m.started if m else 0
        finished = (m.completed + m.failed + m.cancelled) if m else 0
        failed = m.failed if m else 0
        result.append(
            Bar(
                x=i * SLOT,
                started_height=round(started * scale, 1),
                finished_height=round(finished * scale, 1),
                failed_height=round(failed * scale, 1),
                title=f"{at:%H:%M}Z: {started} started, {finished} finished, {failed} failed",
            )
        )
    return result
