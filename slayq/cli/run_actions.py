"""``slayq runs retry|cancel|rerun``: act on runs by id, or on every run a filter selects.

Bulk forms (``--all-matching``) count the selection first; without ``--yes`` they ask
for confirmation on a terminal and refuse when stdin is not one (a script must say
``--yes``). ``--dry-run`` only counts. Every action is recorded in the audit log as done
by ``cli:<user>@<host>``.
"""

from __future__ import annotations

import sys
from typing import TYPE_CHECKING, Any

import click

from slayq.cli.filters import describe, filter_options
from slayq.cli.output import emit_json, progress
from slayq.cli.params import json_value
from slayq.cli.session import CliError, actor, call
from slayq.errors import SlayqError
from slayq.model import RunId

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable

    from slayq.client import Client


def _bulk_options(command: Callable[..., None]) -> Callable[..., None]:
    for option in reversed(
        [
            click.argument("run_ids", nargs=-1),
            click.option(
                "--all-matching",
                is_flag=True,
                help="Act on every run the filters select instead of the RUN_IDs given.",
            ),
            click.option("--dry-run", is_flag=True, help="Only count the runs selected."),
            click.option("--yes", "-y", is_flag=True, help="Do not ask for confirmation."),
            click.option("--json", "as_json", is_flag=True, help="Print the outcome as JSON."),
        ]
    ):
        command = option(command)
    return filter_options(command)


@click.command("retry")
@_bulk_options
def retry(filters: dict[str, Any], run_ids: tuple[str, ...], **options: bool) -> None:
    """Retry failed or cancelled runs.

    They run again from where they stopped: the same run, finished steps kept, attempts
    renewed."""

    async def one(client: Client, run_id: RunId) -> str:
        await client.retry(run_id, actor=actor())
        return "retried"

    async def bulk(client: Client, dry_run: bool) -> int:
        return await client.retry_runs(dry_run=dry_run, actor=actor(), **filters)

    _act("retry", "retried", filters, run_ids, one, bulk, **options)


@click.command("cancel")
@_bulk_options
def cancel(filters: dict[str, Any], run_ids: tuple[str, ...], **options: bool) -> None:
    """Cancel unfinished runs.

    They are kept, marked cancelled; a run that had finished is reported as such."""

    async def one(client: Client, run_id: RunId) -> str:
        done = await client.cancel(run_id, actor=actor())
        return "cancelled" if done else "already finished"

    async def bulk(client: Client, dry_run: bool) -> int:
        return await client.cancel_runs(dry_run=dry_run, actor=actor(), **filters)

    _act("cancel", "cancelled", filters, run_ids, one, bulk, **options)


def _act(
    verb: str,
    done: str,
    filters: dict[str, Any],
    run_ids: tuple[str, ...],
    one: Callable[[Client, RunId], Awaitable[str]],
    bulk: Callable[[Client, bool], Awaitable[int]],
    *,
    all_matching: bool,
    dry_run: bool,
    yes: bool,
    as_json: bool,
) -> None:
    if all_matching:
        if run_ids:
            raise click.UsageError("give RUN_IDs or --all-matching, not both")
        _act_on_matching(verb, done, filters, bulk, dry_run=dry_run, yes=yes, as_json=as_json)
        return
    if not run_ids:
        raise click.UsageError(f"give the RUN_IDs to {verb}, or --all-matching with filters")
    if filters or dry_run:
        given = ", ".join(f"--{name}" for name in filters) or "--dry-run"
        raise click.UsageError(f"{given} selects runs only with --all-matching")
    _act_on_ids(run_ids, one, as_json=as_json)


def _act_on_ids(
    run_ids: tuple[str, ...],
    one: Callable[[Client, RunId], Awaitable[str]],
    *,
    as_json: bool,
) -> None:
    async def body(client: Client) -> list[dict[str, str]]:
        outcomes = []
        for run_id in run_ids:
            try:
                outcome = {"run_id": run_id, "outcome": await one(client, RunId(run_id))}
            except SlayqError as exc:
                outcome = {"run_id": run_id, "outcome": "error", "error": str(exc)}
            outcomes.append(outcome)
        return outcomes

    outcomes = call(body)
    if as_json:
        emit_json(outcomes)
    failed = [o for o in outcomes if o["outcome"] == "error"]
    for outcome in outcomes:
        if not as_json and outcome["outcome"] != "error":
            click.echo(f"{outcome['run_id']}: {outcome['outcome']}")
    for outcome in failed[:-1]:
        progress(f"Error: {' '.join(outcome['error'].split())}")
    if failed:
        raise CliError(failed[-1]["error"])


def _act_on_matching(
    verb: str,
    done: str,
    filters: dict[str, Any],
    bulk: Callable[[Client, bool], Awaitable[int]],
    *,
    dry_run: bool,
    yes: bool,
    as_json: bool,
) -> None:
    def report(count: int, *, dry: bool) -> None:
        if as_json:
            emit_json({"action": verb, "dry_run": dry, "count": count, "filters": filters})
        elif dry:
            click.echo(f"{count} run(s) would be {done}")
        else:
            click.echo(f"{done} {count} run(s)")

    if dry_run or not yes:
        count = call(lambda client: bulk(client, True))
        if dry_run or count == 0:
            report(count, dry=dry_run)
            return
        question = f"{verb} {count} run(s) matching {describe(filters)}?"
        if not sys.stdin.isatty():
            raise CliError(
                f"refusing to {verb} {count} run(s) without --yes: stdin is not a terminal "
                "to confirm on (check the selection with --dry-run)"
            )
        click.confirm(question, err=True, abort=True)
    progress(f"{verb}: working on the runs matching {describe(filters)}...")
    report(call(lambda client: bulk(client, False)), dry=False)


@click.command("rerun")
@click.argument("run_id")
@click.option("--from-step", help="Run this step and the ones after it again (default: all).")
@click.option(
    "--data",
    metavar="JSON",
    callback=json_value,
    help="Event data for the new run (default: the original's).",
)
@click.option(
    "--app",
    envvar="SLAY_Q_APP",
    required=True,
    metavar="MODULE:CLIENT",
    help="The app's client (or SLAY_Q_APP): the run's function is taken from it.",
)
@click.option("--json", "as_json", is_flag=True, help="Print the new run's id as JSON.")
def rerun(run_id: str, from_step: str | None, data: Any, app: str, as_json: bool) -> None:
    """Rerun a run as a new one, from a step.

    Starts a NEW run of RUN_ID's function with its finished steps up to --from-step
    copied (they do not run again); it records the run it was forked from."""

    async def body(client: Client) -> RunId:
        return await client.rerun(RunId(run_id), from_step=from_step, data=data, actor=actor())

    new = call(body, app=app)
    if as_json:
        emit_json({"run_id": new, "forked_from": run_id})
    else:
        click.echo(new)
