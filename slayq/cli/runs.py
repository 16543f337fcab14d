"""``slayq runs ...``: find runs and read one."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import click

from slayq.cli.filters import filter_options
from slayq.cli.output import ago, emit_json, error_line, table
from slayq.cli.run_detail import show_run
from slayq.cli.session import call
from slayq.model import RunId

if TYPE_CHECKING:
    from slayq.client import Client
    from slayq.model import RunInfo, RunPage


@click.group()
def runs() -> None:
    """Find, read, retry, rerun and cancel runs."""


@runs.command("list")
@filter_options
@click.option(
    "--limit",
    type=click.IntRange(1, 1000),
    default=50,
    show_default=True,
    help="Runs per page.",
)
@click.option("--cursor", help="The next page's cursor, as the previous page printed it.")
@click.option("--json", "as_json", is_flag=True, help="Print the page as JSON.")
def list_runs(filters: dict[str, Any], limit: int, cursor: str | None, as_json: bool) -> None:
    """List runs, newest first, a page at a time."""

    async def body(client: Client) -> RunPage:
        return await client.list_runs(limit=limit, cursor=cursor, **filters)

    page = call(body)
    if as_json:
        emit_json(page)
        return
    rows = [
        [
            run.id,
            run.status,
            run.event,
            run.queue,
            f"{run.attempts}/{run.max_attempts}",
            ago(run.created_at),
            error_line(run.error),
        ]
        for run in page.runs
    ]
    headers = ["ID", "STATUS", "EVENT", "QUEUE", "ATTEMPTS", "CREATED", "ERROR"]
    table(headers, rows, empty="no run matches")
    if page.next_cursor is not None:
        click.echo(f"next page: --cursor {page.next_cursor}")


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
