"""The small listings: waits, queues, schedules, workers and the audit log."""

from __future__ import annotations

from typing import TYPE_CHECKING

from slayq.ui.forms import query_fields
from slayq.ui.state import Page, dashboard

if TYPE_CHECKING:
    from starlette.requests import Request

LIMIT = 200


async def waits(request: Request) -> Page:
    event = query_fields(request).get("event")
    found = await dashboard(request).store.list_waits(event=event, limit=LIMIT)
    return Page("waits", "Waits", {"waits": found, "event": event, "limit": LIMIT})


async def queues(request: Request) -> Page:
    return Page("queues", "Queues", {"queues": await dashboard(request).store.list_queues()})


async def schedules(request: Request) -> Page:
    found = await dashboard(request).store.list_schedules()
    return Page("schedules", "Schedules", {"schedules": found})


async def workers(request: Request) -> Page:
    return Page("workers", "Workers", {"workers": await dashboard(request).store.list_workers()})


async def audit(request: Request) -> Page:
    found = await dashboard(request).store.list_audit(limit=LIMIT)
    return Page("audit", "Audit log", {"entries": found})
