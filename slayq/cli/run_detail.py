"""``slayq runs get`` for people: the run, its steps, its attempts, what it waits for."""

from __future__ import annotations

from typing import TYPE_CHECKING

import click

from slayq.cli.output import ago, error_line, fields, json_text, span, table, when
from slayq.runtime.flow_status import describe_flow

if TYPE_CHECKING:
    from slayq.model import AttemptInfo, PendingStep, RunInfo, StepRecord


def show_run(run: RunInfo) -> None:
    fields(
        [
            ("run", run.id),
            ("status", f"{run.status} (attempt {run.attempts}/{run.max_attempts})"),
            ("event", run.event),
            ("queue", f"{run.queue}, priority {run.priority}"),
            ("key", run.key or ""),
            ("parent", f"{run.parent.run_id} (step {run.parent.step!r})" if run.parent else ""),
            ("forked from", run.forked_from or ""),
            ("created", f"{when(run.created_at)} ({ago(run.created_at)})"),
            ("due", when(run.run_at) if run.status in ("queued", "sleeping") else ""),
            ("flow control", "\n".join(describe_flow(run.event, run.flow))),
            ("held back", run.held_back or ""),
            ("updated", when(run.updated_at)),
            ("finished", when(run.finished_at)),
            ("data", json_text(run.data)),
            ("result", json_text(run.result) if run.status == "completed" else ""),
            ("error", _error(run)),
        ]
    )
    _steps(run.steps)
    _attempts(run.history)
    _pending(run.pending)


def _error(run: RunInfo) -> str:
    if run.error is None:
        return ""
    where = f" (at step {run.error.step!r})" if run.error.step else ""
    traceback = run.error.traceback.rstrip()
    return error_line(run.error) + where + (f"\n{traceback}" if traceback else "")


def _steps(steps: list[StepRecord]) -> None:
    click.echo("\nsteps")
    rows = [
        [
            step.name,
            step.kind,
            str(step.attempt or ""),
            when(step.started_at or step.finished_at),
            span(step.duration),
            error_line(step.error) if step.error else json_text(step.output),
        ]
        for step in steps
    ]
    headers = ["NAME", "KIND", "ATTEMPT", "STARTED", "DURATION", "OUTPUT"]
    table(headers, rows, empty="(none finished)", indent="  ")


def _attempts(history: list[AttemptInfo]) -> None:
    click.echo("\nattempts")
    rows = [
        [
            str(a.number),
            when(a.started_at),
            span(a.ended_at - a.started_at) if a.ended_at else "",
            a.owner or "",
            a.outcome,
            f"{a.replayed} replayed, {a.executed} executed",
            error_line(a.error),
        ]
        for a in history
    ]
    headers = ["#", "STARTED", "DURATION", "OWNER", "OUTCOME", "STEPS", "ERROR"]
    table(headers, rows, empty="(none yet)", indent="  ")


def _pending(pending: list[PendingStep]) -> None:
    if not pending:
        return
    click.echo("\nwaiting for")
    for item in pending:
        click.echo(f"  {item.kind} {item.name!r}: {_awaits(item)}")


def _awaits(item: PendingStep) -> str:
    if item.kind == "sleep":
        what = "until"
    elif item.kind == "wait":
        what = f"event {item.event!r}"
        if item.match_field is not None:
            what += f" with {item.match_field} = {json_text(item.match_value)}"
        what += ", at most until"
    else:
        child = item.child.id if item.child else "?"
        what = f"run {child} ({item.event!r}), at most until"
    if item.until is not None:
        return f"{what} {when(item.until)} ({ago(item.until)})"
    if item.delay is not None:
        return f"{what} {span(item.delay)} after it suspended"
    return what.removesuffix(", at most until").removesuffix(" until") + " (no deadline)"
