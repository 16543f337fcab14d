"""Worker subprocesses for fault tests, and reading what their handlers logged."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path

import anyio

from slayq.client import Client
from slayq.model import RunId

REPO = Path(__file__).resolve().parents[2]


def write_config(path: Path, **queues: int) -> Path:
    body = ", ".join(f'"{name}": {{"concurrency": {n}}}' for name, n in queues.items())
    path.write_text(f'{{"queues": {{{body}}}}}')
    return path


def start_worker(
    url: str, config: Path | None, log: Path, *extra: str, output: Path | None = None
) -> subprocess.Popen[bytes]:
    """A worker of ``config``'s queues; None: of every queue, ten at once (no config),
    claiming ahead."""
    env = {**os.environ, "SLAY_Q_DATABASE_URL": url, "FAULT_LOG": str(log)}
    queues = [str(config)] if config is not None else ["--concurrency", "10"]
    command = [sys.executable, "-m", "slayq.worker", "tests.faults.app:client", *queues]
    with open(output or log.with_suffix(".workers.out"), "ab") as sink:  # the child keeps a copy
        return subprocess.Popen(
            [*command, "--lease", "2s", "--grace", "5s", *extra],
            cwd=REPO,
            env=env,
            stdout=sink,
            stderr=subprocess.STDOUT,
        )


def kill_9(process: subprocess.Popen[bytes]) -> None:
    process.send_signal(signal.SIGKILL)
    process.wait(timeout=10)


def stop_all(processes: list[subprocess.Popen[bytes]]) -> None:
    for process in processes:
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
    deadline = time.monotonic() + 15
    for process in processes:
        try:
            process.wait(timeout=max(deadline - time.monotonic(), 0.1))
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


@dataclass(frozen=True)
class Entry:
    phase: str
    run_id: str
    step: str
    pid: int
    committed_already: bool
    at: float


def busy_pids(log: Path) -> set[int]:
    """Processes with a handler that started and has not ended."""
    entries = read_log(log)
    ended = {(e.run_id, e.step, e.pid) for e in entries if e.phase == "end"}
    return {e.pid for e in entries if e.phase == "start" and (e.run_id, e.step, e.pid) not in ended}


def read_log(log: Path) -> list[Entry]:
    if not log.exists():
        return []
    entries = []
    for line in log.read_text().splitlines():
        phase, run_id, step, pid, committed, at = line.split(" ")
        entries.append(Entry(phase, run_id, step, int(pid), committed == "1", float(at)))
    return entries


async def wait_for(condition: Callable[[], Awaitable[bool]], *, seconds: float, what: str) -> None:
    """Poll ``condition`` until it holds; fail naming ``what`` after ``seconds``."""
    deadline = time.monotonic() + seconds
    while not await condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {seconds}s waiting for {what}")
        await anyio.sleep(0.1)


async def send_jobs(
    client: Client, count: int, *, step_seconds: float, event: str = "faults/three-steps"
) -> list[RunId]:
    """Start ``count`` runs of a fault-app function; returns their ids."""
    sent = await client.send_events(
        [(event, {"n": n, "step_seconds": step_seconds}) for n in range(count)]
    )
    return [run_id for run_id in sent if run_id is not None]


async def all_finished(client: Client, run_ids: list[RunId]) -> bool:
    """True once every run has finished; a run failing or cancelled fails the test."""
    statuses = [(await client.get_run(run_id)).status for run_id in run_ids]
    assert "failed" not in statuses and "cancelled" not in statuses, statuses
    return all(status == "completed" for status in statuses)
