"""``/live``: Server-Sent Events telling an open page what its live region shows now.

The page opens ``/live?src=<its path and query>`` with the fingerprint of what it shows
(``fp``; on reconnects the browser sends it back as ``Last-Event-ID``). The stream
re-renders that region every ``live_interval`` seconds, and at once when PostgreSQL
notifies that runs became due (``PostgresStore.listen``; not every change notifies, hence
the interval), and sends it (event ``fragment``, id = its fingerprint) only when it
changed. A comment goes out after ``heartbeat`` seconds of quiet so that proxies keep the
connection. Each open page that listens holds one database connection; past
``MAX_LISTENERS`` pages in a process, the others re-check on the interval only.
"""

from __future__ import annotations

import contextlib
import logging
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

import anyio
from starlette.requests import Request
from starlette.responses import Response

from slayq.errors import SlayqError
from slayq.ui.auth import authenticate
from slayq.ui.render import fingerprint
from slayq.ui.respond import live_html, refused
from slayq.ui.state import dashboard

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable

    from starlette.types import Receive, Scope, Send

    from slayq.ui.state import Dashboard, Page

    View = Callable[[Request], Awaitable[Page]]

logger = logging.getLogger(__name__)

MAX_LISTENERS = 16
_listening = [0]  # pages of this process holding a LISTEN connection


def event(fp: str, html: str) -> bytes:
    data = "".join(f"data: {line}\n" for line in html.splitlines() or [""])
    return f"event: fragment\nid: {fp}\n{data}\n".encode()


def page_scope(request: Request, src: str) -> dict[str, Any] | None:
    """The scope of a GET of ``src`` (a path under the dashboard) with the live request's
    headers (its user, its cookies); None for a src that is not a path."""
    parts = urlsplit(src)
    if parts.scheme or parts.netloc or not parts.path.startswith("/"):
        return None
    root = str(request.scope.get("root_path", ""))
    scope = dict(request.scope)
    scope.update(
        path=root + parts.path,
        raw_path=(root + parts.path).encode(),
        query_string=parts.query.encode(),
        method="GET",
    )
    return scope


async def _notifications(store: object, poke: Callable[[], None]) -> None:
    """Poke on every notification of the store, while this page listens."""
    listen = getattr(store, "listen", None)
    if listen is None or _listening[0] >= MAX_LISTENERS:
        return
    _listening[0] += 1
    try:
        async with contextlib.aclosing(listen()) as notes:
            async for _ in notes:
                poke()
    except Exception as exc:  # the interval still re-checks; say why it is slower
        logger.warning("dashboard: listening for notifications failed: %s", exc)
    finally:
        _listening[0] -= 1


class LiveStream(Response):
    """The event stream of one page, until the browser goes away."""

    def __init__(self, ui: Dashboard, view: View, page: Request, user: str, shown: str) -> None:
        super().__init__(
            media_type="text/event-stream",
            headers={"cache-control": "no-store", "x-accel-buffering": "no"},
        )
        self.ui, self.view, self.page, self.user, self.shown = ui, view, page, user, shown
        self.changed = anyio.Event()

    def poke(self) -> None:
        self.changed.set()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        # Response declared the empty body's length (0); a stream has none, and an HTTP
        # server refuses a body longer than declared (the browser then only polled).
        headers = [(k, v) for k, v in self.raw_headers if k != b"content-length"]
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        async with anyio.create_task_group() as group:

            async def until_gone() -> None:
                while (await receive())["type"] != "http.disconnect":
                    pass
                group.cancel_scope.cancel()

            group.start_soon(until_gone)
            group.start_soon(_notifications, self.ui.store, self.poke)
            await self._body(
                lambda chunk: send({"type": "http.response.body", "body": chunk, "more_body": True})
            )

    async def _body(self, write: Callable[[bytes], Awaitable[None]]) -> None:
        await write(b"retry: 3000\n\n")
        quiet = 0.0
        while True:
            with anyio.move_on_after(self.ui.live_interval):
                await self.changed.wait()
                await anyio.sleep(0.05)  # let a burst of notifications settle
            self.changed = anyio.Event()
            try:
                page = await self.view(self.page)
            except SlayqError as exc:  # the database away, the run deleted: try again
                logger.info("dashboard: a live page could not be read: %s", exc)
                continue
            html = live_html(self.page, page, self.user)
            fp = fingerprint(html)
            if fp != self.shown:
                self.shown, quiet = fp, 0.0
                await write(event(fp, html))
                continue
            quiet += self.ui.live_interval
            if quiet >= self.ui.heartbeat:
                quiet = 0.0
                await write(b": heartbeat\n\n")


def live_endpoint(
    resolve: Callable[[dict[str, Any]], View | None],
) -> Callable[[Request], Awaitable[Response]]:
    async def endpoint(request: Request) -> Response:
        ui = dashboard(request)
        who = await authenticate(ui.auth, request)
        if isinstance(who, Response):
            return who
        src = request.query_params.get("src", "")
        scope = page_scope(request, src)
        view = None if scope is None else resolve(scope)
        if scope is None or view is None:
            return refused(f"/live: src must be a page of the dashboard, got {src!r}", 400)
        shown = request.headers.get("last-event-id") or request.query_params.get("fp", "")
        return LiveStream(ui, view, Request(scope), who, shown)

    return endpoint
