"""Runs that outgrow the body limits, through the server and an app as real processes.

Event data rides once on the wire, and a run's memo once per attempt; a run that cannot
fit fails at once, for good, with an error that names the sizes and the limit to raise,
and no handler runs twice.
"""

from __future__ import annotations

import sys
from collections.abc import AsyncIterator, Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from slayq.client import Client
from slayq.model import RunId, RunInfo
from slayq.store.postgres import PostgresStore
from tests.faults.processes import wait_for, write_config
from tests.integration import sizes_app
from tests.integration.servers import SECRET, free_port, spawn, start_server, stop, wait_until_up

pytestmark = pytest.mark.anyio


class Stack:
    def __init__(self, client: Client, log: Path, outputs: list[Path]) -> None:
        self.client = client
        self.log = log
        self.outputs = outputs  # the server's and the app's, shown if a run never ends

    async def send(self, event: str, **data: int) -> RunId:
        run_id = await self.client.send_event(event, data)
        assert run_id is not None
        return run_id

    async def finished(self, run_id: RunId, seconds: float = 60) -> RunInfo:
        async def done() -> bool:
            return (await self.client.get_run(run_id)).status in ("completed", "failed")

        try:
            await wait_for(done, seconds=seconds, what=f"run {run_id} to finish")
        except AssertionError as exc:
            run = await self.client.get_run(run_id)
            tails = "\n".join(
                f"--- {path.name}:\n" + "\n".join(path.read_text().splitlines()[-20:])
                for path in self.outputs
                if path.exists()
            )
            raise AssertionError(
                f"{exc}: {run.status}, attempt {run.attempts}, error {run.error}\n{tails}"
            ) from exc
        return await self.client.get_run(run_id)

    def ran(self) -> list[str]:
        return self.log.read_text().splitlines() if self.log.exists() else []


@contextmanager
def stack(pg_url: str, tmp_path: Path, *, server_limit: str, app_limit: str) -> Iterator[Stack]:
    config = write_config(tmp_path / "slay-config.json", general=10)
    app_port, server_port = free_port(), free_port()
    log = tmp_path / "handlers.log"
    app = spawn(
        [
            sys.executable,
            "-m",
            "uvicorn",
            "tests.integration.sizes_app:app",
            "--port",
            str(app_port),
            "--host",
            "127.0.0.1",
            "--log-level",
            "warning",
        ],
        {
            "SLAY_Q_DATABASE_URL": pg_url,
            "SLAY_Q_SECRET": SECRET,
            "APP_URL": f"http://127.0.0.1:{app_port}",
            "APP_BODY_LIMIT": app_limit,
            "SIZES_LOG": str(log),
        },
        tmp_path / "app.out",
    )
    server = start_server(
        pg_url,
        server_port,
        config,
        tmp_path / "server.out",
        env={"SLAY_Q_BODY_LIMIT": server_limit},
    )
    try:
        wait_until_up(f"http://127.0.0.1:{server_port}/health", server)
        # The app too (any answer will do): a run the server delivers to an app not
        # listening yet is released with the delivery error, which the run then keeps.
        wait_until_up(f"http://127.0.0.1:{app_port}/api/slay-q", app)
        client = Client(
            sizes_app.client.functions,
            store=PostgresStore(pg_url),
            endpoint=f"http://127.0.0.1:{app_port}/api/slay-q",
        )
        yield Stack(client, log, [tmp_path / "server.out", tmp_path / "app.out"])
    finally:
        stop(app, server)


@pytest.fixture
async def roomy(pg_url: str, tmp_path: Path) -> AsyncIterator[Stack]:
    with stack(pg_url, tmp_path, server_limit="12MiB", app_limit="12MiB") as s:
        async with s.client:
            yield s


async def test_sent_event_data_rides_once_so_25_events_of_400_kb_fit_in_12_mib(
    roomy: Stack,
) -> None:
    run_id = await roomy.send("sizes/fan-out", count=25)  # 10 MB once, 20 MB if twice
    run = await roomy.finished(run_id)
    assert (run.status, run.result, run.error) == ("completed", 25, None)


async def test_an_answer_over_the_apps_limit_fails_the_run_for_good_naming_the_step(
    roomy: Stack,
) -> None:
    run_id = await roomy.send("sizes/fan-out", count=45)  # 18 MB of sent events
    run = await roomy.finished(run_id)
    assert (run.status, run.attempts) == ("failed", 1)
    assert run.error is not None
    assert (run.error.type, run.error.step) == ("BodyTooLargeError", "fan-out")
    assert "over the app's limit of 12.0 MiB" in run.error.message
    assert "Client(body_limits=" in run.error.message
    assert roomy.ran() == ["make"]  # the step before it did not run again


async def test_a_run_over_the_servers_limit_fails_for_good_on_its_answer_or_its_memo(
    pg_url: str, tmp_path: Path
) -> None:
    with stack(pg_url, tmp_path, server_limit="1MiB", app_limit="8MiB") as s:
        async with s.client:
            answer = await s.send("sizes/outputs", count=1, size=2_000_000)
            memo = await s.send("sizes/outputs", count=3, size=600_000, nap_after=1)
            big_answer, big_memo = await s.finished(answer), await s.finished(memo)
            # Within one attempt the memo is delivered once, at its start: a run whose
            # memo outgrows the limit goes on to its end as long as it never resumes.
            unbroken = await s.finished(await s.send("sizes/outputs", count=3, size=600_000))
    assert (unbroken.status, unbroken.attempts) == ("completed", 1)
    assert (big_answer.status, big_answer.attempts) == ("failed", 1)
    assert big_answer.error is not None
    assert big_answer.error.type == "BodyTooLargeError"
    assert "over the server's limit of 1.0 MiB" in big_answer.error.message
    assert "SLAY_Q_BODY_LIMIT" in big_answer.error.message
    assert (big_memo.status, big_memo.attempts) == ("failed", 1)
    assert [step.name for step in big_memo.steps] == ["step-0", "step-1", "nap"]
    assert big_memo.error is not None
    assert big_memo.error.type == "BodyTooLargeError"
    assert "SLAY_Q_BODY_LIMIT" in big_memo.error.message
    # step-0 and step-1 committed, then the run slept; the delivery that resumes it would
    # carry a memo over the limit, so the run failed for good: nothing re-ran.
    assert sorted(s.ran()) == ["step-0", "step-0", "step-0", "step-1", "step-1", "step-2"]


async def test_a_delivery_the_app_refuses_as_too_large_fails_the_run_for_good(
    pg_url: str, tmp_path: Path
) -> None:
    with stack(pg_url, tmp_path, server_limit="8MiB", app_limit="1MiB") as s:
        async with s.client:
            # It sleeps after step-1: resuming, it is delivered with its 1.2 MB memo.
            run = await s.finished(
                await s.send("sizes/outputs", count=3, size=600_000, nap_after=1)
            )
    assert (run.status, run.attempts) == ("failed", 1)
    assert run.error is not None
    assert run.error.type == "BodyTooLargeError"
    assert "413" in run.error.message
    assert "Client(body_limits=" in run.error.message
