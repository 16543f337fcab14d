"""``slayq ui``: the dashboard, standalone, at ``http://HOST:PORT/ui/``.

On a loopback address it needs no password (only this machine reaches it); on any other
it takes HTTP Basic auth with ``SLAY_Q_UI_PASSWORD`` (user ``SLAY_Q_UI_USER``, admin by
default), and refuses to start without one. Put TLS in front of it (a proxy) when it is
reached over a network.
"""

from __future__ import annotations

import ipaddress
import os
import sys

import anyio
import click
import uvicorn
from starlette.applications import Starlette
from starlette.responses import RedirectResponse
from starlette.routing import Mount, Route

from slayq.cli.session import CliError, settings

DEFAULT_PORT = 7701


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:  # a host name: it may resolve to anything
        return False


@click.command("ui")
@click.option("--host", default="127.0.0.1", show_default=True, help="The address to serve on.")
@click.option("--port", default=DEFAULT_PORT, show_default=True, type=click.IntRange(1, 65535))
@click.option("--read-only", is_flag=True, help="Hide and refuse every action.")
def dashboard(host: str, port: int, read_only: bool) -> None:
    """Serve the dashboard at http://HOST:PORT/ui/ (Ctrl-C stops it)."""
    from slayq import ui
    from slayq.store.postgres import PostgresStore

    options = settings()
    url = options.database_url()
    password = os.environ.get("SLAY_Q_UI_PASSWORD") or None
    user = os.environ.get("SLAY_Q_UI_USER", "").strip() or "admin"
    if password is None and not is_loopback(host):
        raise CliError(
            f"serving the dashboard on {host} needs a password: set SLAY_Q_UI_PASSWORD "
            "(sign in as SLAY_Q_UI_USER, admin by default), or serve it on 127.0.0.1"
        )
    store = PostgresStore(url, schema=options.schema, min_size=1, max_size=4)
    auth = ui.basic_auth(user, password) if password else None

    async def home(request: object) -> RedirectResponse:
        return RedirectResponse("/ui/")

    app = Starlette(
        routes=[
            Route("/", home),
            Mount("/ui", ui.app(store, auth=auth, read_only=read_only)),
        ]
    )
    server = uvicorn.Server(
        uvicorn.Config(app, host=host, port=port, log_level="warning", lifespan="off")
    )
    shown = f"[{host}]" if ":" in host else host
    signed = f", sign in as {user}" if password else ""
    mode = ", read-only" if read_only else ""
    print(f"slayq ui: http://{shown}:{port}/ui/{signed}{mode}", file=sys.stderr, flush=True)

    async def main() -> None:
        try:
            await server.serve()
        finally:
            await store.aclose()

    anyio.run(main)
