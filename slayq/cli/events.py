"""``slayq events send``: send an event as the app would, validated by its functions."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import click

from slayq.cli.output import emit_json
from slayq.cli.params import duration, json_value
from slayq.cli.session import call

if TYPE_CHECKING:
    from datetime import timedelta

    from slayq.client import Client
    from slayq.model import RunId


@click.group()
def events() -> None:
    """Send events."""


@events.command("send")
@click.argument("event")
@click.option(
    "--data", metavar="JSON", callback=json_value, help="The event's data as JSON (default: none)."
)
@click.option(
    "--app",
    envvar="SLAY_Q_APP",
    required=True,
    metavar="MODULE:CLIENT",
    help="The app's client (or SLAY_Q_APP); its functions validate --data.",
)
@click.option("--key", help="Idempotency key: the same event and key start one run only.")
@click.option(
    "--delay",
    metavar="DURATION",
    callback=duration,
    help="Start the run this much later (5m, 1h, ...).",
)
@click.option("--json", "as_json", is_flag=True, help="Print the run id as JSON.")
def send(
    event: str, data: Any, app: str, key: str | None, delay: timedelta | None, as_json: bool
) -> None:
    """Send EVENT; prints the id of the run it starts."""

    async def body(client: Client) -> RunId | None:
        return await client.send_event(event, data, key=key, delay=delay)

    run_id = call(body, app=app)
    if as_json:
        emit_json({"run_id": run_id})
    else:
        click.echo(run_id or "sent; it starts no run (it wakes or cancels runs only)")
