"""How fast the dashboard's pages render with a million runs in the table.

    .venv/bin/python -m bench.bench_ui [--runs 1000000] [--sleeping 100000] [--requests 40]
                                       [--keep NAME] [--quick]

Loads ``--runs`` finished runs and ``--sleeping`` sleeping ones (bench/bulk_runs.py:
INSERT ... SELECT; a quarter of the finished ones with four steps, 7% failed, ten events,
customer data) into a scratch database, then
times the dashboard's pages through its ASGI app (``slayq.ui.app`` on a PostgresStore,
httpx's ASGITransport: the whole render, no socket): the runs page unfiltered, its second
page, and filtered by status, event (one that runs have, one that none has) and data
(without, then with, the opt-in GIN index on data
that docs/operations.md describes), a run's page (one with four steps and one that
failed), and the overview and queues pages. Each page: a few warm-up requests, then
``--requests`` timed ones; median and p95 in ms. Prints one JSON line; its
``over_target`` names the pages whose p95 is over 200 ms.

``--quick``: 20,000 + 2,000 runs, 5 requests a page (to see that it runs). ``--keep NAME`` loads into database NAME and keeps it; run again with the same NAME to
skip the load (it is reused when it holds exactly that many runs, else loaded afresh).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import statistics
import time
from typing import Any
from urllib.parse import unquote

import anyio
import httpx
import psycopg
from psycopg import sql
from psycopg.conninfo import make_conninfo

from bench.bulk_runs import load_runs
from slayq.store.postgres import PostgresStore
from slayq.ui import app as dashboard_app

ADMIN_URL = os.environ.get("SLAY_Q_TEST_DATABASE_URL", "postgresql://postgres@127.0.0.1:5432/test")
WARM_UP = 3
TARGET_MS = 200
GIN = "create index if not exists runs_data on runs using gin ((data::jsonb) jsonb_path_ops)"


async def database(name: str, runs: int, sleeping: int) -> tuple[str, float | None]:
    """The url of database ``name`` holding the runs; the seconds loading took (None if
    it held exactly those already: a kept database)."""
    url = make_conninfo(ADMIN_URL, dbname=name)
    if await _holds(url, runs + sleeping):
        return url, None
    await drop(name)
    async with await psycopg.AsyncConnection.connect(ADMIN_URL, autocommit=True) as admin:
        await admin.execute(sql.SQL("create database {}").format(sql.Identifier(name)))
    began = time.perf_counter()
    await load_runs(url, finished=runs, sleeping=sleeping)
    return url, time.perf_counter() - began


async def _holds(url: str, count: int) -> bool:
    """Whether the database at ``url`` exists and its runs table holds ``count`` runs."""
    try:
        async with await psycopg.AsyncConnection.connect(url) as conn:
            cursor = await conn.execute("select to_regclass('slayq.runs') is not null")
            row = await cursor.fetchone()
            if row is None or not row[0]:
                return False
            cursor = await conn.execute("select count(*) from slayq.runs")
            row = await cursor.fetchone()
            return row is not None and row[0] == count
    except psycopg.OperationalError:  # no such database
        return False


async def drop(name: str) -> None:
    async with await psycopg.AsyncConnection.connect(ADMIN_URL, autocommit=True) as admin:
        await admin.execute(
            sql.SQL("drop database if exists {} with (force)").format(sql.Identifier(name))
        )


async def pick(url: str) -> dict[str, str]:
    """Runs and values to put in the URLs: a run with four steps, a failed one, an event,
    a customer id."""
    async with await psycopg.AsyncConnection.connect(url) as conn:
        await conn.execute("set search_path = slayq")
        queries = {
            # from the middle of the table: not the newest rows every cache holds
            "stepped": "select run_id::text from steps where name = 'sync-crm'"
            " order by run_id offset least(250, (select count(*) / 2 from steps where name = 'sync-crm'))"
            " limit 1",
            "failed": "select id::text from runs where status = 'failed' order by id"
            " offset least(5000, (select count(*) / 2 from runs where status = 'failed')) limit 1",
            "event": "select event from runs order by id desc limit 1",
            "customer": "select (data::jsonb -> 'customer' ->> 'id') from runs"
            " order by id offset 777 limit 1",
        }
        picked = {}
        for key, query in queries.items():
            cursor = await conn.execute(query)
            row = await cursor.fetchone()
            assert row is not None, f"no row for {key}: is the table loaded?"
            picked[key] = str(row[0])
        return picked


async def timed(
    client: httpx.AsyncClient, path: str, params: dict[str, str], n: int
) -> dict[str, Any]:
    """Median and p95 of ``n`` GETs of ``path`` (after the warm-up), in ms."""
    times = []
    for i in range(WARM_UP + n):
        began = time.perf_counter()
        response = await client.get(path, params=params)
        took = (time.perf_counter() - began) * 1000
        if response.status_code != 200:
            raise AssertionError(
                f"GET {path} {params} answered {response.status_code}: {response.text[:500]}"
            )
        if i >= WARM_UP:
            times.append(took)
    times.sort()
    return {
        "median_ms": round(statistics.median(times), 1),
        "p95_ms": round(times[max(0, round(0.95 * len(times)) - 1)], 1),
        "bytes": len(response.content),
    }


def pages(picked: dict[str, str]) -> dict[str, tuple[str, dict[str, str]]]:
    """What to time: a label -> the page's path and query."""
    customer = json.dumps({"customer": {"id": int(picked["customer"])}})
    return {
        "runs_page": ("/runs", {}),
        "runs_page_2": ("/runs", {"cursor": picked["cursor"]}),
        "runs_failed": ("/runs", {"status": "failed"}),
        "runs_event": ("/runs", {"event": picked["event"]}),
        # an event no run has (a typo, or a rare one): the worst case of that filter
        "runs_event_none": ("/runs", {"event": "orders/no-such-event"}),
        "runs_data": ("/runs", {"data": customer}),
        "run_steps": (f"/runs/{picked['stepped']}", {}),
        "run_failed": (f"/runs/{picked['failed']}", {}),
        "overview": ("/", {}),
        "queues": ("/queues", {}),
    }


async def measure(url: str, requests: int) -> dict[str, Any]:
    picked = await pick(url)
    async with await psycopg.AsyncConnection.connect(url, autocommit=True) as conn:
        await conn.execute("drop index if exists slayq.runs_data")  # a kept database's
    store = PostgresStore(url)
    await store.open()
    figures: dict[str, Any] = {}
    try:
        transport = httpx.ASGITransport(app=dashboard_app(store))
        async with httpx.AsyncClient(transport=transport, base_url="http://bench") as client:
            first = await client.get("/runs")
            found = re.search(r"cursor=([^\"&]+)", first.text)
            assert found is not None, "the runs page links no next page"
            picked["cursor"] = unquote(found.group(1))
            timing = pages(picked)
            for label, (path, params) in timing.items():
                figures[label] = await timed(client, path, params, requests)
            # The same data filter with the opt-in index in place.
            async with await psycopg.AsyncConnection.connect(url, autocommit=True) as conn:
                await conn.execute("set search_path = slayq")
                began = time.perf_counter()
                await conn.execute(GIN)
                figures["gin_index_build_s"] = round(time.perf_counter() - began, 1)
                await conn.execute("analyze runs")
            path, params = timing["runs_data"]
            figures["runs_data_gin"] = await timed(client, path, params, requests)
    finally:
        await store.aclose()
    return figures


async def main(runs: int, sleeping: int, requests: int, keep: str | None) -> None:
    name = keep or f"slayq_bench_ui_{os.getpid()}"
    try:
        url, loaded = await database(name, runs, sleeping)
        figures: dict[str, Any] = {"runs": runs, "sleeping": sleeping, "requests": requests}
        if loaded is not None:
            figures["load_s"] = round(loaded, 1)
        pages = await measure(url, requests)
        figures |= pages
        slow = [
            label
            for label, value in pages.items()
            if isinstance(value, dict) and value["p95_ms"] > TARGET_MS
        ]
        figures["over_target"] = slow
    finally:
        if keep is None:
            await drop(name)
    print(json.dumps(figures))


if __name__ == "__main__":
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--runs", type=int, default=1_000_000)
    parser.add_argument("--sleeping", type=int, default=100_000)
    parser.add_argument("--requests", type=int, default=40)
    parser.add_argument("--keep", metavar="NAME", help="load into database NAME and keep it")
    parser.add_argument("--quick", action="store_true", help="small sizes, to see that it runs")
    args = parser.parse_args()
    if args.quick:
        args.runs, args.sleeping, args.requests = 20_000, 2_000, 5
    anyio.run(main, args.runs, args.sleeping, args.requests, args.keep)
