"""``slayq health``: one probe for the database, its schema and the queues' backlog.

Exit status 0 when healthy and 3 when not (1 stays for the CLI's own errors), so a
container or load-balancer probe can run it as is.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import TYPE_CHECKING

import anyio
import click
import msgspec

from slayq.cli.output import emit_json, span
from slayq.cli.params import duration
from slayq.cli.session import make_client, settings
from slayq.errors import SlayqError

if TYPE_CHECKING:
    from datetime import timedelta

    from slayq.client import Client

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
    """Probe the database, migrations and backlog.

    Checks that the database answers, that its schema is up to date (read-only) and that
    no queue that is not paused has a run due longer than --max-due-age. Exit status 0
    healthy, 3 unhealthy."""
    options = settings()
    checks = anyio.run(_checks, options.database_url(), options.schema, max_due_age)
    healthy = all(check.ok for check in checks)
    if as_json:
        emit_json({"healthy": healthy, "checks": checks})
    else:
        for check in checks:
            click.echo(f"{'ok' if check.ok else 'FAIL':<4}  {check.name}: {check.detail}")
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
    client = make_client(url, schema, None)
    try:
        checks.append(await _backlog(client, max_due_age))
    except SlayqError as exc:
        checks.append(Check("queues", False, " ".join(str(exc).split())))
    finally:
        await client.store.aclose()
    return checks


async def _backlog(client: Client, max_due_age: timedelta) -> Check:
    """Queues whose oldest due run waits longer than ``max_due_age``: nothing serves them,
    or too little does. A paused queue is left out: it is held on purpose."""
    now = datetime.now(UTC)
    late = [
        f"{q.name} (due for {span(now - q.oldest_due_at)})"
        for q in await client.list_queues()
        if not q.paused and q.oldest_due_at is not None and now - q.oldest_due_at > max_due_age
    ]
    if late:
        return Check(
            "queues", False, f"runs due longer than {span(max_due_age)}: {', '.join(late)}"
        )
    return Check("queues", True, f"no run due longer than {span(max_due_age)}")
