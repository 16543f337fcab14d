"""``slayq workers list``: the processes holding leases."""

from __future__ import annotations

from typing import TYPE_CHECKING

import click

from slayq.cli.output import ago, emit_json, table
from slayq.cli.session import call

if TYPE_CHECKING:
    from slayq.client import Client
    from slayq.model import WorkerInfo


@click.group()
def workers() -> None:
    """Workers and servers that hold runs."""


@workers.command("list")
@click.option("--json", "as_json", is_flag=True, help="Print the workers as JSON.")
def list_workers(as_json: bool) -> None:
    """List the processes holding runs.

    Each owner (host:pid) holding leases, how many runs, and its last heartbeat."""

    async def body(client: Client) -> list[WorkerInfo]:
        return await client.list_workers()

    found = call(body)
    if as_json:
        emit_json(found)
        return
    rows = [[w.owner, str(w.runs_held), ago(w.last_heartbeat_at)] for w in found]
    table(["OWNER", "RUNS", "LAST HEARTBEAT"], rows, empty="no process holds a run")
