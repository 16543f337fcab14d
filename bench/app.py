"""Functions the benchmarks run in worker subprocesses: ``bench.app:client``."""

from __future__ import annotations

import os
import time

import msgspec
from starlette.applications import Starlette
from starlette.routing import Route

import slayq
from slayq import step
from slayq.client import Client
from slayq.store.postgres import PostgresStore
from slayq.transport.wire import Limits

STARTS = os.environ.get("BENCH_STARTS", "/dev/null")
# Every delivery carries the run's memo: 500 steps of 20 KiB are 10 MiB, over the default
# 8 MiB. The benchmarks give the server the same (SLAY_Q_BODY_LIMIT).
BODY_BYTES = 64 * 2**20


class Item(msgspec.Struct):
    i: int = 0


class Chain(msgspec.Struct):
    """A workflow of ``steps`` steps, each returning ``output_kb`` KiB (0: a small int)."""

    i: int = 0
    steps: int = 10
    output_kb: int = 0


async def nothing(i: int) -> int:
    return i


@slayq.function(event="bench/noop", schema=Item)
async def noop(ctx: slayq.Context[Item]) -> slayq.Workflow:
    yield step.run("noop", nothing, ctx.data.i)


async def output(n: int, kb: int) -> int | str:
    return "x" * (kb * 1024) if kb else n


class Keyed(msgspec.Struct):
    i: int = 0
    customer: int = 0


# A no-op under a concurrency key (bench.bench_flow): at most 5 in flight per customer.
@slayq.function(
    event="bench/keyed", schema=Keyed, concurrency=slayq.Concurrency(limit=5, key="customer")
)
async def keyed(ctx: slayq.Context[Keyed]) -> slayq.Workflow:
    yield step.run("noop", nothing, ctx.data.i)


@slayq.function(event="bench/workflow", schema=Chain)
async def workflow(ctx: slayq.Context[Chain]) -> slayq.Workflow:
    done = 0
    for n in range(ctx.data.steps):
        yield step.run(f"step-{n}", output, n, ctx.data.output_kb)
        done += 1
    yield slayq.finish(done)


async def record_start(i: int) -> None:
    # One append per run: "<i> <unix time>"; the bench pairs it with its send time.
    fd = os.open(STARTS, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(fd, f"{i} {time.time():.6f}\n".encode())
    finally:
        os.close(fd)


@slayq.function(event="bench/latency", schema=Item)
async def latency(ctx: slayq.Context[Item]) -> slayq.Workflow:
    yield step.run("mark", record_start, ctx.data.i)


client = Client(
    [noop, keyed, workflow, latency],
    store=PostgresStore(os.environ.get("SLAY_Q_DATABASE_URL", "")),
    endpoint=os.environ.get("BENCH_ENDPOINT"),
    body_limits=Limits(body_bytes=BODY_BYTES),
)

# Served by uvicorn for the benchmark through the server: uvicorn bench.app:app
app = Starlette(routes=[Route("/api/slay-q", client.asgi, methods=["POST"])])
