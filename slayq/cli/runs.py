"""``slayq runs ...``: find runs and read one."""

from __future__ import annotations

from typing import TYPE_CHECKING

import click

from slayq.cli.output import emit_json
from slayq.cli.run_detail import show_run
from slayq.cli.session import call
from slayq.model import RunId

if TYPE_CHECKING:
    from slayq.client import Client
    from slayq.model import RunInfo


@click.group()
def runs() -> None:
    """Find, read, retry, rerun and cancel runs."""


@runs.command("get")
@click.argument("run_id")
@click.option("--json", "as_json", is_flag=True, help="Print the run as JSON.")
def get(run_id: str, as_json: bool) -> None:
    """Show one run.

    Its status, data, result or error with traceback, steps, attempts, and what it
    waits for."""

    async def body(client: Client) -> RunInfo:
        return await client.get_run(RunId(run_id))

    run = call(body)
    if as_json:
        emit_json(run)
    else:
        show_run(run)
