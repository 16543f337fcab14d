"""The claim's plans on a big table: generic against custom, time and buffers of each.

    python -m bench.claim_plans                 # scratch database: 1M finished + 100k sleeping
    python -m bench.claim_plans --quick         # 20k + 2k, to see that it runs
    python -m bench.claim_plans --url URL       # a database loaded already (bench.bulk_runs)

A claim is cheap only if its plan stays right however many finished and sleeping runs the
table holds. PostgreSQL plans a prepared statement afresh for its parameters (a custom
plan, the planning paid on every execution) or once for any parameters (a generic plan,
estimated without them). This mode prepares each statement of ``STATEMENTS`` (imported
from the store, so a reshaped claim is measured as it is) with SQL-level PREPARE, then
runs ``EXPLAIN (ANALYZE, BUFFERS) EXECUTE`` ``--repeat`` times under each
``plan_cache_mode``: ``force_generic_plan``, ``force_custom_plan`` and ``auto`` (what a
server does by default: custom plans for five executions, then generic if it estimates
that no dearer; measured after those five). Every execution is rolled back, so each claims the same due runs.

Prints, per statement and mode, the median execution and planning time, the buffers the
execution touched (shared hit + read), the widest nodes of the plan (most rows produced),
and how many generic and custom plans the server made; then one JSON line of it all.
``--plans`` also prints each mode's last plan in full.

Parameters are built as the store builds them (``group_params`` and the claim's own):
one queue group per queue of ``bench.bulk_runs.QUEUES``, concurrency 10, limit 10.
"""

from __future__ import annotations

import argparse
import json
import re
import statistics
import sys
from collections.abc import Awaitable, Callable
from datetime import timedelta
from typing import Any

import anyio
import psycopg

from bench.bulk_runs import QUEUES, load_runs
from bench.scratch import drop_database, fresh_database
from slayq.model import LEASE_EXPIRED
from slayq.store.postgres import _claim
from slayq.store.postgres._codec import dump
from slayq.store.postgres.sql.claiming import CLAIM, MEMOS
from slayq.store.protocol import QueueLimit

MODES = ("force_generic_plan", "force_custom_plan", "auto")
PLACEHOLDER = re.compile(r"%\((\w+)\)s")


def claim_params(queues: list[QueueLimit] | None) -> dict[str, Any]:
    return _claim.group_params(queues) | {
        "now": None,
        "limit": 10,
        "lease_for": timedelta(minutes=5),
        "owner": "bench-host:4242",
        "lease_expired": dump(LEASE_EXPIRED),
    }


async def claim(conn: psycopg.AsyncConnection[Any]) -> tuple[str, dict[str, Any]]:
    """As a worker claims for a queue with a concurrency limit: one group, ten free slots."""
    return CLAIM, claim_params([QueueLimit(names=[QUEUES[0]], concurrency=10)])


async def claim_unlimited(conn: psycopg.AsyncConnection[Any]) -> tuple[str, dict[str, Any]]:
    """As a worker claims for queues without a limit (``queues=None``)."""
    return CLAIM, claim_params(None)


async def memos(conn: psycopg.AsyncConnection[Any]) -> tuple[str, dict[str, Any]]:
    """The memos of the runs a claim just took: ten that resume from a sleep."""
    cursor = await conn.execute(
        "select id::text from runs where status = 'sleeping' order by run_at limit 10"
    )
    return MEMOS, {"ids": [row[0] for row in await cursor.fetchall()], "now": None}


# name: the statement and its parameters on a loaded database
STATEMENTS: dict[
    str, Callable[[psycopg.AsyncConnection[Any]], Awaitable[tuple[str, dict[str, Any]]]]
] = {"claim": claim, "claim_unlimited": claim_unlimited, "memos": memos}


def positional(statement: str, params: dict[str, Any]) -> tuple[str, list[Any]]:
    """The statement with ``$n`` for psycopg's ``%(name)s`` (each name one number, in the
    order of first use), and the values in that order: what PREPARE and EXECUTE take."""
    names: list[str] = []

    def number(match: re.Match[str]) -> str:
        if match[1] not in names:
            names.append(match[1])
        return f"${names.index(match[1]) + 1}"

    text = PLACEHOLDER.sub(number, statement).replace("%%", "%")
    return text, [params[name] for name in names]


def widest(plan: dict[str, Any], count: int = 3) -> list[str]:
    """The nodes that produced the most rows (all loops), as "Node on index: rows"."""
    nodes: list[tuple[float, str]] = []

    def walk(node: dict[str, Any]) -> None:
        label = node["Node Type"]
        if "Index Name" in node:
            label += f" on {node['Index Name']}"
        elif "Relation Name" in node:
            label += f" on {node['Relation Name']}"
        rows = node.get("Actual Rows", 0) * node.get("Actual Loops", 1)
        nodes.append((rows, f"{label}: {rows:.0f}"))
        for child in node.get("Plans", []):
            walk(child)

    walk(plan)
    return [label for _, label in sorted(nodes, key=lambda n: -n[0])[:count]]


async def explain_mode(
    conn: psycopg.AsyncConnection[Any],
    name: str,
    text: str,
    values: list[Any],
    mode: str,
    repeat: int,
    show_plan: bool,
) -> dict[str, Any]:
    await conn.execute(f"set plan_cache_mode = {mode}")
    await conn.execute(f"prepare {name} as {text}")
    execute = f"execute {name}({', '.join(['%s'] * len(values))})" if values else f"execute {name}"
    cursor = psycopg.AsyncClientCursor(conn)
    runs: list[dict[str, Any]] = []
    # auto: the server's choice after its five custom plans is the one that lasts
    warmup = 5 if mode == "auto" else 0
    try:
        for _ in range(warmup + repeat):
            async with conn.transaction(force_rollback=True):
                await cursor.execute(f"explain (analyze, buffers, format json) {execute}", values)
                row = await cursor.fetchone()
                assert row is not None
                runs.append(row[0][0])
        if show_plan:
            async with conn.transaction(force_rollback=True):
                await cursor.execute(f"explain (analyze, buffers) {execute}", values)
                lines = [r[0] for r in await cursor.fetchall()]
            print(f"--- {name}, {mode}\n" + "\n".join(lines), file=sys.stderr)
        found = await conn.execute(
            "select generic_plans, custom_plans from pg_prepared_statements where name = %s",
            [name],
        )
        counts = await found.fetchone()
    finally:
        await conn.execute(f"deallocate {name}")
    assert counts is not None
    runs = runs[warmup:]
    last = runs[-1]["Plan"]
    return {
        "ms": round(statistics.median(r["Execution Time"] for r in runs), 2),
        "planning_ms": round(statistics.median(r["Planning Time"] for r in runs), 2),
        "buffers": last.get("Shared Hit Blocks", 0) + last.get("Shared Read Blocks", 0),
        "rows": last.get("Actual Rows", 0),
        "widest": widest(last),
        "generic_plans": counts[0],
        "custom_plans": counts[1],
    }


async def check_plans(url: str, *, repeat: int, show_plans: bool) -> dict[str, Any]:
    figures: dict[str, Any] = {}
    async with await psycopg.AsyncConnection.connect(url, autocommit=True) as conn:
        # as the store's connections are configured (PostgresStore._configure)
        await conn.execute("set search_path = slayq; set timezone = 'UTC'; set jit = off")
        cursor = await conn.execute(
            "select count(*) filter (where finished_at is not null),"
            " count(*) filter (where status = 'sleeping'),"
            " count(*) filter (where status = 'queued') from runs"
        )
        row = await cursor.fetchone()
        assert row is not None
        figures["table"] = {"finished": row[0], "sleeping": row[1], "queued": row[2]}
        for name, build in STATEMENTS.items():
            statement, params = await build(conn)
            text, values = positional(statement, params)
            figures[name] = {
                mode: await explain_mode(conn, name, text, values, mode, repeat, show_plans)
                for mode in MODES
            }
    return figures


def print_table(figures: dict[str, Any]) -> None:
    print(f"table: {json.dumps(figures['table'])}")
    header = f"{'statement':16} {'plan_cache_mode':20} {'exec ms':>9} {'plan ms':>9} "
    print(header + f"{'buffers':>9} {'rows':>5} {'gen/cust':>9}  widest nodes")
    for name in STATEMENTS:
        for mode, f in figures[name].items():
            plans = f"{f['generic_plans']}/{f['custom_plans']}"
            print(
                f"{name:16} {mode:20} {f['ms']:9.2f} {f['planning_ms']:9.2f} "
                f"{f['buffers']:9d} {f['rows']:5.0f} {plans:>9}  {'; '.join(f['widest'])}"
            )


async def main(args: argparse.Namespace) -> None:
    url = args.url or fresh_database("slayq_bench_plans")
    try:
        if not args.url:
            loaded = await load_runs(
                url, finished=args.finished, sleeping=args.sleeping, queued=args.queued
            )
            print(f"loaded {json.dumps(loaded)}", file=sys.stderr)
        figures = await check_plans(url, repeat=args.repeat, show_plans=args.plans)
    finally:
        if not args.url and not args.keep:
            drop_database(url)
        elif not args.url:
            print(f"kept the database: --url '{url}'", file=sys.stderr)
    print_table(figures)
    print(json.dumps(figures))


def parse(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--url", help="a loaded database to use as it is (kept)")
    parser.add_argument("--finished", type=int, default=1_000_000)
    parser.add_argument("--sleeping", type=int, default=100_000)
    parser.add_argument("--queued", type=int, default=1_000, help="runs due now")
    parser.add_argument("--repeat", type=int, default=7, help="executions per plan mode")
    parser.add_argument("--quick", action="store_true", help="20k finished, 2k sleeping")
    parser.add_argument("--plans", action="store_true", help="print the full plans (stderr)")
    parser.add_argument("--keep", action="store_true", help="keep the scratch database")
    args = parser.parse_args(argv)
    if args.quick:
        args.finished, args.sleeping, args.queued, args.repeat = 20_000, 2_000, 200, 3
    return args


if __name__ == "__main__":
    anyio.run(main, parse())
