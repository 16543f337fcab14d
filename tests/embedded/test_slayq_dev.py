"""``slayq dev`` as a user runs it: a subprocess on an embedded PostgreSQL, with the system
PostgreSQL made unreachable (every URL and PG* variable points at a tripwire port)."""

from __future__ import annotations

import os
import queue
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import anyio
import httpx
import pytest

import slayq
from slayq.embedded import free_port
from slayq.model import RunId, RunInfo
from slayq.store.postgres import PostgresStore
from tests.embedded.tripwire import Tripwire

ROOT = Path(__file__).resolve().parents[2]
APP = "tests.embedded.dev_app:client"


@dataclass
class Dev:
    process: subprocess.Popen[str]
    block: str

    def line(self, label: str) -> str:
        return next(
            line.split(maxsplit=1)[1]
            for line in self.block.splitlines()
            if line.strip().startswith(label)
        )

    @property
    def database_url(self) -> str:
        return self.line("database")

    @property
    def dashboard(self) -> str:
        return self.line("dashboard")


def _env(wire: Tripwire) -> dict[str, str]:
    return {**os.environ, **wire.env(), "PYTHONPATH": str(ROOT)}


@contextmanager
def slayq_dev(wire: Tripwire, data_dir: Path, *extra: str) -> Iterator[Dev]:
    """``slayq dev`` running until the block is printed; on exit, SIGINT and a clean stop."""
    argv = [sys.executable, "-m", "slayq", "dev", "--app", APP, "--data-dir", str(data_dir)]
    argv += ["--port", str(free_port()), *extra]
    process = subprocess.Popen(
        argv, cwd=ROOT, env=_env(wire), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    lines: queue.Queue[str] = queue.Queue()
    assert process.stdout is not None
    stdout = process.stdout

    def pump() -> None:
        for text in stdout:
            lines.put(text)

    threading.Thread(target=pump, daemon=True).start()
    block: list[str] = []
    deadline = time.monotonic() + 60
    while not (len(block) > 1 and not block[-1].strip()):
        try:
            line = lines.get(timeout=max(0.1, deadline - time.monotonic()))
        except queue.Empty:
            process.kill()
            pytest.fail(f"slayq dev printed no block in 60s: {process.communicate()[1]}")
        if line.strip() or block:
            block.append(line)
    try:
        yield Dev(process, "".join(block))
    finally:
        if process.poll() is None:
            process.send_signal(signal.SIGINT)
        _, err = process.communicate(timeout=60)
        assert process.returncode == 0, err
        assert "stopped; the data is kept" in err
        # PostgreSQL stopped with it: no server holds the data folder any more.
        assert not (data_dir / "postgres" / "postmaster.pid").exists()


async def _client(url: str) -> slayq.Client:
    return slayq.Client([], store=PostgresStore(url), app="test")


def send(dev: Dev, wire: Tripwire, name: str) -> str:
    """``slayq events send`` with the URL the block printed, as the block says to."""
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "slayq",
            "events",
            "send",
            "dev/greet",
            "--app",
            APP,
            "--data",
            f'{{"name": "{name}"}}',
        ],
        cwd=ROOT,
        env={**_env(wire), "SLAY_Q_DATABASE_URL": dev.database_url},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    return done.stdout.strip()


def finished_run(url: str, run_id: str) -> RunInfo:
    async def poll() -> RunInfo:
        client = await _client(url)
        try:
            with anyio.fail_after(30):
                while True:
                    run = await client.get_run(RunId(run_id))
                    if run.status in ("completed", "failed", "cancelled"):
                        return run
                    await anyio.sleep(0.1)
        finally:
            await client.store.aclose()

    return anyio.run(poll)


def test_slayq_dev_serves_the_dashboard_and_runs_a_sent_event(tmp_path: Path) -> None:
    with Tripwire() as wire:
        with slayq_dev(wire, tmp_path / ".slayq") as dev:
            assert dev.database_url.startswith("postgresql://postgres@127.0.0.1:")
            assert f":{wire.port}/" not in dev.database_url
            assert "in-process worker" in dev.line("functions")
            run_id = send(dev, wire, "dev")
            run = finished_run(dev.database_url, run_id)
            assert (run.status, run.result) == ("completed", "hello dev")
            # The dashboard, without a password on loopback, shows the run.
            page = httpx.get(f"{dev.dashboard}runs/{run_id}", timeout=10)
            assert page.status_code == 200
            assert "hello dev" in page.text
        assert wire.connections == 0, "the embedded path reached the system PostgreSQL"


def test_runs_survive_a_restart_and_fresh_wipes_them(tmp_path: Path) -> None:
    data = tmp_path / ".slayq"
    with Tripwire() as wire:
        with slayq_dev(wire, data) as dev:
            run_id = send(dev, wire, "kept")
            assert finished_run(dev.database_url, run_id).result == "hello kept"
            first_url = dev.database_url
        with slayq_dev(wire, data) as dev:
            assert dev.database_url == first_url  # the same port: psql's URL still works
            run = finished_run(dev.database_url, run_id)
            assert (run.status, run.result) == ("completed", "hello kept")
        with slayq_dev(wire, data, "--fresh") as dev:

            async def missing() -> None:
                client = await _client(dev.database_url)
                try:
                    with pytest.raises(slayq.RunNotFoundError):
                        await client.get_run(RunId(run_id))
                finally:
                    await client.store.aclose()

            anyio.run(missing)
        assert wire.connections == 0
