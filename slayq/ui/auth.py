"""Who is asking: the auth hook a dashboard is given, and HTTP Basic auth as one.

A hook takes the request and answers the user's name (actions are audited as
``ui:<name>``), or refuses: ``None`` (a plain 401) or a ``Response`` of its own (a 401
asking for credentials, a redirect to a login page). It may be a coroutine function.
"""

from __future__ import annotations

import base64
import binascii
import hmac
import inspect
from typing import TYPE_CHECKING

from starlette.responses import PlainTextResponse, Response

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable

    from starlette.requests import Request

    AuthAnswer = str | Response | None
    AuthHook = Callable[[Request], AuthAnswer | Awaitable[AuthAnswer]]

ANONYMOUS = "anonymous"


def basic_auth(
    user: str, password: str, *, realm: str = "slayq"
) -> Callable[[Request], str | Response]:
    """An auth hook asking for HTTP Basic credentials: ``user`` and ``password``. Send them
    over TLS only (a proxy in front): Basic auth does not encrypt them."""
    if not user or not password:
        raise ValueError("basic_auth needs a non-empty user and password")
    expected = f"{user}:{password}".encode()

    def check(request: Request) -> str | Response:
        scheme, _, encoded = request.headers.get("authorization", "").partition(" ")
        if scheme.lower() == "basic":
            try:
                given = base64.b64decode(encoded.strip(), validate=True)
            except (binascii.Error, ValueError):
                given = b""
            # compare_digest: the time taken says nothing about how much matched
            if hmac.compare_digest(given, expected):
                return user
        return PlainTextResponse(
            "sign in to the slayq dashboard",
            status_code=401,
            headers={"WWW-Authenticate": f'Basic realm="{realm}", charset="UTF-8"'},
        )

    return check


async def authenticate(hook: AuthHook | None, request: Request) -> str | Response:
    """The user's name, or the response refusing them."""
    if hook is None:
        return ANONYMOUS
    answer = hook(request)
    if inspect.isawaitable(answer):
        answer = await answer
    return _judged(answer)


def _judged(answer: object) -> str | Response:
    if isinstance(answer, Response):
        return answer
    if isinstance(answer, str) and answer:
        return answer
    return PlainTextResponse("not allowed", status_code=401)
