"""CSRF protection for the dashboard's POSTs: a signed double-submit token.

Every page sets a cookie holding ``nonce.signature`` (an HMAC of the nonce under the
app's secret) and puts the same token in its forms (``csrf_token``) and in a meta tag,
from which the page's script sends it as ``X-CSRF-Token`` on htmx requests. A POST is
accepted when the token it carries equals the cookie and the signature checks: another
site can make the browser send the cookie, but cannot read it to put it in the form, and
cannot plant a cookie of its own choosing (it would need the secret to sign it).
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from starlette.requests import Request
    from starlette.responses import Response

COOKIE = "slayq_csrf"
HEADER = "x-csrf-token"
FIELD = "csrf_token"


class CsrfTokens:
    def __init__(self, secret: bytes) -> None:
        self._secret = secret

    def _sign(self, nonce: str) -> str:
        return hmac.new(self._secret, nonce.encode(), hashlib.sha256).hexdigest()

    def valid(self, token: str | None) -> bool:
        if not token or "." not in token:
            return False
        nonce, _, signature = token.partition(".")
        return hmac.compare_digest(signature, self._sign(nonce))

    def for_request(self, request: Request) -> tuple[str, bool]:
        """The token the page should carry, and whether it is new (so a cookie must be
        set): the cookie's own token if it is valid."""
        cookie = request.cookies.get(COOKIE)
        if self.valid(cookie):
            assert cookie is not None
            return cookie, False
        nonce = secrets.token_urlsafe(18)
        return f"{nonce}.{self._sign(nonce)}", True

    def set_cookie(self, response: Response, token: str, *, secure: bool) -> None:
        # SameSite=Strict: another site's POST does not even carry it. HttpOnly: the
        # page's script takes the token from the meta tag, never from the cookie.
        response.set_cookie(
            COOKIE, token, httponly=True, samesite="strict", secure=secure, path="/"
        )

    def accepts(self, request: Request, submitted: str | None) -> bool:
        """Whether a POST carrying ``submitted`` (the form field or the header) is the
        page's own."""
        cookie = request.cookies.get(COOKIE)
        if not submitted or not cookie or not self.valid(cookie):
            return False
        return hmac.compare_digest(submitted, cookie)
