"""``slayq``: the command line for operating slayq (also ``python -m slayq``).

    slayq [--database-url URL] [--schema NAME] NOUN VERB [OPTIONS]

Every command is a thin view over a ``slayq.Client`` call. Exit status: 0 success,
1 error (one line on stderr), 2 usage error, 3 unhealthy (``slayq health``).
"""

from __future__ import annotations

import click

from slayq.cli.audit import audit
from slayq.cli.dashboard import dashboard
from slayq.cli.database import migrate, purge
from slayq.cli.dev import dev
from slayq.cli.events import events
from slayq.cli.health import health
from slayq.cli.queues import queues
from slayq.cli.run_actions import cancel, rerun, retry
from slayq.cli.runs import runs
from slayq.cli.schedules import schedules
from slayq.cli.session import Settings
from slayq.cli.waits import waits
from slayq.cli.workers import workers

__all__ = ["cli", "main"]


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.option(
    "--database-url",
    envvar="SLAY_Q_DATABASE_URL",
    metavar="URL",
    help="The PostgreSQL database, postgresql://... (or SLAY_Q_DATABASE_URL).",
)
@click.option(
    "--schema",
    default="slayq",
    show_default=True,
    help="The schema slayq's tables live in.",
)
@click.version_option(package_name="slayq")
@click.pass_context
def cli(ctx: click.Context, database_url: str | None, schema: str) -> None:
    """Operate slayq: find and act on runs, queues, schedules and workers."""
    ctx.obj = Settings(url=(database_url or "").strip() or None, schema=schema)


for command in (retry, cancel, rerun):
    runs.add_command(command)
for command in (
    runs,
    waits,
    queues,
    schedules,
    workers,
    audit,
    events,
    health,
    migrate,
    purge,
    dashboard,
    dev,
):
    cli.add_command(command)


def main(argv: list[str] | None = None) -> None:
    """The ``slayq`` console script."""
    cli.main(args=argv, prog_name="slayq")
