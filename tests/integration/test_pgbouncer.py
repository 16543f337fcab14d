"""slayq through a real PgBouncer in transaction mode (see tests/pgbouncer.py; the store
contract suite also runs through it, as the ``pgbouncer`` store in tests/conftest.py).

First what breaks without ``?pooler=transaction``, each half of the setting on its own;
then the worker, the server and the CLI with it, and LISTEN through a direct URL.
"""

from __future__ import annotations

import logging
import sys
import time
from contextlib import AbstractAsyncContextManager
from datetime import timedelta
from pathlib import Path
from typing import Any

import anyio
import httpx
import msgspec
import pytest

import slayq
from slayq import step
from slayq.client import Client
from slayq.errors import StoreError
from slayq.store.postgres import PostgresStore
from slayq.store.postgres._connect import Target
from tests.integration.servers import REPO, free_port, start_app, start_server, stop, wait_until_up
from tests.integration.workers import finished
from tests.integration.workers import running as run_functions
from tests.pgbouncer import PgBouncer

pytestmark = pytest.mark.anyio


class Ref(msgspec.Struct):
    ref: str


@slayq.function(event="steps", schema=Ref)
async def steps(ctx: slayq.Context[Ref]) -> slayq.Workflow:
    a = yield step.run("a", lambda: ctx.data.ref)
    b = yield step.run("b", lambda: a + "-b")
    c = yield step.run("c", lambda: b + "-c")
    yield slayq.finish(c)


@slayq.function(event="flow", schema=Ref, waits_on=[slayq.Match("approved", "ref")])
async def flow(ctx: slayq.Context[Ref]) -> slayq.Workflow:
    first = yield step.run("first", lambda: 1)
    yield step.sleep("nap", "300ms")
    approval = yield step.wait_for_event("approval", "approved", "20s")
    yield slayq.finish({"first": first, "by": approval["by"] if approval else None})


@slayq.function(event="ping")
async def ping(ctx: slayq.Context[slayq.EmptyEvent]) -> str:
    return "pong"


def running(store: PostgresStore, **options: Any) -> AbstractAsyncContextManager[Client]:
    return run_functions(store, [steps, flow, ping], **options)


def leaves(error: BaseException) -> list[BaseException]:
    if isinstance(error, BaseExceptionGroup):
        return [leaf for inner in error.exceptions for leaf in leaves(inner)]
    return [error]


async def worker_failure(store: PostgresStore) -> StoreError:
    """The error the worker stops with when its store is used through the pooler."""

    async def work() -> None:
        with anyio.fail_after(30):
            async with running(store) as client:
                for n in range(10):  # each statement runs more than psycopg's 5 times
                    await client.send_event("steps", {"ref": str(n)})
                await anyio.sleep_forever()

    with pytest.raises(BaseException) as caught:  # noqa: PT011 - the leaf is checked below
        await work()
    errors = [leaf for leaf in leaves(caught.value) if isinstance(leaf, StoreError)]
    assert errors, f"no StoreError in {caught.value!r}"
    return errors[0]


# -- without the setting ----------------------------------------------------------------


async def test_without_the_setting_the_schema_is_lost_between_transactions(
    pgbouncer: PgBouncer, pg_url: str
) -> None:
    error = await worker_failure(PostgresStore(pgbouncer.url(pg_url)))
    # The session's search_path went with the first transaction; the error says what to do.
    assert "does not exist" in str(error)
    assert "add ?pooler=transaction to the database URL" in str(error)


async def test_server_side_prepared_statements_break_through_the_pooler(
    pgbouncer: PgBouncer, pg_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The setting with its other half only: statements are prepared as psycopg's default.
    monkeypatch.setattr(Target, "connect_options", lambda self: {})
    error = await worker_failure(PostgresStore(pgbouncer.url(pg_url, pooler=True)))
    assert 'prepared statement "_pg3_' in str(error)
    assert "add ?pooler=transaction to the database URL" in str(error)


# -- with it ------------------------------------------------------------------------------


async def test_the_worker_runs_workflows_through_the_pooler(
    pgbouncer: PgBouncer, pg_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    store = PostgresStore(pgbouncer.url(pg_url, pooler=True))
    with caplog.at_level(logging.WARNING, logger="slayq.store"):
        async with running(store, poll_interval=timedelta(milliseconds=200)) as client:
            many = [await client.send_event("steps", {"ref": str(n)}) for n in range(20)]
            waiting = await client.send_event("flow", {"ref": "x"})
            await anyio.sleep(0.5)
            await client.send_event("approved", {"ref": "x", "by": "ann"})
            done = [await finished(client, run_id) for run_id in many]
            flowed = await finished(client, waiting)
    assert [run.result for run in done] == [f"{n}-b-c" for n in range(20)]
    assert (flowed.status, flowed.result) == ("completed", {"first": 1, "by": "ann"})
    assert [s.name for s in flowed.steps] == ["first", "nap", "approval"]
    # No listen_url: the worker says that it polls instead of listening.
    assert any("not listening for new work" in r.getMessage() for r in caplog.records)


async def test_listen_through_a_direct_url_wakes_the_worker_at_once(
    pgbouncer: PgBouncer, pg_url: str
) -> None:
    store = PostgresStore(pgbouncer.url(pg_url, pooler=True), listen_url=pg_url)
    async with running(store, poll_interval=timedelta(seconds=60)) as client:
        await anyio.sleep(0.5)  # let the worker go idle, waiting on its 60 s poll
        began = time.monotonic()
        run = await finished(client, await client.send_event("ping"), seconds=10)
        took = time.monotonic() - began
    assert run.result == "pong"
    assert took < 10  # with only the 60 s poll, it could not have run yet


async def test_without_a_listen_url_the_worker_waits_for_its_poll(
    pgbouncer: PgBouncer, pg_url: str
) -> None:
    # The counterpart of the test above: nothing listens through the pooler.
    store = PostgresStore(pgbouncer.url(pg_url, pooler=True))
    async with running(store, poll_interval=timedelta(seconds=60)) as client:
        await anyio.sleep(0.5)
        run_id = await client.send_event("ping")
        assert run_id is not None
        await anyio.sleep(2)
        assert (await client.get_run(run_id)).status == "queued"


# -- the server and the CLI -----------------------------------------------------------------


async def test_the_server_delivers_through_the_pooler(
    pgbouncer: PgBouncer, pg_url: str, tmp_path: Path
) -> None:
    pooled = pgbouncer.url(pg_url, pooler=True)
    config = tmp_path / "slay-config.json"
    config.write_text('{"queues": {"general": {"concurrency": 10}, "mail": {"concurrency": 2}}}')
    app_port, server_port = free_port(), free_port()
    server = start_server(
        pooled,
        server_port,
        config,
        tmp_path / "server.out",
        cron_url=f"http://127.0.0.1:{app_port}/api/slay-q",
        env={"SLAY_Q_LISTEN_URL": pg_url},
    )
    app = start_app(pooled, app_port, tmp_path / "app.out")
    try:
        wait_until_up(f"http://127.0.0.1:{server_port}/health", server)
        wait_until_up(f"http://127.0.0.1:{app_port}/runs/x", app)
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{app_port}") as http:

            async def trigger(event: str, data: dict[str, Any] | None = None) -> str:
                response = await http.post(f"/trigger/{event}", json=data or {})
                assert response.status_code == 200, response.text
                run_id: str = response.json()["run_id"]
                return run_id

            async def result(run_id: str) -> Any:
                with anyio.fail_after(60):
                    while True:
                        run = (await http.get(f"/runs/{run_id}")).json()
                        if run["status"] in ("completed", "failed", "cancelled"):
                            return run["status"], run["result"]
                        await anyio.sleep(0.05)

            three = await trigger("test/event", {"test_string": "pooled"})
            sleep = await trigger("testing/sleep-test")
            waiter = await trigger("testing/waits-on-test", {"waiting_for_id": "w1"})
            caller = await trigger("test/caller")
            await anyio.sleep(0.5)
            await trigger("testing/waited-for-test", {"waiting_for_id": "w1"})
            assert await result(three) == ("completed", "hello world pooled")
            assert await result(sleep) == ("completed", "hello world")
            assert await result(waiter) == ("completed", {"fired": True, "vals": [12, "cool"]})
            assert await result(caller) == ("completed", "hello world")
    finally:
        stop(app, server)
    output = (tmp_path / "server.out").read_text()
    assert "does not exist" not in output
    assert "not listening for new work" not in output  # it had SLAY_Q_LISTEN_URL


async def test_the_command_line_works_through_the_pooler(pgbouncer: PgBouncer, pg_url: str) -> None:
    env = {"SLAY_Q_DATABASE_URL": pgbouncer.url(pg_url, pooler=True), "PATH": "/usr/bin:/bin"}
    outputs = []
    for command in (["migrate"], ["health"], ["runs", "list"], ["queues", "list"]):
        with anyio.fail_after(60):
            done = await anyio.run_process(
                [sys.executable, "-m", "slayq", *command],
                cwd=REPO,
                env=env | {"PYTHONPATH": str(REPO)},
                check=False,
            )
        assert done.returncode == 0, (command, done.stdout, done.stderr)
        outputs.append(done.stdout.decode())
    assert outputs[0].startswith("applied 0 migration(s)")
    assert "ok    database: reachable" in outputs[1]
