"""Overview: counts by state, runs per minute, failure rate, queue lag, waits about to
expire, expired leases."""

from __future__ import annotations

from datetime import timedelta
from typing import TYPE_CHECKING

from slayq.ui.chart import HEIGHT, WIDTH, bars
from slayq.ui.state import Page, dashboard

if TYPE_CHECKING:
    from starlette.requests import Request

WINDOW = timedelta(hours=1)
EXPIRING = timedelta(hours=1)  # a wait whose deadline is this close is "about to expire"


async def overview(request: Request) -> Page:
    store = dashboard(request).store
    stats = await store.run_stats(window=WINDOW)
    queues = await store.list_queues()
    waits = await store.list_waits(limit=20)
    expiring = [
        w for w in waits if w.expires_at is not None and w.expires_at <= stats.now + EXPIRING
    ]
    finished = {
        status: sum(getattr(m, status) for m in stats.minutes)
        for status in ("completed", "failed", "cancelled")
    }
    ended = finished["completed"] + finished["failed"]
    unfinished = {
        state: sum(getattr(q, state) for q in queues)
        for state in ("due", "running", "sleeping", "waiting")
    }
    return Page(
        "overview",
        "Overview",
        {
            "stats": stats,
            "started": sum(m.started for m in stats.minutes),
            "finished": finished,
            "unfinished": unfinished,
            "failure_rate": None if ended == 0 else finished["failed"] / ended,
            "queues": queues,
            "expiring": expiring,
            "bars": bars(stats),
            "chart_width": WIDTH,
            "chart_height": HEIGHT,
        },
    )
