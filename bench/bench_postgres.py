"""Worker and store throughput against the local PostgreSQL; prints one JSON line.

    .venv/bin/python -m bench.bench_postgres [--runs 20000] [--workflows 1000] [--repeat 3]
    .venv/bin/python -m bench.bench_postgres --via server   # through slayq.server and HTTP
    .venv/bin/python -m bench.bench_postgres --figures noop,workflow --steps 100 --workflows 50

With ``--via server``, runs go through ``python -m slayq.server`` to the app
(``bench.app:app`` under uvicorn) over loopback HTTP instead of an in-process worker.
The worker's queue has a cluster-wide concurrency of 10 (a config file); with ``--via
worker-local`` it runs without a config: 10 at once in its process, no limit across
processes, claiming ahead (PgQueuer's setting in ``peers.sh``).

Figures (medians over ``--repeat`` rounds, each on a fresh database; ``--figures`` picks
some, e.g. ``noop,workflow``; the no-op runs are those sent singly and in batches):
- ``send_event_per_s``: single ``client.send_event`` calls, one after another;
- ``send_events_batch_per_s``: events per second in ``send_events`` batches of 1,000;
- ``noop_runs_per_s``: single-step no-op runs finished by one worker process (concurrency
  10), timed by the database from the first to the last run finished;
- ``workflow_steps_per_s``: steps of ``--steps``-step workflows (default 10; each step
  returns ``--output-kb`` KiB, default a small int), concurrency 10, timed by the database
  from the first to the last step finished;
- ``latency_ms``: send_event to handler start with an idle worker, p50/p95/p99.
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Collection
from functools import partial
from pathlib import Path
from typing import Any

import anyio
import psycopg

from bench.app import BODY_BYTES, latency, noop, workflow
from bench.scratch import drop_database, fresh_database
from slayq.client import Client
from slayq.store.postgres import PostgresStore

REPO = Path(__file__).resolve().parents[1]
BENCH_SECRET = "bench-secret-0123456789abcdef"


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


# Ports of this process's app and server: free ones, so that benchmarks (and their smoke
# tests) running side by side on one machine do not meet.
APP_PORT, SERVER_PORT = free_port(), free_port()
ENDPOINT = f"http://127.0.0.1:{APP_PORT}/api/slay-q"
CONFIG = '{"queues": {"general": {"concurrency": 10}}}'


def start_executors(
    url: str, workdir: Path, starts: Path, via: str
) -> list[subprocess.Popen[bytes]]:
    """One worker process, or the server plus the app under uvicorn (HTTP on loopback)."""
    config = workdir / "slay-config.json"
    config.write_text(CONFIG)
    env = {
        **os.environ,
        "SLAY_Q_DATABASE_URL": url,
        "BENCH_STARTS": str(starts),
        "SLAY_Q_SECRET": BENCH_SECRET,
        "BENCH_ENDPOINT": ENDPOINT,
        "SLAY_Q_BODY_LIMIT": str(BODY_BYTES),
    }
    quiet = ["--log-level", "WARNING", "--retention", "off"]
    if via in ("worker", "worker-local"):
        # worker: the queue's concurrency is cluster-wide (a config); worker-local: ten at
        # once in this process and no limit across processes (no config), as PgQueuer's
        # bench runs (batch_size=10, no concurrency limit)
        queues = [str(config)] if via == "worker" else ["--concurrency", "10"]
        command = [sys.executable, "-m", "slayq.worker", "bench.app:client", *queues, *quiet]
        return [subprocess.Popen(command, cwd=REPO, env=env)]
    app = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "uvicorn",
            "bench.app:app",
            "--port",
            str(APP_PORT),
            "--log-level",
            "warning",
            "--no-access-log",
        ],
        cwd=REPO,
        env=env,
    )
    # The server delivers at once; a delivery the app is not up for yet waits a second
    # and would count against the first runs' times.
    wait_listening(APP_PORT, app)
    server = subprocess.Popen(
        [sys.executable, "-m", "slayq.server", str(config), *quiet],
        cwd=REPO,
        env={**env, "SLAY_Q_PORT": str(SERVER_PORT)},
    )
    return [server, app]


def wait_listening(port: int, process: subprocess.Popen[bytes], within: float = 30) -> None:
    deadline = time.monotonic() + within
    while process.poll() is None and time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError(f"the app did not listen on port {port} (exit code {process.poll()})")


def stop(processes: list[subprocess.Popen[bytes]]) -> None:
    for process in processes:
        process.terminate()
        process.wait(timeout=60)


async def wait_all_finished(url: str, count: int, within: float) -> None:
    deadline = time.monotonic() + within
    async with await psycopg.AsyncConnection.connect(url, autocommit=True) as conn:
        while True:
            cur = await conn.execute(
                "select count(*) filter (where status = 'completed'),"
                " min(error::text) filter (where status = 'failed') from slayq.runs"
            )
            row = await cur.fetchone()
            if row is not None and row[1] is not None:
                raise RuntimeError(f"a benchmark run failed: {row[1][:2000]}")
            if row is not None and row[0] >= count:
                return
            if time.monotonic() > deadline:
                raise TimeoutError(f"only {row} of {count} runs finished in {within}s")
            await anyio.sleep(0.1)


async def span_seconds(url: str, sql: str) -> float:
    async with await psycopg.AsyncConnection.connect(url) as conn:
        cur = await conn.execute(sql)
        row = await cur.fetchone()
        assert row is not None
        return float(row[0])


FIGURES = ("send", "batch", "noop", "workflow", "latency")


async def one_round(
    runs: int,
    workflows: int,
    samples: int,
    via: str,
    *,
    steps: int = 10,
    output_kb: int = 0,
    singles: int = 1000,
    figures_wanted: Collection[str] = FIGURES,
) -> dict[str, Any]:
    """One round on a fresh database: the figures of ``figures_wanted`` (see the module's
    docstring); ``workflows`` workflows of ``steps`` steps for ``workflow_steps_per_s``."""
    url = fresh_database()
    figures: dict[str, Any] = {}
    try:
        endpoint = ENDPOINT if via == "server" else None
        client = Client([noop, workflow, latency], store=PostgresStore(url), endpoint=endpoint)
        async with client:
            total = 0
            if "send" in figures_wanted:
                began = time.perf_counter()
                for i in range(singles):
                    await client.send_event("bench/noop", {"i": i})
                figures["send_event_per_s"] = singles / (time.perf_counter() - began)
                total += singles

            if "batch" in figures_wanted or "noop" in figures_wanted:
                batches = max(runs // 1000, 1)
                began = time.perf_counter()
                for b in range(batches):
                    await client.send_events(
                        [("bench/noop", {"i": b * 1000 + i}) for i in range(1000)]
                    )
                if "batch" in figures_wanted:
                    figures["send_events_batch_per_s"] = (
                        batches * 1000 / (time.perf_counter() - began)
                    )
                total += batches * 1000

            with tempfile.TemporaryDirectory() as tmp:
                workdir = Path(tmp)
                starts = workdir / "starts"
                worker = start_executors(url, workdir, starts, via)
                try:
                    await wait_all_finished(url, total, within=600)
                    if "noop" in figures_wanted:
                        seconds = await span_seconds(
                            url,
                            "select extract(epoch from max(finished_at) - min(finished_at)) "
                            "from slayq.runs where event = 'bench/noop'",
                        )
                        figures["noop_runs_per_s"] = total / seconds

                    if "workflow" in figures_wanted:
                        chain = {"steps": steps, "output_kb": output_kb}
                        await client.send_events(
                            [("bench/workflow", {"i": i, **chain}) for i in range(workflows)]
                        )
                        total += workflows
                        await wait_all_finished(url, total, within=1800)
                        seconds = await span_seconds(
                            url,
                            "select extract(epoch from max(s.finished_at) - min(s.finished_at)) "
                            "from slayq.steps s join slayq.runs r on r.id = s.run_id "
                            "where r.event = 'bench/workflow'",
                        )
                        figures["workflow_steps_per_s"] = workflows * steps / seconds

                    if "latency" in figures_wanted:
                        # A run first, finished before the samples: measured alone, the
                        # samples would otherwise wait for the worker to start (p99 of
                        # ~500 ms, every figure before it being a warm-up).
                        await client.send_event("bench/noop", {"i": -1})
                        total += 1
                        await wait_all_finished(url, total, within=120)
                        sent: dict[int, float] = {}
                        for i in range(samples):
                            await anyio.sleep(0.02)  # idle between sends
                            sent[i] = time.time()
                            await client.send_event("bench/latency", {"i": i})
                        total += samples
                        await wait_all_finished(url, total, within=120)
                finally:
                    stop(worker)
                if "latency" in figures_wanted:
                    delays = sorted(
                        (float(at) - sent[int(i)]) * 1000
                        for i, at in (line.split() for line in starts.read_text().splitlines())
                    )
                    q = statistics.quantiles(delays, n=100)
                    figures["latency_ms"] = {"p50": q[49], "p95": q[94], "p99": q[98]}
    finally:
        drop_database(url)
    return figures


def median_of(rounds: list[dict[str, Any]]) -> dict[str, Any]:
    result: dict[str, Any] = {}
    for key, value in rounds[0].items():
        if isinstance(value, dict):
            result[key] = {k: round(statistics.median(r[key][k] for r in rounds), 2) for k in value}
        else:
            result[key] = round(statistics.median(r[key] for r in rounds), 1)
    return result


def parse_figures(text: str) -> list[str]:
    names = [name.strip() for name in text.split(",") if name.strip()]
    unknown = [name for name in names if name not in FIGURES]
    if unknown or not names:
        raise argparse.ArgumentTypeError(
            f"unknown figure(s) {unknown or text!r}: pick from {','.join(FIGURES)}"
        )
    return names


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--runs", type=int, default=20_000)
    parser.add_argument("--workflows", type=int, default=1_000)
    parser.add_argument("--samples", type=int, default=300)
    parser.add_argument("--singles", type=int, default=1_000, help="single send_event calls")
    parser.add_argument("--steps", type=int, default=10, help="steps per workflow")
    parser.add_argument("--output-kb", type=int, default=0, help="KiB each workflow step returns")
    parser.add_argument(
        "--figures",
        type=parse_figures,
        default=list(FIGURES),
        help=f"comma-separated, of {','.join(FIGURES)} (default: all)",
    )
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--via", choices=["worker", "worker-local", "server"], default="worker")
    args = parser.parse_args()
    rounds = [
        anyio.run(
            partial(
                one_round,
                args.runs,
                args.workflows,
                args.samples,
                args.via,
                steps=args.steps,
                output_kb=args.output_kb,
                singles=args.singles,
                figures_wanted=args.figures,
            )
        )
        for _ in range(args.repeat)
    ]
    print(json.dumps({"via": args.via, "rounds": args.repeat, **median_of(rounds)}))


if __name__ == "__main__":
    main()
