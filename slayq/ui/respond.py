"""Turning a view's ``Page`` into a response: the whole page, or only its live region (for
a page that re-fetches it), with what every template needs (links, user, CSRF token)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from markupsafe import Markup
from starlette.responses import HTMLResponse, PlainTextResponse, Response

from slayq.ui import render as r
from slayq.ui.forms import query_fields
from slayq.ui.state import base_path, dashboard

if TYPE_CHECKING:
    from starlette.requests import Request

    from slayq.ui.state import Page

# A page's script asks for the live region alone with this header.
FRAGMENT_HEADER = "x-slayq-fragment"
FINGERPRINT_HEADER = "x-slayq-fingerprint"
NO_STORE = {"cache-control": "no-store"}


def common(request: Request, user: str, token: str) -> dict[str, Any]:
    fields = query_fields(request)
    return {
        "base": base_path(request),
        "user": user,
        "read_only": dashboard(request).read_only,
        "csrf_token": token,
        "notice": fields.get("notice"),
        "problem_notice": fields.get("error"),
    }


def live_html(request: Request, page: Page, user: str) -> str:
    """The page's live region as HTML (the text /live fingerprints and pushes)."""
    token, _ = dashboard(request).tokens.for_request(request)
    return r.render(f"{page.name}_live.html", common(request, user, token) | page.context)


def respond(request: Request, page: Page, user: str, *, status: int = 200) -> Response:
    tokens = dashboard(request).tokens
    token, fresh = tokens.for_request(request)
    context = common(request, user, token) | page.context | {"title": page.title}
    live = r.render(f"{page.name}_live.html", context)
    fingerprint = r.fingerprint(live)
    headers = NO_STORE | {FINGERPRINT_HEADER: fingerprint}
    if request.headers.get(FRAGMENT_HEADER):
        response: Response = HTMLResponse(live, status_code=status, headers=headers)
    else:
        context |= {"live": Markup(live), "fingerprint": fingerprint, "page": page.name}
        html = r.render(f"{page.name}.html", context)
        response = HTMLResponse(html, status_code=status, headers=headers)
    if fresh:
        tokens.set_cookie(response, token, secure=request.url.scheme == "https")
    return response


def refused(message: str, status: int) -> Response:
    return PlainTextResponse(message, status_code=status, headers=NO_STORE)
