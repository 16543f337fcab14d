"""``slayq queues list|pause|resume``: what each queue holds, and stopping its claims."""

from __future__ import annotations

from typing import TYPE_CHECKING

import click

from slayq.cli.output import ago, emit_json, table
from slayq.cli.session import actor, call

if TYPE_CHECKING:
    from slayq.client import Client
    from slayq.model import QueueInfo


@click.group()
def queues() -> None:
    """Queues: their runs by state; pause and resume claiming."""


@queues.command("list")
@click.option("--json", "as_json", is_flag=True, help="Print the queues as JSON.")
def list_queues(as_json: bool) -> None:
    """List the queues that have runs or are paused."""

    async def body(client: Client) -> list[QueueInfo]:
        return await client.list_queues()

    found = call(body)
    if as_json:
        emit_json(found)
        return
    rows = [
        [
            q.name,
            str(q.due),
            str(q.running),
            str(q.sleeping),
            str(q.waiting),
            ago(q.oldest_due_at).removesuffix(" ago"),
            "paused" if q.paused else "",
        ]
        for q in found
    ]
    headers = ["QUEUE", "DUE", "RUNNING", "SLEEPING", "WAITING", "OLDEST DUE", "PAUSED"]
    table(headers, rows, empty="no queue has runs")


@queues.command("pause")
@click.argument("name")
def pause(name: str) -> None:
    """Stop claims from queue NAME.

    No worker or server claims its runs until it is resumed; running runs go on."""

    async def body(client: Client) -> bool:
        return await client.pause_queue(name, actor=actor())

    changed = call(body)
    click.echo(f"queue {name}: {'paused' if changed else 'was paused already'}")


@queues.command("resume")
@click.argument("name")
def resume(name: str) -> None:
    """Let queue NAME be claimed again."""

    async def body(client: Client) -> bool:
        return await client.resume_queue(name, actor=actor())

    changed = call(body)
    click.echo(f"queue {name}: {'resumed' if changed else 'was not paused'}")
