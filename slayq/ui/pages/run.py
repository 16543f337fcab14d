"""A run: its data, result or error, timeline by attempt, what it waits for, its links
(parent, children, the run it was rerun from) and the actions on it."""

from __future__ import annotations

from typing import TYPE_CHECKING

from slayq.errors import InputError, RunNotFoundError
from slayq.model import FINISHED_STATUSES, RunFilter, RunId
from slayq.runtime.flow_status import describe_flow
from slayq.ui.state import Page, dashboard
from slayq.ui.timeline import copied_steps, lanes

if TYPE_CHECKING:
    from starlette.requests import Request

CHILDREN = 20


class RunMissingError(RunNotFoundError):
    """No run has the id of the URL (a 404 page)."""


async def run(request: Request) -> Page:
    store = dashboard(request).store
    run_id = RunId(request.path_params["run_id"])
    try:
        found = await store.get_run(run_id)
    except (RunNotFoundError, InputError) as exc:
        raise RunMissingError(str(exc)) from None
    children = await store.list_runs(RunFilter(parent=run_id), limit=CHILDREN, cursor=None)
    return Page(
        "run",
        f"Run {run_id}",
        {
            "run": found,
            "lanes": lanes(found),
            "copied": copied_steps(found),
            "children": children.runs,
            "more_children": children.next_cursor is not None,
            "flow_lines": describe_flow(found.event, found.flow),
            "can_retry": found.status in ("failed", "cancelled"),
            "can_cancel": found.status not in FINISHED_STATUSES,
        },
    )
