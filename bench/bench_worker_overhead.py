"""The in-process worker's own CPU per run, with a store that answers at once.

    python -m bench.bench_worker_overhead [--runs 20000] [--rounds 5]

A ``Worker`` (queue ``general`` at concurrency 10, as in ``bench_postgres``) drives
``--runs`` single-step no-op runs of ``bench/noop`` whose claims and commits a stub store
answers without a database: what is left is the dispatcher, the engine, telemetry and the
event loop, the part of a run's cost that does not depend on PostgreSQL or psycopg.
Prints one JSON line: ``us_per_run`` (process CPU, the best and the median of
``--rounds``) and ``runs_per_s`` (the best). Needs no database.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta

import anyio
import anyio.lowlevel

from bench.app import noop
from slayq.client import Client
from slayq.model import Claim, Completed, Lease, RunId, Transition
from slayq.store.memory import MemoryStore
from slayq.store.protocol import Batch, ClaimRequest, QueueLimit
from slayq.worker import Worker


class InstantStore(MemoryStore):
    """Claims hand out ``runs`` ready-made no-op runs; commits succeed at once."""

    def __init__(self, runs: int) -> None:
        super().__init__()
        now = datetime.now(UTC)
        lease_until = now + timedelta(days=1)
        self.todo = [
            Claim(
                lease=Lease(run_id=RunId(f"run-{i}"), token=1, expires_at=lease_until),
                event="bench/noop",
                data={"i": i},
                queue="general",
                attempt=1,
                max_attempts=3,
                memo=[],
                due_at=now,
            )
            for i in range(runs)
        ]
        self.handed_out = 0
        self.completed = 0
        self.all_completed = anyio.Event()

    async def commit_batch(
        self, commits: Sequence[tuple[Lease, Transition]], *, claims: Sequence[ClaimRequest]
    ) -> Batch:
        await anyio.lowlevel.checkpoint()  # a round trip yields to the loop
        self.completed += sum(isinstance(t.outcome, Completed) for _, t in commits)
        if self.completed >= len(self.todo):
            self.all_completed.set()
        claimed = []
        for request in claims:
            claimed.append(self.todo[self.handed_out : self.handed_out + request.limit])
            self.handed_out += len(claimed[-1])
        return Batch(errors=[None] * len(commits), claims=claimed)

    async def next_wakeup(self) -> datetime | None:
        return None


async def one_round(runs: int) -> tuple[float, float]:
    """CPU microseconds per run and runs per second of one worker draining ``runs``."""
    store = InstantStore(runs)
    worker = Worker(
        Client([noop], store=store),
        queues=[QueueLimit(names=["general"], concurrency=10)],
        retention=None,
        queue_metrics_interval=None,
    )
    async with anyio.create_task_group() as group:
        cpu, wall = time.process_time(), time.perf_counter()
        group.start_soon(worker.run)
        await store.all_completed.wait()
        cpu, wall = time.process_time() - cpu, time.perf_counter() - wall
        worker.stop()
    return cpu / runs * 1e6, runs / wall


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--runs", type=int, default=20_000)
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    results = [anyio.run(one_round, args.runs) for _ in range(args.rounds)]
    cpu = [us for us, _ in results]
    print(
        json.dumps(
            {
                "bench": "worker_overhead",
                "runs": args.runs,
                "us_per_run": {
                    "best": round(min(cpu), 1),
                    "median": round(statistics.median(cpu), 1),
                },
                "runs_per_s": round(max(rate for _, rate in results)),
            }
        )
    )


if __name__ == "__main__":
    main()
