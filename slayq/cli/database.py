"""``slayq migrate`` and ``slayq purge``: the schema, and old finished runs."""

from __future__ import annotations

from typing import TYPE_CHECKING

import anyio
import click

from slayq.cli.output import emit_json, progress, span
from slayq.cli.params import duration
from slayq.cli.session import CliError, call, settings
from slayq.errors import SlayqError

if TYPE_CHECKING:
    from datetime import timedelta

    from slayq.client import Client


@click.command()
@click.option("--schema", help="Migrate this schema (default: --schema of slayq, or slayq).")
def migrate(schema: str | None) -> None:
    """Create or upgrade the slayq schema. Stores also migrate when they open; this is
    for deploy pipelines that migrate first."""
    from slayq.store.postgres import migrate as apply

    options = settings()
    url = options.database_url()
    try:
        applied = anyio.run(lambda: apply(url, schema=schema or options.schema))
    except SlayqError as exc:
        raise CliError(str(exc)) from None
    click.echo(f"applied {len(applied)} migration(s): {', '.join(applied) or 'already up to date'}")


@click.command()
@click.option(
    "--older-than",
    metavar="DURATION",
    callback=duration,
    required=True,
    help="Remove runs that finished longer ago than this (30d, 12h, ...).",
)
@click.option(
    "--batch",
    type=click.IntRange(1, 100_000),
    default=1000,
    show_default=True,
    help="Runs removed per transaction.",
)
@click.option("--json", "as_json", is_flag=True, help="Print the count as JSON.")
def purge(older_than: timedelta, batch: int, as_json: bool) -> None:
    """Remove old finished runs.

    Removes the runs (completed, failed, cancelled) that finished longer ago than
    --older-than, in batches, then prunes the event log; progress goes to stderr."""

    async def body(client: Client) -> int:
        total = 0
        while True:
            deleted = await client.store.delete_finished(older_than, batch=batch)
            total += deleted
            if deleted < batch:
                return total
            progress(f"purge: {total} run(s) removed so far")

    total = call(body)
    if as_json:
        emit_json({"deleted": total})
    else:
        click.echo(f"removed {total} run(s) that finished more than {span(older_than)} ago")
