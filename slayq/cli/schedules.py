"""``slayq schedules list``: the registered cron schedules."""

from __future__ import annotations

from typing import TYPE_CHECKING

import click

from slayq.cli.output import ago, emit_json, table, when
from slayq.cli.session import call

if TYPE_CHECKING:
    from slayq.client import Client
    from slayq.model import ScheduleInfo


@click.group()
def schedules() -> None:
    """Cron schedules registered by apps and workers."""


@schedules.command("list")
@click.option("--json", "as_json", is_flag=True, help="Print the schedules as JSON.")
def list_schedules(as_json: bool) -> None:
    """List the schedules with their next tick."""

    async def body(client: Client) -> list[ScheduleInfo]:
        return await client.list_schedules()

    found = call(body)
    if as_json:
        emit_json(found)
        return
    rows = [[s.event, s.cron, s.app or "", f"{when(s.next_at)} ({ago(s.next_at)})"] for s in found]
    table(["EVENT", "CRON", "APP", "NEXT"], rows, empty="no schedule is registered")
