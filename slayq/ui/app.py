"""``slayq.ui.app``: the dashboard as an ASGI app (Starlette), its routes and its parts."""

from __future__ import annotations

import secrets as random
from typing import TYPE_CHECKING, Any

from starlette.applications import Starlette
from starlette.responses import Response
from starlette.routing import Match, Mount, Route
from starlette.staticfiles import StaticFiles

from slayq.errors import InputError, StoreUnavailableError
from slayq.ui import actions
from slayq.ui.auth import authenticate
from slayq.ui.csrf import CsrfTokens
from slayq.ui.live import live_endpoint
from slayq.ui.pages import listings
from slayq.ui.pages.overview import overview
from slayq.ui.pages.run import RunMissingError, run
from slayq.ui.pages.runs import runs
from slayq.ui.respond import refused, respond
from slayq.ui.state import Dashboard, dashboard

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable

    from starlette.requests import Request

    from slayq.client import Client
    from slayq.store.protocol import Store
    from slayq.ui.auth import AuthHook
    from slayq.ui.state import Page

    View = Callable[[Request], Awaitable[Page]]

PAGES: list[tuple[str, View]] = [
    ("/", overview),
    ("/runs", runs),
    ("/runs/{run_id}", run),
    ("/waits", listings.waits),
    ("/queues", listings.queues),
    ("/schedules", listings.schedules),
    ("/workers", listings.workers),
    ("/audit", listings.audit),
]


def page(view: View) -> Callable[[Request], Awaitable[Response]]:
    async def endpoint(request: Request) -> Response:
        who = await authenticate(dashboard(request).auth, request)
        if isinstance(who, Response):
            return who
        try:
            found = await view(request)
        except RunMissingError as exc:
            return refused(str(exc), 404)
        except InputError as exc:
            return refused(str(exc), 400)
        except StoreUnavailableError as exc:
            return refused(f"the database is unavailable: {exc}", 503)
        return respond(request, found, who)

    return endpoint


def app(
    store: Store,
    *,
    auth: AuthHook | None = None,
    read_only: bool = False,
    client: Client | None = None,
    secret: str | bytes | None = None,
    live_interval: float = 2.0,
    heartbeat: float = 15.0,
) -> Starlette:
    """The dashboard over ``store``, to mount anywhere (``Mount("/ui", app(store))``).

    ``auth`` is called with each request and answers the user's name (their actions are
    audited as ``ui:<name>``) or refuses (None: 401; or the ``Response`` it returns);
    without it everyone is let in as ``anonymous``. ``read_only`` hides every action and
    refuses their POSTs (403). ``client``, an app's ``slayq.Client``, lets a rerun check
    edited data against its function's schema. ``secret`` signs the CSRF tokens (give the
    same one to every process behind one address; by default each process makes its
    own). ``live_interval`` is how often an open page is re-checked (seconds).
    """
    if isinstance(secret, str):
        secret = secret.encode()
    ui = Dashboard(
        store=store,
        auth=auth,
        read_only=read_only,
        tokens=CsrfTokens(secret or random.token_bytes(32)),
        client=client,
        live_interval=live_interval,
        heartbeat=heartbeat,
    )
    page_routes = [Route(path, page(view), methods=["GET"]) for path, view in PAGES]
    views = list(zip(page_routes, (view for _, view in PAGES), strict=True))

    def resolve(scope: dict[str, Any]) -> View | None:
        for route, view in views:
            matched, child = route.matches(scope)
            if matched is Match.FULL:
                scope.update(child)
                return view
        return None

    post = ["POST"]
    routes = [
        Route("/runs/bulk", actions.action(actions.bulk), methods=post),
        *page_routes,
        Route("/runs/{run_id}/cancel", actions.action(actions.cancel), methods=post),
        Route("/runs/{run_id}/retry", actions.action(actions.retry), methods=post),
        Route("/runs/{run_id}/rerun", actions.action(actions.rerun_run), methods=post),
        Route("/queues/{name:path}/pause", actions.action(actions.pause), methods=post),
        Route("/queues/{name:path}/resume", actions.action(actions.resume), methods=post),
        Route("/live", live_endpoint(resolve), methods=["GET"]),
        Mount("/static", StaticFiles(packages=[("slayq.ui", "static")]), name="static"),
    ]
    dashboard_app = Starlette(routes=routes)
    dashboard_app.state.slayq_ui = ui
    return dashboard_app
