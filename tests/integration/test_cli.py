"""The ``slayq`` command line as a subprocess against a real PostgreSQL database.

Runs are made by a Client and a Worker in the test; each CLI call is ``python -m slayq``
(the same ``main`` as the ``slayq`` script). Calls that do not depend on each other run
at once, to keep the suite fast.
"""

from __future__ import annotations

import os
import pty
import subprocess
import sys
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import timedelta
from pathlib import Path
from typing import Any, NamedTuple

import anyio
import msgspec
import psycopg
import pytest

import slayq
from slayq.client import Client
from slayq.errors import RunNotFoundError
from slayq.model import RunId, RunInfo
from slayq.runtime.retry import RetryPolicy
from slayq.store.postgres import PostgresStore
from slayq.worker import Worker
from tests.integration import cli_app

pytestmark = pytest.mark.anyio

ROOT = Path(slayq.__file__).resolve().parents[1]
APP = "tests.integration.cli_app:client"
UNREACHABLE = "postgresql://postgres@127.0.0.1:1/test?connect_timeout=5"
FAST_RETRY = RetryPolicy(base=timedelta(milliseconds=50), cap=timedelta(milliseconds=100))


class Result(NamedTuple):
    code: int
    out: str
    err: str

    def json(self) -> Any:
        assert self.code == 0, self
        return msgspec.json.decode(self.out)

    def error_line(self) -> str:
        """The one line of stderr an error ends with (and nothing on stdout)."""
        lines = self.err.strip().splitlines()
        assert len(lines) == 1, self
        return lines[0]


async def cli(url: str | None, *args: str) -> Result:
    env = {k: v for k, v in os.environ.items() if not k.startswith("SLAY_Q_")}
    if url is not None:
        env["SLAY_Q_DATABASE_URL"] = url
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")]))
    done = await anyio.run_process(
        [sys.executable, "-m", "slayq", *args],
        env=env,
        cwd=ROOT,
        stdin=subprocess.DEVNULL,
        check=False,
    )
    return Result(done.returncode, done.stdout.decode(), done.stderr.decode())


async def together(*calls: tuple[str | None, tuple[str, ...]]) -> list[Result]:
    """Run CLI calls at once; their results in order."""
    results: list[Result | None] = [None] * len(calls)

    async def one(i: int, url: str | None, args: tuple[str, ...]) -> None:
        results[i] = await cli(url, *args)

    async with anyio.create_task_group() as group:
        for i, (url, args) in enumerate(calls):
            group.start_soon(one, i, url, args)
    return [r for r in results if r is not None]


@asynccontextmanager
async def app_client(url: str) -> AsyncIterator[Client]:
    client = Client(cli_app.client.functions, store=PostgresStore(url))
    await client.open()
    try:
        yield client
    finally:
        await client.aclose()


async def reaches(client: Client, run_id: RunId | None, *statuses: str) -> RunInfo:
    assert run_id is not None
    while True:
        run = await client.get_run(run_id)
        if run.status in statuses:
            return run
        await anyio.sleep(0.02)


async def run_to_end(client: Client, *texts: str) -> list[RunInfo]:
    """Send a ``cli/greet`` per text and work them off with a worker; the finished runs."""
    ids = [await client.send_event("cli/greet", {"text": text}) for text in texts]
    worker = Worker(client, retry_policy=FAST_RETRY, poll_interval=timedelta(milliseconds=20))
    async with anyio.create_task_group() as group:
        group.start_soon(worker.run)
        with anyio.fail_after(20):
            runs = [await reaches(client, run_id, "completed", "failed") for run_id in ids]
        worker.stop()
    return runs


async def test_runs_get_shows_a_run_as_json_and_for_people(pg_url: str) -> None:
    async with app_client(pg_url) as client:
        ok, bad = await run_to_end(client, "ada", "fail-1")
    unknown = str(uuid.uuid4())
    as_json, human, missing, no_url, down, no_id = await together(
        (pg_url, ("runs", "get", ok.id, "--json")),
        (pg_url, ("runs", "get", bad.id)),
        (pg_url, ("runs", "get", unknown, "--json")),
        (None, ("runs", "get", ok.id)),
        (UNREACHABLE, ("runs", "get", ok.id)),
        (pg_url, ("runs", "get")),
    )

    got = msgspec.convert(as_json.json(), RunInfo)
    assert (got.id, got.status, got.result) == (ok.id, "completed", {"greeting": "hello ADA"})
    assert [s.name for s in got.steps] == ["shout", "check"]
    assert all(s.started_at is not None and s.duration is not None for s in got.steps)
    assert [(a.number, a.outcome) for a in got.history] == [(1, "completed")]

    assert human.code == 0, human
    for fact in (bad.id, "failed (attempt 1/1)", "cli/greet", '{"text":"fail-1"}', "shout"):
        assert fact in human.out, (fact, human.out)
    assert "RuntimeError: boom: fail-1 (at step 'check')" in human.out
    assert "Traceback (most recent call last)" in human.out  # the error's traceback
    attempts = human.out.split("\nattempts\n")[1].splitlines()
    assert attempts[0].split()[:2] == ["#", "STARTED"]
    assert attempts[1].split()[0] == "1" and " failed " in attempts[1]
    assert "RuntimeError: boom: fail-1" in attempts[1]  # each attempt's error, in a line

    assert missing.code == 1 and missing.out == ""
    assert unknown in missing.error_line()
    assert no_url.code == 1
    assert "set SLAY_Q_DATABASE_URL=postgresql://" in no_url.error_line()
    assert down.code == 1 and "the database cannot be reached" in down.error_line()
    assert no_id.code == 2 and "Missing argument 'RUN_ID'" in no_id.err


async def test_events_send_validates_the_data_with_the_apps_functions(pg_url: str) -> None:
    sent, wrong_field, not_json, no_app, unknown = await together(
        (
            pg_url,
            ("events", "send", "cli/greet", "--data", '{"text": "hi"}', "--app", APP, "--json"),
        ),
        (pg_url, ("events", "send", "cli/greet", "--data", '{"txt": "hi"}', "--app", APP)),
        (pg_url, ("events", "send", "cli/greet", "--data", "{text: hi}", "--app", APP)),
        (pg_url, ("events", "send", "cli/greet", "--data", '{"text": "hi"}')),
        (pg_url, ("events", "send", "cli/greet", "--app", "tests.integration.cli_app:nothing")),
    )
    run_id = sent.json()["run_id"]
    async with app_client(pg_url) as client:
        run = await client.get_run(RunId(run_id))
    assert (run.event, run.status, run.data) == ("cli/greet", "queued", {"text": "hi"})

    assert wrong_field.code == 1 and "text" in wrong_field.error_line()
    assert not_json.code == 2 and "'--data': '{text: hi}' is not JSON" in not_json.err
    assert no_app.code == 2 and "Missing option '--app'" in no_app.err
    assert unknown.code == 1 and "has no 'nothing'" in unknown.error_line()


async def test_health_exits_3_when_unhealthy_and_changes_nothing(pg_url: str) -> None:
    healthy, pending, down, bad_age = await together(
        (pg_url, ("health",)),
        (pg_url, ("--schema", "not_migrated", "health", "--json")),
        (UNREACHABLE, ("health",)),
        (pg_url, ("health", "--max-due-age", "5 parsecs")),
    )
    assert healthy.code == 0, healthy
    assert "ok    database: reachable" in healthy.out
    assert "ok    migrations: up to date" in healthy.out

    assert pending.code == 3, pending
    report = msgspec.json.decode(pending.out)
    assert report["healthy"] is False
    assert {c["name"]: c["ok"] for c in report["checks"]} == {"database": True, "migrations": False}
    assert "0001_initial" in report["checks"][1]["detail"]
    async with await psycopg.AsyncConnection.connect(pg_url) as conn:
        cursor = await conn.execute("select to_regnamespace('not_migrated')")
        assert await cursor.fetchone() == (None,)  # the probe created nothing

    assert down.code == 3, down
    assert "FAIL  database:" in down.out and "cannot be reached" in down.out

    assert bad_age.code == 2 and "'5 parsecs'" in bad_age.err and "--max-due-age" in bad_age.err


async def test_migrate_and_purge(pg_url: str) -> None:
    async with app_client(pg_url) as client:
        runs = await run_to_end(client, "a", "b", "fail-c")
    migrated, other_schema, purged, bad_age = await together(
        (pg_url, ("migrate",)),
        (pg_url, ("migrate", "--schema", "second")),
        (pg_url, ("purge", "--older-than", "0s", "--batch", "2")),
        (pg_url, ("purge", "--older-than", "30 parsecs")),
    )
    assert migrated.code == 0 and "already up to date" in migrated.out
    assert other_schema.code == 0 and "0001_initial" in other_schema.out

    assert purged.code == 0, purged
    assert purged.out.strip() == "removed 3 run(s) that finished more than 0ms ago"
    assert "purge: 2 run(s) removed so far" in purged.err  # progress, on stderr
    async with app_client(pg_url) as client:
        for run in runs:
            with pytest.raises(RunNotFoundError):
                await client.get_run(run.id)

    assert bad_age.code == 2 and "'30 parsecs'" in bad_age.err


async def test_runs_list_filters_and_pages_and_names_bad_input(pg_url: str) -> None:
    async with app_client(pg_url) as client:
        ada, bob, failed = await run_to_end(client, "ada", "bob", "fail-1")
        waiting = await client.send_event("cli/approve", {"text": "x"})
    (
        only_failed,
        by_data,
        first_page,
        human,
        bad_status,
        bad_data,
        bad_since,
        bad_cursor,
    ) = await together(
        (pg_url, ("runs", "list", "--status", "failed", "--json")),
        (pg_url, ("runs", "list", "--data", 'text="bob"', "--event", "cli/greet", "--json")),
        (pg_url, ("runs", "list", "--limit", "3", "--json")),
        (pg_url, ("runs", "list", "--event", "cli/greet", "--since", "1h")),
        (pg_url, ("runs", "list", "--status", "nope")),
        (pg_url, ("runs", "list", "--data", "text=bob")),
        (pg_url, ("runs", "list", "--since", "yesterday")),
        (pg_url, ("runs", "list", "--cursor", "garbage")),
    )
    assert [r["id"] for r in only_failed.json()["runs"]] == [failed.id]
    assert only_failed.json()["next_cursor"] is None
    assert [r["id"] for r in by_data.json()["runs"]] == [bob.id]

    page = first_page.json()
    assert len(page["runs"]) == 3 and page["next_cursor"]
    second = (
        await cli(pg_url, "runs", "list", "--limit", "3", "--cursor", page["next_cursor"], "--json")
    ).json()
    listed = [r["id"] for r in page["runs"] + second["runs"]]
    assert listed == [waiting, failed.id, bob.id, ada.id]  # newest first, each once
    assert second["next_cursor"] is None

    assert human.code == 0, human
    header, *lines = human.out.splitlines()
    assert header.split() == ["ID", "STATUS", "EVENT", "QUEUE", "ATTEMPTS", "CREATED", "ERROR"]
    assert [line.split()[:2] for line in lines] == [
        [failed.id, "failed"],
        [bob.id, "completed"],
        [ada.id, "completed"],
    ]
    assert "RuntimeError: boom: fail-1" in lines[0]

    assert bad_status.code == 2 and "'nope' is not one of" in bad_status.err
    assert bad_data.code == 2 and "'text=bob': 'bob' is not JSON" in bad_data.err
    assert bad_since.code == 2 and "'yesterday' is neither a duration" in bad_since.err
    assert bad_cursor.code == 1 and "cursor 'garbage'" in bad_cursor.error_line()


async def test_retry_cancel_rerun_by_id_and_in_bulk_are_audited(pg_url: str) -> None:
    async with app_client(pg_url) as client:
        ada, fail_1, fail_2 = await run_to_end(client, "ada", "fail-1", "fail-2")
        waiting = [await client.send_event("cli/approve", {"text": t}) for t in ("x", "y")]
    select = ("--all-matching", "--event", "cli/approve")
    retried, completed, dry, refused, rerun, both, neither, filter_without_all = await together(
        (pg_url, ("runs", "retry", fail_1.id, "--json")),
        (pg_url, ("runs", "retry", ada.id)),
        (pg_url, ("runs", "cancel", *select, "--dry-run", "--json")),
        (pg_url, ("runs", "cancel", *select)),  # stdin is not a terminal: no --yes, no go
        (pg_url, ("runs", "rerun", ada.id, "--from-step", "check", "--app", APP, "--json")),
        (pg_url, ("runs", "cancel", ada.id, "--all-matching")),
        (pg_url, ("runs", "retry")),
        (pg_url, ("runs", "cancel", ada.id, "--status", "failed")),
    )
    assert retried.json() == [{"run_id": fail_1.id, "outcome": "retried"}]
    assert completed.code == 1 and ada.id in completed.error_line()
    assert dry.json() == {
        "action": "cancel",
        "dry_run": True,
        "count": 2,
        "filters": {"event": "cli/approve"},
    }
    assert refused.code == 1 and "refusing to cancel 2 run(s) without --yes" in refused.err
    assert both.code == 2 and "not both" in both.err
    assert neither.code == 2 and "give the RUN_IDs to retry" in neither.err
    assert (
        filter_without_all.code == 2 and "--status selects runs only with" in filter_without_all.err
    )

    cancelled, bulk_retried = await together(
        (pg_url, ("runs", "cancel", *select, "--yes")),
        (pg_url, ("runs", "retry", "--all-matching", "--status", "failed", "--yes", "--json")),
    )
    assert cancelled.out == "cancelled 2 run(s)\n", cancelled
    assert "cancel: working on the runs matching event=cli/approve" in cancelled.err
    assert bulk_retried.json()["count"] == 1  # fail-2; fail-1 was retried already

    async with app_client(pg_url) as client:
        assert [(await client.get_run(r)).status for r in (fail_1.id, fail_2.id)] == [
            "queued",
            "queued",
        ]
        assert {(await client.get_run(r)).status for r in waiting if r} == {"cancelled"}
        new = await client.get_run(rerun.json()["run_id"])
    assert (new.forked_from, new.status) == (ada.id, "queued")
    assert [s.name for s in new.steps] == ["shout"]  # copied up to, not including, "check"

    entries = (await cli(pg_url, "audit", "list", "--json")).json()
    actions = sorted(e["action"] for e in entries)
    assert actions == ["cancel_runs", "rerun", "retry", "retry_runs"]
    assert all(e["actor"].startswith("cli:") and "@" in e["actor"] for e in entries)


async def test_a_bulk_action_asks_on_a_terminal(pg_url: str) -> None:
    async with app_client(pg_url) as client:
        waiting = await client.send_event("cli/approve", {"text": "x"})
    env = {k: v for k, v in os.environ.items() if not k.startswith("SLAY_Q_")}
    env["SLAY_Q_DATABASE_URL"] = pg_url
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")]))
    master, terminal = pty.openpty()
    try:
        os.write(master, b"n\n")  # the operator answers no
        done = await anyio.run_process(
            [
                sys.executable,
                "-m",
                "slayq",
                "runs",
                "cancel",
                "--all-matching",
                "--status",
                "queued",
            ],
            env=env,
            cwd=ROOT,
            stdin=terminal,
            check=False,
        )
    finally:
        os.close(master)
        os.close(terminal)
    assert done.returncode == 1
    assert "cancel 1 run(s) matching status=queued? [y/N]" in done.stderr.decode()
    async with app_client(pg_url) as client:
        assert (await client.get_run(RunId(str(waiting)))).status == "queued"


async def test_waits_queues_schedules_and_workers(pg_url: str) -> None:
    cli_app.RELEASE.clear()
    async with app_client(pg_url) as client:
        worker = Worker(client, poll_interval=timedelta(milliseconds=20))
        async with anyio.create_task_group() as group:
            group.start_soon(worker.run)
            waiting = await client.send_event("cli/approve", {"text": "x"})
            held = await client.send_event("cli/hold", {})
            with anyio.fail_after(10):
                await reaches(client, waiting, "waiting")
                await reaches(client, held, "running")
            try:
                waits_json, waits_human, workers, schedules, paused = await together(
                    (pg_url, ("waits", "list", "--json")),
                    (pg_url, ("waits", "list", "--event", "cli/approved")),
                    (pg_url, ("workers", "list", "--json")),
                    (pg_url, ("schedules", "list")),
                    (pg_url, ("queues", "pause", "approvals")),
                )
                queues = (await cli(pg_url, "queues", "list", "--json")).json()
                resumed = await cli(pg_url, "queues", "resume", "approvals")
            finally:
                cli_app.RELEASE.set()
                worker.stop()

    assert waits_json.json() == [
        {
            "run_id": waiting,
            "step": "approval",
            "event": "cli/approved",
            "match_field": "text",
            "match_value": "x",
            "expires_at": waits_json.json()[0]["expires_at"],
        }
    ]
    assert waits_json.json()[0]["expires_at"] is not None
    assert str(waiting) in waits_human.out and 'text = "x"' in waits_human.out
    assert [(w["owner"], w["runs_held"]) for w in workers.json()] == [(worker.owner, 1)]
    assert "cli/tick" in schedules.out and "0 3 * * *" in schedules.out
    assert paused.out == "queue approvals: paused\n"
    by_name = {q["name"]: q for q in queues}
    assert by_name["approvals"]["paused"] is True and by_name["approvals"]["waiting"] == 1
    assert by_name["holding"]["running"] == 1
    assert resumed.out == "queue approvals: resumed\n"


async def test_health_fails_on_a_backlog_in_an_unpaused_queue(pg_url: str) -> None:
    async with app_client(pg_url) as client:
        await client.send_event("cli/approve", {"text": "x"})  # nobody serves "approvals"
        await anyio.sleep(0.1)
        late = await cli(pg_url, "health", "--max-due-age", "10ms")
        await client.pause_queue("approvals")
        paused = await cli(pg_url, "health", "--max-due-age", "10ms")
        lenient = await cli(pg_url, "health", "--max-due-age", "1h")
    assert late.code == 3, late
    assert "FAIL  queues: runs due longer than 10ms: approvals (due for" in late.out
    assert paused.code == 0, paused  # a paused queue is held on purpose
    assert lenient.code == 0 and "ok    queues: no run due longer than 1h" in lenient.out
