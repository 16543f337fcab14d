"""A lone event starting a run without a key or cancel rules (``send_event``'s usual
case) takes its own statement, ``INSERT_QUIET_RUN``, a parameter per column; a batch
takes ``INSERT_QUIET_RUNS``. The two must write the same run and tell the same
listeners: the same runs are sent both ways here and their rows compared, column by
column, under a virtual clock that makes the times comparable too.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import anyio
import msgspec
import psycopg
import pytest

from slayq.model import CancelRule, Flow, FlowRate, FlowSlot, NewRun, RunId
from slayq.runtime.clock import VirtualClock
from slayq.store.postgres import PostgresStore
from tests.contract.helpers import new_run, starting

pytestmark = pytest.mark.anyio

NOW = datetime(2030, 1, 2, 3, 4, 5, 678901, tzinfo=UTC)

# Every column a send writes, or that a default fills: all but the id and the sequence.
COLUMNS = """event, data::text, queue, priority, max_attempts, key, parent_run_id,
    parent_step, created_at, updated_at, run_at, event_cursor, endpoint, may_wait,
    trace::text, cancel_on::text, flow::text, status, attempt, gated, lease_token,
    result::text, error::text, finished_at"""


def variety() -> list[NewRun]:
    """Runs of every kind the single-run statement takes."""
    flow = Flow(
        concurrency=[FlowSlot(bucket="sync customer=7", limit=2)],
        throttle=FlowRate(bucket="sync", interval=timedelta(seconds=1), burst=3),
    )
    runs = [
        new_run("single/plain", {"b": 1, "a": [1.5, "x", None], "big": 2**70}),
        new_run("single/queued", {}, queue="emails", priority=-3, max_attempts=9),
        new_run("single/later", {"n": 1}, delay=timedelta(minutes=5)),
        new_run("single/at", {"n": 2}, run_at=NOW + timedelta(days=400)),
        new_run("single/past", {"n": 3}, run_at=NOW - timedelta(hours=1)),
        new_run("single/waits", {"n": 4}, may_wait=True),
        # text that spells a NUL's escape: kept (it takes the batch statement, see run_params)
        new_run("single/spelled", {"t": "back\\u0000slash"}),
    ]
    runs.append(
        msgspec.structs.replace(
            new_run("single/traced", {"n": 5}),
            trace={"traceparent": "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"},
            endpoint="https://app.example/api/slay-q",
        )
    )
    runs.append(msgspec.structs.replace(new_run("single/flow", {"n": 6}), flow=flow))
    return runs


def named(row: tuple[Any, ...]) -> dict[str, Any]:
    names = [column.strip().split("::")[0] for column in COLUMNS.split(",")]
    return dict(zip(names, row, strict=True))


async def rows_of(url: str, ids: list[RunId]) -> list[tuple[Any, ...]]:
    async with await psycopg.AsyncConnection.connect(url) as conn:
        cursor = await conn.execute(
            f"select {COLUMNS} from slayq.runs where id = any(%s::uuid[])"
            " order by array_position(%s::uuid[], id)",
            [ids, ids],
        )
        return await cursor.fetchall()


async def test_a_run_sent_alone_is_written_as_the_same_run_sent_in_a_batch(
    pg_url: str,
) -> None:
    async with PostgresStore(pg_url, clock=VirtualClock(NOW)) as store:
        alone = [(await store.send_events([starting(run)]))[0] for run in variety()]
        # in a batch (with a run of another event), each again, with a new id
        batched = [
            (
                await store.send_events(
                    [starting(msgspec.structs.replace(run, id=new_run().id)), starting(new_run())]
                )
            )[0]
            for run in variety()
        ]
    assert None not in alone and None not in batched
    single_rows = await rows_of(pg_url, [RunId(str(i)) for i in alone])
    batch_rows = await rows_of(pg_url, [RunId(str(i)) for i in batched])
    assert len(single_rows) == len(variety())
    assert single_rows == batch_rows
    # and the values are the run's, not only alike
    plain, later = named(single_rows[0]), named(single_rows[2])
    assert plain["data"] == '{"b":1,"a":[1.5,"x",null],"big":1180591620717411303424}'
    assert plain["created_at"] == NOW and plain["run_at"] == NOW
    assert later["run_at"] == NOW + timedelta(minutes=5)
    assert named(single_rows[6])["data"] == '{"t":"back\\\\u0000slash"}'


async def listened(url: str, channel: str, send: NewRun) -> list[str]:
    """What a listener on ``channel`` hears within a second of sending ``send`` alone."""
    heard: list[str] = []
    async with await psycopg.AsyncConnection.connect(url, autocommit=True) as listener:
        await listener.execute(f'listen "{channel}"')
        async with PostgresStore(url) as store:
            await store.send_events([starting(send)])
        with anyio.move_on_after(1):
            async for notify in listener.notifies():
                heard.append(notify.payload)
    return heard


async def test_a_run_sent_alone_tells_its_queue_only_if_it_is_due(pg_url: str) -> None:
    async with PostgresStore(pg_url) as store:
        channel = store.channel
    assert await listened(pg_url, channel, new_run("single/due", queue="emails")) == ["emails"]
    assert await listened(pg_url, channel, new_run("single/later", delay=timedelta(hours=1))) == []


async def test_a_lone_event_someone_waits_on_or_cancels_on_takes_the_full_path(
    pg_url: str,
) -> None:
    """The statement declines (nothing written) when a rule or wait matches the name;
    the send then goes the transactional way, which cancels the run with the rule."""
    async with PostgresStore(pg_url) as store:
        rule = CancelRule(event="single/stop", field="order", value=7)
        (doomed,) = await store.send_events([starting(new_run("single/job", cancel_on=[rule]))])
        stopping = new_run("single/stop", {"order": 7})
        (started,) = await store.send_events([starting(stopping)])
        assert started == stopping.id
        assert doomed is not None
        assert (await store.get_run(doomed)).status == "cancelled"
        assert (await store.get_run(stopping.id)).status == "queued"
