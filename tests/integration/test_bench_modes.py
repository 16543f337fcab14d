"""The benchmark modes in bench/ still run: each on its smallest sizes (their figures are
not checked here; speed lives in bench/, not in timed tests)."""

from __future__ import annotations

from datetime import timedelta

import psycopg
import pytest

from bench import bench_flow, bench_worker_overhead
from bench.bench_growth import growth, measure
from bench.bench_postgres import one_round
from bench.bench_ui import measure as measure_pages
from bench.bulk_runs import QUEUES, load_runs
from bench.claim_plans import STATEMENTS, check_plans
from slayq.store.postgres import PostgresStore
from slayq.store.protocol import QueueLimit

pytestmark = pytest.mark.anyio


async def test_bulk_runs_loads_runs_the_store_reads_and_claims(pg_url: str) -> None:
    written = await load_runs(pg_url, finished=400, sleeping=30, queued=5)
    assert written["runs"] == 435
    async with await psycopg.AsyncConnection.connect(pg_url) as conn:
        cursor = await conn.execute(
            "select status, count(*) from slayq.runs group by status order by status"
        )
        by_status: dict[str, int] = dict(await cursor.fetchall())
        cursor = await conn.execute(
            "select id::text from slayq.runs where status = 'failed' order by id limit 1"
        )
        failed = await cursor.fetchone()
    assert by_status == {
        "cancelled": 12,
        "completed": 360,
        "failed": 28,
        "queued": 5,
        "sleeping": 30,
    }
    assert failed is not None
    async with PostgresStore(pg_url) as store:
        run = await store.get_run(failed[0])
        assert [(a.number, a.outcome) for a in run.history] == [
            (1, "retrying"),
            (2, "retrying"),
            (3, "failed"),
        ]
        # Only the queued runs are due: finished ones are done, sleeping ones due later.
        claims = await store.claim(
            queues=[QueueLimit(names=QUEUES, concurrency=100)],
            limit=100,
            lease_for=timedelta(minutes=1),
            owner="test",
        )
    assert len(claims) == 5


async def test_claim_plans_explains_each_statement_under_each_plan_mode(pg_url: str) -> None:
    await load_runs(pg_url, finished=2000, sleeping=200, queued=50)
    figures = await check_plans(pg_url, repeat=2, show_plans=False)
    assert figures["table"] == {"finished": 2000, "sleeping": 200, "queued": 50}
    for name in STATEMENTS:
        generic, custom = figures[name]["force_generic_plan"], figures[name]["force_custom_plan"]
        assert (generic["generic_plans"], generic["custom_plans"]) == (2, 0)
        assert (custom["generic_plans"], custom["custom_plans"]) == (0, 2)
    # each execution was rolled back: every one claimed the same ten due runs
    assert figures["claim"]["force_generic_plan"]["rows"] == 10
    assert figures["claim"]["auto"]["rows"] == 10


async def test_bench_postgres_round_gives_every_figure() -> None:
    figures = await one_round(runs=1000, workflows=5, samples=5, via="worker", singles=20)
    assert set(figures) == {
        "send_event_per_s",
        "send_events_batch_per_s",
        "noop_runs_per_s",
        "workflow_steps_per_s",
        "latency_ms",
    }
    assert all(value > 0 for value in figures["latency_ms"].values())


async def test_bench_worker_overhead_drains_every_run() -> None:
    """Its stub store hands out the runs and counts the completions: the round ends only
    once every run completed, so a figure means every run was driven."""
    us_per_run, runs_per_s = await bench_worker_overhead.one_round(runs=300)
    assert us_per_run > 0
    assert runs_per_s > 0


async def test_bench_flow_round_gives_both_figures() -> None:
    figures = await bench_flow.one_round(runs=200, keys=20)
    assert set(figures) == {"noop_runs_per_s", "keyed_runs_per_s"}
    assert all(value > 0 for value in figures.values())


@pytest.mark.parametrize("via", ["worker", "server"])
async def test_bench_growth_measures_each_size(via: str) -> None:
    sizes = [(3, 0), (6, 0), (3, 1)]
    results = await measure(via, sizes, repeat=1)
    assert set(results) == {"3x0kb", "6x0kb", "3x1kb"}
    assert all(r["ms_per_step"] > 0 and r["steps_per_s"] > 0 for r in results.values())
    assert set(growth(results, sizes)) == {"6_over_3_steps_0kb", "3_over_3_steps_1kb"}


async def test_bench_ui_renders_every_page_it_times(pg_url: str) -> None:
    await load_runs(pg_url, finished=3000, sleeping=100)
    figures = await measure_pages(pg_url, requests=2)
    pages = {label for label, value in figures.items() if isinstance(value, dict)}
    assert pages == {
        "runs_page",
        "runs_page_2",
        "runs_failed",
        "runs_event",
        "runs_event_none",
        "runs_data",
        "run_steps",
        "run_failed",
        "overview",
        "queues",
        "runs_data_gin",
    }
    # (each answered 200, or measure() raised); the same data filter shows the same page
    # with the index as without it
    assert figures["runs_data_gin"]["bytes"] == figures["runs_data"]["bytes"]
    assert figures["runs_event_none"]["bytes"] < figures["runs_event"]["bytes"]
