"""``slayq audit list``: operator actions, newest first."""

from __future__ import annotations

from typing import TYPE_CHECKING

import click

from slayq.cli.output import emit_json, json_text, table, when
from slayq.cli.session import call

if TYPE_CHECKING:
    from slayq.client import Client
    from slayq.model import AuditEntry


@click.group()
def audit() -> None:
    """The audit log: who retried, reran, cancelled, paused."""


@audit.command("list")
@click.option("--limit", type=click.IntRange(1, 1000), default=100, show_default=True)
@click.option("--json", "as_json", is_flag=True, help="Print the entries as JSON.")
def list_audit(limit: int, as_json: bool) -> None:
    """List the latest operator actions.

    When, who (api, cli:user@host, ...), what, on what, newest first."""

    async def body(client: Client) -> list[AuditEntry]:
        return await client.list_audit(limit=limit)

    found = call(body)
    if as_json:
        emit_json(found)
        return
    rows = [
        [when(e.at), e.actor, e.action, e.target or "", json_text(e.detail) if e.detail else ""]
        for e in found
    ]
    table(["AT", "ACTOR", "ACTION", "TARGET", "DETAIL"], rows, empty="no action is recorded")
