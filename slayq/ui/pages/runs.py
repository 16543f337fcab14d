"""Runs: the list with its filters (kept in the URL), keyset pages, and the bulk retry or
cancel of every matching run, counted (a dry run) before it is confirmed."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from slayq.errors import InputError
from slayq.ui.filters import Filters
from slayq.ui.forms import query_fields
from slayq.ui.state import Page, dashboard

if TYPE_CHECKING:
    from starlette.requests import Request

PAGE_SIZE = 50


async def runs(request: Request, *, bulk: dict[str, Any] | None = None) -> Page:
    """The list; ``bulk`` (the bulk form's dry run) shows its confirmation."""
    fields = query_fields(request)
    filters = Filters.read(fields)
    cursor = fields.get("cursor")
    context: dict[str, Any] = {"filters": filters, "cursor": cursor, "bulk": bulk}
    try:
        found = filters.resolve()
        page = await dashboard(request).store.list_runs(found, limit=PAGE_SIZE, cursor=cursor)
    except InputError as exc:
        context.update(runs=[], next_cursor=None, problem=str(exc))
    else:
        context.update(runs=page.runs, next_cursor=page.next_cursor, problem=None)
    return Page("runs", "Runs", context)
