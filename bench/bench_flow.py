"""What flow control costs the worker: no-op runs/s without it and under a concurrency key.

    python -m bench.bench_flow [--runs 20000] [--keys 1000] [--repeat 3]
    python -m bench.bench_flow --quick          # 2,000 runs, one round

Per round, on a fresh database, one worker process (``bench.app:client``, queue
``general`` at concurrency 10, as ``bench_postgres``) finishes ``--runs`` single-step
no-op runs of ``bench/noop`` (no flow control: the plain claim), then as many of
``bench/keyed``: the same no-op under ``slayq.Concurrency(limit=5, key="customer")``,
sent round robin over ``--keys`` customers, so every claim goes through the gated claim
(named by the tick function, then FLOW_CANDIDATES and CLAIM_FLOW). Each figure is timed by the database from
its first run finished to its last. Prints a table, then one JSON line of the medians:
``noop_runs_per_s``, ``keyed_runs_per_s`` and their ratio, ``keyed_over_noop``.
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
from functools import partial
from pathlib import Path

import anyio
import psycopg

from bench.app import keyed, noop
from bench.bench_postgres import span_seconds, start_executors, stop, wait_all_finished
from bench.scratch import drop_database, fresh_database
from slayq.client import Client
from slayq.store.postgres import PostgresStore

_SPAN = (
    "select extract(epoch from max(finished_at) - min(finished_at)) "
    "from slayq.runs where event = '{event}'"
)


async def runs_per_s(url: str, client: Client, event: str, runs: list[dict[str, int]]) -> float:
    """Send ``runs`` of ``event`` in batches of 1,000, wait for all; finished runs/s."""
    async with await psycopg.AsyncConnection.connect(url, autocommit=True) as conn:
        cursor = await conn.execute("select count(*) from slayq.runs where status = 'completed'")
        row = await cursor.fetchone()
    done = int(row[0]) if row else 0
    for start in range(0, len(runs), 1000):
        await client.send_events([(event, data) for data in runs[start : start + 1000]])
    await wait_all_finished(url, done + len(runs), within=900)
    return len(runs) / await span_seconds(url, _SPAN.format(event=event))


async def one_round(runs: int, keys: int) -> dict[str, float]:
    url = fresh_database()
    try:
        client = Client([noop, keyed], store=PostgresStore(url))
        async with client:
            with tempfile.TemporaryDirectory() as tmp:
                workdir = Path(tmp)
                worker = start_executors(url, workdir, workdir / "starts", "worker")
                try:
                    plain = [{"i": i} for i in range(runs)]
                    noop_per_s = await runs_per_s(url, client, "bench/noop", plain)
                    by_key = [{"i": i, "customer": i % keys} for i in range(runs)]
                    keyed_per_s = await runs_per_s(url, client, "bench/keyed", by_key)
                finally:
                    stop(worker)
    finally:
        drop_database(url)
    return {"noop_runs_per_s": noop_per_s, "keyed_runs_per_s": keyed_per_s}


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--runs", type=int, default=20_000, help="runs of each function")
    parser.add_argument("--keys", type=int, default=1_000, help="distinct concurrency keys")
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--quick", action="store_true", help="2,000 runs, one round")
    args = parser.parse_args()
    runs, repeat = (2_000, 1) if args.quick else (args.runs, args.repeat)
    rounds = [anyio.run(partial(one_round, runs, args.keys)) for _ in range(repeat)]
    print(f"{'round':>5} {'noop runs/s':>12} {'keyed runs/s':>13}")
    for number, figures in enumerate(rounds, start=1):
        print(
            f"{number:>5} {figures['noop_runs_per_s']:>12.0f} {figures['keyed_runs_per_s']:>13.0f}"
        )
    noop_median = statistics.median(r["noop_runs_per_s"] for r in rounds)
    keyed_median = statistics.median(r["keyed_runs_per_s"] for r in rounds)
    result = {
        "runs": runs,
        "keys": args.keys,
        "rounds": repeat,
        "noop_runs_per_s": round(noop_median, 1),
        "keyed_runs_per_s": round(keyed_median, 1),
        "keyed_over_noop": round(keyed_median / noop_median, 3),
    }
    print(json.dumps(result))


if __name__ == "__main__":
    main()
