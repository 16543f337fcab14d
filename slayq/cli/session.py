"""Where a command's client comes from, who its actions are recorded as, and how errors end.

Every command runs one coroutine on a ``slayq.Client`` over a ``PostgresStore`` (the CLI
needs no functions, except to validate the data of events it sends or of runs it
reruns: then ``--app`` names the app's client). A ``SlayqError`` (a run that does not
exist, a database that cannot be reached, refused input) ends the command with exit
status 1 and its message on one line of stderr, never a traceback.
"""

from __future__ import annotations

import getpass
import socket
from dataclasses import dataclass
from typing import TYPE_CHECKING, TypeVar

import anyio
import click

from slayq.errors import SlayqError

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable

    from slayq.client import Client

T = TypeVar("T")

EXAMPLE_URL = "postgresql://slayq:secret@db.internal:5432/app"


class CliError(click.ClickException):
    """Exit status 1 with ``Error: <message>`` as ONE line on stderr."""

    def __init__(self, message: str) -> None:
        super().__init__(" ".join(message.split()))


@dataclass(frozen=True)
class Settings:
    """The root options every command shares."""

    url: str | None
    schema: str

    def database_url(self) -> str:
        if not self.url:
            raise CliError(
                "no database: run `slayq dev --app myapp.jobs:client` for a local PostgreSQL, "
                "or set SLAY_Q_DATABASE_URL=postgresql://... or pass "
                f"--database-url (like {EXAMPLE_URL})"
            )
        return self.url


def settings() -> Settings:
    """The current invocation's root options."""
    found = click.get_current_context().find_object(Settings)
    if found is None:  # a command invoked outside the `slayq` group
        raise RuntimeError("slayq CLI command run without its root group")
    return found


def actor() -> str:
    """Who the audit log records operator actions by: ``cli:<user>@<host>``."""
    try:
        user = getpass.getuser()
    except (KeyError, OSError):  # no name for this uid (a bare container)
        user = "unknown"
    return f"cli:{user}@{socket.gethostname()}"


def make_client(url: str, schema: str, app: str | None) -> Client:
    """A client on ``url``: with the functions (and endpoint, app name, limits) of the
    app's client at ``app`` (``module:attribute``), or with none."""
    from slayq.client import Client
    from slayq.store.postgres import PostgresStore  # the one place that picks Postgres

    store = PostgresStore(url, schema=schema, min_size=1, max_size=2)
    if app is None:
        return Client([], store=store, app="slayq-cli")
    from slayq.worker.__main__ import load_client

    loaded = load_client(app)
    return Client(
        loaded.functions,
        store=store,
        endpoint=loaded.endpoint,
        app=loaded.app,
        limits=loaded.registry.limits,
    )


def call(body: Callable[[Client], Awaitable[T]], *, app: str | None = None) -> T:
    """Run ``body`` on a client for the current invocation, closing it after; a
    ``SlayqError`` becomes a ``CliError``.

    The store is not opened by the client (no schedules are registered); its first call
    connects it, applying any pending migrations as every store does.
    """
    options = settings()
    url = options.database_url()

    async def main() -> T:
        client = make_client(url, options.schema, app)
        try:
            return await body(client)
        finally:
            await client.store.aclose()

    try:
        return anyio.run(main)
    except SlayqError as exc:
        raise CliError(str(exc)) from None
