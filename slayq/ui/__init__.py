"""The dashboard: see runs live, read a run's timeline by attempt, act on runs and queues.

    from slayq.ui import app, basic_auth
    dashboard = app(store, auth=basic_auth("admin", "secret"))   # an ASGI app to mount

Server-rendered (Starlette, Jinja2, htmx shipped in the package); every page is a view of
the store's operations, every button one of its calls, audited as ``ui:<user>``.
"""

from slayq.ui.app import app
from slayq.ui.auth import basic_auth

__all__ = ["app", "basic_auth"]
