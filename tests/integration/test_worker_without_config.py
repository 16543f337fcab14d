"""``python -m slayq.worker`` without a config file: every queue, ``--concurrency`` runs at
once in the process and no limit across processes; and the options that need a config."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from slayq.client import Client
from slayq.errors import ConfigError
from slayq.store.postgres import PostgresStore
from slayq.worker.__main__ import parse_args, queue_limits
from tests.integration.servers import REPO, stop
from tests.integration.telemetry_app import nap, ok, parked
from tests.integration.workers import finished


def start_worker(url: str, output: Path, *options: str) -> subprocess.Popen[bytes]:
    command = [sys.executable, "-m", "slayq.worker", "tests.integration.telemetry_app:client"]
    with open(output, "ab") as sink:  # the child keeps its own copy
        return subprocess.Popen(
            [*command, *options],
            cwd=REPO,
            env={**os.environ, "SLAY_Q_DATABASE_URL": url},
            stdout=sink,
            stderr=subprocess.STDOUT,
        )


@pytest.mark.anyio
async def test_a_worker_without_a_config_runs_every_queue(pg_url: str, tmp_path: Path) -> None:
    client = Client([ok, nap, parked], store=PostgresStore(pg_url))
    output = tmp_path / "worker.out"
    async with client:
        ids = [await client.send_event(e) for e in ["tel/ok"] * 5 + ["tel/nap", "tel/parked"]]
        worker = start_worker(pg_url, output, "--concurrency", "2", "--claim-ahead", "3")
        try:
            for run_id in ids:
                assert (await finished(client, run_id, seconds=30)).status == "completed"
        finally:
            stop(worker)
    assert "queues all, 2 at once in this process, 3 claimed ahead" in output.read_text()


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["app:client", "--queues", "mail"], "--queues picks queues of a config file"),
        (["app:client", "--concurrency", "0"], "--concurrency is 0; it must be at least 1"),
        (["app:client", "--claim-ahead", "-1"], "--claim-ahead is -1; it must be 0 or more"),
        (
            ["app:client", "slay-config.json", "--concurrency", "4"],
            "--concurrency is for a worker without a config; slay-config.json sets",
        ),
        (
            ["app:client", "slay-config.json", "--claim-ahead", "0"],
            "--claim-ahead is for a worker without a config; slay-config.json sets",
        ),
    ],
)
def test_options_that_need_or_refuse_a_config_say_so(argv: list[str], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        queue_limits(parse_args(argv))


def test_without_a_config_no_queue_is_limited() -> None:
    assert queue_limits(parse_args(["app:client"])) is None
