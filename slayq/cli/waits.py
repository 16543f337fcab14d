"""``slayq waits list``: the runs waiting for an event."""

from __future__ import annotations

from typing import TYPE_CHECKING

import click

from slayq.cli.output import ago, emit_json, json_text, table, when
from slayq.cli.session import call

if TYPE_CHECKING:
    from slayq.client import Client
    from slayq.model import WaitInfo


@click.group()
def waits() -> None:
    """Pending waits for events, across runs."""


@waits.command("list")
@click.option("--event", help="Only waits for this event.")
@click.option("--limit", type=click.IntRange(1, 1000), default=100, show_default=True)
@click.option("--json", "as_json", is_flag=True, help="Print the waits as JSON.")
def list_waits(event: str | None, limit: int, as_json: bool) -> None:
    """List pending waits, soonest deadline first."""

    async def body(client: Client) -> list[WaitInfo]:
        return await client.list_waits(event=event, limit=limit)

    found = call(body)
    if as_json:
        emit_json(found)
        return
    rows = [
        [
            w.run_id,
            w.step,
            w.event,
            f"{w.match_field} = {json_text(w.match_value)}" if w.match_field else "",
            f"{when(w.expires_at)} ({ago(w.expires_at)})" if w.expires_at else "never",
        ]
        for w in found
    ]
    table(["RUN", "STEP", "EVENT", "MATCH", "EXPIRES"], rows, empty="no run is waiting")
