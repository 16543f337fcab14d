"""Per-step cost as a workflow grows: 10, 100 and 500 steps, small and 20 KB outputs.

    python -m bench.bench_growth [--repeat 3] [--via worker,server]
    python -m bench.bench_growth --quick        # 5 and 20 steps, once: that it runs
    python -m bench.bench_growth --sizes 10x0,100x0,10x20,100x20   # some sizes only

A step that replays a longer memo should not cost more: issue 10 wants the per-step cost
flat as a workflow grows (through the server today: 9 ms/step at 100 steps, 13.6 ms at
500; with 20 KB outputs, 26 -> 46 ms/step). For each executor (an in-process worker, or
``slayq.server`` delivering to the app over loopback HTTP), on one fresh database with
the executor kept running, this sends ONE workflow (``bench.app``'s ``bench/workflow``)
of each size at a time, waits for it, and reads from the database the span from its
first step's start to its finish. Figures: ``ms_per_step`` (span / steps) and
``steps_per_s`` (steps / span), medians of ``--repeat`` workflows; then the growth of
each: ms/step at the largest size over ms/step at 10 steps. Prints a table, then one
JSON line.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
from pathlib import Path
from typing import Any

import anyio
import psycopg

from bench.app import latency, noop, workflow
from bench.bench_postgres import ENDPOINT, start_executors, stop, wait_all_finished
from bench.scratch import drop_database, fresh_database
from slayq.client import Client
from slayq.store.postgres import PostgresStore

SIZES = [(10, 0), (100, 0), (500, 0), (10, 20), (100, 20), (500, 20)]  # (steps, KiB/step)
QUICK_SIZES = [(5, 0), (20, 0), (5, 20), (20, 20)]

SPAN = """
select extract(epoch from r.finished_at - min(s.started_at))
from slayq.runs as r join slayq.steps as s on s.run_id = r.id
where r.id = %s
group by r.finished_at
"""


async def measure(
    via: str, sizes: list[tuple[int, int]], repeat: int
) -> dict[str, dict[str, float]]:
    """``{"<steps>x<kb>kb": {"ms_per_step": ..., "steps_per_s": ...}}`` for one executor."""
    url = fresh_database()
    results: dict[str, dict[str, float]] = {}
    try:
        endpoint = ENDPOINT if via == "server" else None
        client = Client([noop, workflow, latency], store=PostgresStore(url), endpoint=endpoint)
        async with client, await psycopg.AsyncConnection.connect(url) as conn:
            with tempfile.TemporaryDirectory() as tmp:
                executors = start_executors(url, Path(tmp), Path(tmp) / "starts", via)
                # one workflow unmeasured: connections, caches and imports warm
                await client.send_event("bench/workflow", {"steps": 10})
                finished = 1
                try:
                    for steps, kb in sizes:
                        spans = []
                        for i in range(repeat):
                            data = {"i": i, "steps": steps, "output_kb": kb}
                            run_id = await client.send_event("bench/workflow", data)
                            finished += 1
                            await wait_all_finished(url, finished, within=1800)
                            cursor = await conn.execute(SPAN, [run_id])
                            row = await cursor.fetchone()
                            await conn.rollback()
                            assert row is not None, run_id
                            spans.append(float(row[0]))
                        span = statistics.median(spans)
                        results[f"{steps}x{kb}kb"] = {
                            "ms_per_step": round(span * 1000 / steps, 2),
                            "steps_per_s": round(steps / span, 1),
                        }
                        print(via, steps, kb, results[f"{steps}x{kb}kb"], file=sys.stderr)
                finally:
                    stop(executors)
    finally:
        drop_database(url)
    return results


def growth(results: dict[str, dict[str, float]], sizes: list[tuple[int, int]]) -> dict[str, float]:
    """ms/step at the most steps over ms/step at the fewest, for each output size."""
    ratios = {}
    for kb in sorted({kb for _, kb in sizes}):
        counts = sorted(steps for steps, k in sizes if k == kb)
        first, last = results[f"{counts[0]}x{kb}kb"], results[f"{counts[-1]}x{kb}kb"]
        ratios[f"{counts[-1]}_over_{counts[0]}_steps_{kb}kb"] = round(
            last["ms_per_step"] / first["ms_per_step"], 2
        )
    return ratios


async def main(args: argparse.Namespace) -> None:
    sizes = QUICK_SIZES if args.quick else args.sizes or SIZES
    figures: dict[str, Any] = {"repeat": args.repeat}
    for via in args.via.split(","):
        results = await measure(via, sizes, args.repeat)
        figures[via] = results | {"growth": growth(results, sizes)}
    print(f"{'via':8} {'steps':>6} {'KiB/step':>8} {'ms/step':>9} {'steps/s':>9}")
    for via in args.via.split(","):
        for steps, kb in sizes:
            f = figures[via][f"{steps}x{kb}kb"]
            print(f"{via:8} {steps:6d} {kb:8d} {f['ms_per_step']:9.2f} {f['steps_per_s']:9.1f}")
        for name, ratio in figures[via]["growth"].items():
            print(f"{via:8} growth of ms/step, {name}: {ratio}x")
    print(json.dumps(figures))


def parse_sizes(text: str) -> list[tuple[int, int]]:
    """``"10x0,100x20"`` as ``[(10, 0), (100, 20)]``."""
    try:
        sizes = [tuple(map(int, item.split("x"))) for item in text.split(",")]
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r}: give STEPSxKIB,... like 10x0,100x20") from None
    if not sizes or any(len(size) != 2 or size[0] < 1 or size[1] < 0 for size in sizes):
        raise argparse.ArgumentTypeError(f"{text!r}: give STEPSxKIB,... like 10x0,100x20")
    return [(steps, kb) for steps, kb in sizes]


def parse(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--repeat", type=int, default=3, help="workflows per size")
    parser.add_argument("--via", default="worker,server", help="worker, server or both")
    parser.add_argument("--quick", action="store_true", help="5 and 20 steps, once")
    parser.add_argument(
        "--sizes",
        type=parse_sizes,
        help="STEPSxKIB,... e.g. 10x0,100x20 (default: 10, 100 and 500 steps, 0 and 20 KiB)",
    )
    args = parser.parse_args(argv)
    if not set(args.via.split(",")) <= {"worker", "server"} or not args.via:
        parser.error(f"--via {args.via!r}: worker, server or worker,server")
    if args.quick:
        args.repeat = 1
    return args


if __name__ == "__main__":
    anyio.run(main, parse())
