"""Rerunning a run from the dashboard: with the app's client when it has the function
(which validates edited data against the function's schema), else by copying what the
original run records (event, queue, priority, attempts, endpoint)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import msgspec

from slayq.errors import InputError
from slayq.model import NewRun
from slayq.runtime.ids import new_run_id

if TYPE_CHECKING:
    from slayq.model import RunId
    from slayq.ui.state import Dashboard


def edited_data(text: str | None) -> dict[str, Any] | None:
    """The data typed into the rerun form: a JSON object, or None (keep the original's)."""
    if text is None:
        return None
    try:
        data = msgspec.json.decode(text)
    except msgspec.DecodeError as exc:
        raise InputError(f"the data is not JSON: {exc}") from None
    if not isinstance(data, dict):
        raise InputError(f"the data must be a JSON object ({{...}}), got {text[:60]}")
    return data


async def rerun(
    ui: Dashboard, run_id: RunId, *, from_step: str | None, data: dict[str, Any] | None, actor: str
) -> RunId:
    source = await ui.store.get_run(run_id)
    if ui.client is not None and source.event in ui.client.registry.functions:
        return await ui.client.rerun(run_id, from_step=from_step, data=data, actor=actor)
    # Without the function: the original's options as its row records them. Its
    # cancel_on rules are not kept on a finished run, so the new run has none.
    new = NewRun(
        id=new_run_id(),
        event=source.event,
        data=source.data if data is None else data,
        queue=source.queue,
        priority=source.priority,
        max_attempts=source.max_attempts,
        endpoint=source.endpoint,
    )
    return await ui.store.fork_run(new, source=run_id, before_step=from_step, actor=actor)
