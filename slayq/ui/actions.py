"""The dashboard's buttons: each a POST that is one store call, audited as ``ui:<user>``.

Every POST must carry the page's CSRF token (field ``csrf_token`` or header
``X-CSRF-Token``) and is refused (403) on a read-only dashboard. It answers with a
redirect to the page that shows the outcome (303; for htmx, ``HX-Redirect``), a notice or
the error in its URL.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any
from urllib.parse import urlencode

from starlette.responses import HTMLResponse, RedirectResponse, Response

from slayq.errors import InputError, RunNotFoundError
from slayq.model import RunId
from slayq.ui import csrf
from slayq.ui.auth import authenticate
from slayq.ui.filters import Filters
from slayq.ui.forms import Fields, query_fields, read_form
from slayq.ui.pages.runs import runs
from slayq.ui.render import render
from slayq.ui.rerun import edited_data, rerun
from slayq.ui.respond import common, refused, respond
from slayq.ui.state import base_path, dashboard

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable

    from starlette.requests import Request

    Handler = Callable[[Request, Fields, str], Awaitable[Response]]


def action(handler: Handler) -> Callable[[Request], Awaitable[Response]]:
    """Authenticate, check the CSRF token and the read-only switch, then ``handler``
    with the form and the actor."""

    async def endpoint(request: Request) -> Response:
        ui = dashboard(request)
        who = await authenticate(ui.auth, request)
        if isinstance(who, Response):
            return who
        try:
            fields = await read_form(request)
        except ValueError as exc:
            return refused(str(exc), 413)
        submitted = request.headers.get(csrf.HEADER) or fields.get(csrf.FIELD)
        if not ui.tokens.accepts(request, submitted):
            return refused(
                "refused: this form's CSRF token is missing or stale; reload the page", 403
            )
        if ui.read_only:
            return refused("refused: this dashboard is read-only", 403)
        return await handler(request, fields, f"ui:{who}")

    return endpoint


def go(request: Request, path: str, **message: str) -> Response:
    """Redirect after the POST to ``path`` (under the dashboard), with a message."""
    separator = "&" if "?" in path else "?"
    url = base_path(request) + path + (separator + urlencode(message) if message else "")
    if request.headers.get("hx-request"):
        return Response(status_code=204, headers={"HX-Redirect": url})
    return RedirectResponse(url, status_code=303)


def _run_id(request: Request) -> RunId:
    return RunId(request.path_params["run_id"])


async def cancel(request: Request, fields: Fields, actor: str) -> Response:
    run_id = _run_id(request)
    try:
        cancelled = await dashboard(request).store.cancel_run(run_id, actor=actor)
    except (InputError, RunNotFoundError) as exc:
        return go(request, f"/runs/{run_id}", error=str(exc))
    notice = "cancelled" if cancelled else "it had already finished: nothing to cancel"
    return go(request, f"/runs/{run_id}", notice=notice)


async def retry(request: Request, fields: Fields, actor: str) -> Response:
    run_id = _run_id(request)
    try:
        await dashboard(request).store.retry_run(run_id, actor=actor)
    except (InputError, RunNotFoundError) as exc:
        return go(request, f"/runs/{run_id}", error=str(exc))
    return go(request, f"/runs/{run_id}", notice="retried: it runs again from where it stopped")


async def rerun_run(request: Request, fields: Fields, actor: str) -> Response:
    run_id = _run_id(request)
    try:
        data = edited_data(fields.get("data"))
        new = await rerun(
            dashboard(request), run_id, from_step=fields.get("from_step"), data=data, actor=actor
        )
    except (InputError, RunNotFoundError) as exc:
        return go(request, f"/runs/{run_id}", error=str(exc))
    return go(request, f"/runs/{new}", notice=f"rerun of {run_id}")


async def bulk(request: Request, fields: Fields, actor: str) -> Response:
    """``action`` (retry or cancel) on every run the URL's filters select: without
    ``confirm``, count them (a dry run) and ask; with the count confirmed, do it."""
    filters = Filters.read(query_fields(request))
    verb = fields.get("action")
    if verb not in ("retry", "cancel"):
        return go(request, f"/runs?{filters.query()}", error="action must be retry or cancel")
    store = dashboard(request).store
    act = store.retry_runs if verb == "retry" else store.cancel_runs
    try:
        count = await act(filters.resolve(), dry_run=True, actor=actor)
        confirm = fields.get("confirm")
        if confirm != str(count):
            changed = confirm is not None
            return await _ask(request, actor, verb, count, filters, changed=changed)
        done = await act(filters.resolve(), dry_run=False, actor=actor)
    except InputError as exc:
        return go(request, f"/runs?{filters.query()}", error=str(exc))
    past = "retried" if verb == "retry" else "cancelled"
    return go(request, f"/runs?{filters.query()}", notice=f"{past} {done} run(s)")


async def _ask(
    request: Request, actor: str, verb: str, count: int, filters: Filters, *, changed: bool
) -> Response:
    confirmation: dict[str, Any] = {
        "action": verb,
        "count": count,
        "changed": changed,
        "filters": filters,
    }
    if request.headers.get("hx-request"):
        ui = dashboard(request)
        token, _ = ui.tokens.for_request(request)
        context = common(request, actor, token) | {"bulk": confirmation, "filters": filters}
        return HTMLResponse(render("runs_bulk.html", context))
    page = await runs(request, bulk=confirmation)
    return respond(request, page, actor.removeprefix("ui:"))


async def pause(request: Request, fields: Fields, actor: str) -> Response:
    name = request.path_params["name"]
    try:
        changed = await dashboard(request).store.pause_queue(name, actor=actor)
    except InputError as exc:
        return go(request, "/queues", error=str(exc))
    return go(request, "/queues", notice=f"paused {name}" if changed else f"{name} was paused")


async def resume(request: Request, fields: Fields, actor: str) -> Response:
    name = request.path_params["name"]
    try:
        changed = await dashboard(request).store.resume_queue(name, actor=actor)
    except InputError as exc:
        return go(request, "/queues", error=str(exc))
    notice = f"resumed {name}" if changed else f"{name} was not paused"
    return go(request, "/queues", notice=notice)
