"""``slayq health``: one probe for the database, its schema and the queues' backlog.

Exit status 0 when healthy and 3 when not (1 stays for the CLI's own errors), so a
container or load-balancer probe can run it as is.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import anyio
import click
import msgspec

from slayq.cli.output import emit_json
from slayq.cli.params import duration
from slayq.cli.session import settings
from slayq.errors import SlayqError

if TYPE_CHECKING:
    from datetime import timedelta

UNHEALTHY = 3


class Check(msgspec.Struct, frozen=True):
    name: str
    ok: bool
    detail: str


@click.command()
@click.option(
    "--max-due-age",
    metavar="DURATION",
    callback=duration,
    default="5m",
    show_default=True,
    help="Unhealthy when a run of an unpaused queue has been due this long.",
)
@click.option("--json", "as_json", is_flag=True, help="Print the checks as JSON.")
def health(max_due_age: timedelta, as_json: bool) -> None:
    """Check that the database answers, that its schema is up to date and that no queue
    has runs due longer than --max-due-age. Exit 0 healthy, 3 unhealthy."""
    options = settings()
    checks = anyio.run(_checks, options.database_url(), options.schema, max_due_age)
    healthy = all(check.ok for check in checks)
    if as_json:
        emit_json({"healthy": healthy, "checks": checks})
    else:
        for check in checks:
            click.echo(f"{'ok' if check.ok else 'FAIL'}  {check.name}: {check.detail}")
    if not healthy:
        raise SystemExit(UNHEALTHY)


async def _checks(url: str, schema: str, max_due_age: timedelta) -> list[Check]:
    from slayq.store.postgres import pending_migrations

    try:
        pending = await pending_migrations(url, schema=schema)
    except SlayqError as exc:
        return [Check("database", False, " ".join(str(exc).split()))]
    checks = [Check("database", True, "reachable")]
    if pending:
        # Opening a store would apply them: a probe changes nothing.
        checks.append(Check("migrations", False, f"pending: {', '.join(pending)}"))
        return checks
    checks.append(Check("migrations", True, "up to date"))
    return checks
