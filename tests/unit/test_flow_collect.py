"""Debounce and batch end to end on the Harness, and the batch rules both stores share."""

from __future__ import annotations

from datetime import timedelta

import msgspec
import pytest
from hypothesis import given
from hypothesis import strategies as st

import slayq
from slayq.model import FlowBatch
from slayq.runtime.limits import SizeLimits
from slayq.store._flow_collect import WRAPPER_BYTES, Plan, plan
from slayq.testing import Harness

pytestmark = pytest.mark.anyio


class Usage(msgspec.Struct):
    account: str
    n: int


class Edit(msgspec.Struct):
    doc: str
    rev: int


@slayq.function(
    event="usage/recorded",
    schema=Usage,
    batch=slayq.Batch(max_size=3, timeout="5s", key="account"),
)
async def record(ctx: slayq.Context[Usage]) -> slayq.Workflow:
    assert ctx.data == ctx.events[0]
    yield slayq.finish([(e.account, e.n) for e in ctx.events])


@slayq.function(
    event="doc/edited",
    schema=Edit,
    debounce=slayq.Debounce(period="5m", timeout="30m", key="doc"),
)
async def reindex(ctx: slayq.Context[Edit]) -> slayq.Workflow:
    yield slayq.finish([(e.doc, e.rev) for e in ctx.events])


async def test_a_batch_function_reads_its_events_as_ctx_events() -> None:
    async with Harness([record]) as h:
        sent = [("usage/recorded", {"account": "a", "n": n}) for n in range(7)]
        ids = await h.send_events([*sent, ("usage/recorded", {"account": "b", "n": 0})])
        assert ids[0:3] == [ids[0]] * 3 and ids[3:6] == [ids[3]] * 3
        assert len({ids[0], ids[3], ids[6], ids[7]}) == 4
        await h.run_until_idle()
        runs = [await h.get_run(run_id) for run_id in ids if run_id is not None]
        assert [r.result for r in (runs[0], runs[3])] == [
            [["a", 0], ["a", 1], ["a", 2]],
            [["a", 3], ["a", 4], ["a", 5]],
        ]
        assert (runs[6].status, runs[7].status) == ("queued", "queued"), "not full: 5s"
        await h.advance("5s")
        assert (await h.get_run(runs[6].id)).result == [["a", 6]]
        assert (await h.get_run(runs[7].id)).result == [["b", 0]]


async def test_a_batch_holds_at_most_the_clients_event_data_limit() -> None:
    one = len(msgspec.json.encode({"account": "a", "n": 0}))
    limit = WRAPPER_BYTES + 2 * one + 1  # room for two events
    async with Harness([record], limits=SizeLimits(event_data_bytes=limit)) as h:
        ids = await h.send_events([("usage/recorded", {"account": "a", "n": n}) for n in range(5)])
        assert ids == [ids[0]] * 2 + [ids[2]] * 2 + [ids[4]]
        await h.run_until_idle()  # the two full batches
        assert ids[2] is not None
        assert (await h.get_run(ids[2])).result == [["a", 2], ["a", 3]]


async def test_a_debounced_function_runs_once_with_the_last_event() -> None:
    async with Harness([reindex]) as h:
        ids = []
        for rev in range(3):
            ids.append(await h.send_event("doc/edited", {"doc": "d", "rev": rev}))
            await h.advance("1m")
        assert ids == [ids[0]] * 3
        run_id = ids[0]
        assert run_id is not None
        assert (await h.get_run(run_id)).status == "queued"
        await h.advance("4m")  # five minutes after the last edit
        run = await h.get_run(run_id)
        assert (run.status, run.result) == ("completed", [["d", 2]])
        again = await h.send_event("doc/edited", {"doc": "d", "rev": 3})
        assert again != run_id, "after the run started, an edit starts a new debounce"


# -- the batch rules both stores share ---------------------------------------------------

BATCH = FlowBatch(bucket="b", max_size=4, timeout=timedelta(seconds=5), max_bytes=60)


def placed_one_at_a_time(
    items: list[int], open_batch: tuple[int, int] | None
) -> tuple[list[int], dict[int, bool]]:
    """Events placed as the memory store places them, each alone: per event its batch
    (0: the open one, then 1, 2, ... for new ones), and per batch whether it is full."""
    newest, number = open_batch, 0
    where: list[int] = []
    full: dict[int, bool] = {0: False}
    for item in items:
        at = plan(BATCH, [item], newest)
        if at.open_full:
            full[number] = True
        if at.joining:
            assert newest is not None
            newest = (newest[0] + 1, newest[1] + 1 + item)
        else:
            ((_, _, full[number + 1]),) = at.new
            number, newest = number + 1, (1, WRAPPER_BYTES + item)
        where.append(number)
    return where, full


@given(
    items=st.lists(st.integers(min_value=1, max_value=70), max_size=20),
    open_batch=st.none() | st.tuples(st.integers(1, 5), st.integers(15, 70)),
)
def test_a_plan_places_events_as_sending_them_one_by_one_would(
    items: list[int], open_batch: tuple[int, int] | None
) -> None:
    at = plan(BATCH, items, open_batch)
    where = [0] * at.joining
    full = {0: at.open_full}
    for number, (start, end, is_full) in enumerate(at.new, start=1):
        where += [number] * (end - start)
        full[number] = is_full
    assert (where, full) == placed_one_at_a_time(items, open_batch)
    for start, end, _ in at.new:
        size = WRAPPER_BYTES + sum(items[start:end]) + (end - start - 1)
        assert end - start <= BATCH.max_size
        assert size <= BATCH.max_bytes or end - start == 1, "only a lone event may be over"


def test_a_batch_is_full_at_max_size_or_when_the_next_event_does_not_fit() -> None:
    assert plan(BATCH, [5, 5, 5, 5, 5], None).new == [(0, 4, True), (4, 5, False)]
    assert plan(BATCH, [20, 20, 20], None).new == [(0, 2, True), (2, 3, False)]
    assert plan(BATCH, [99], (1, 20)) == Plan(joining=0, open_full=True, new=[(0, 1, False)])
    assert plan(BATCH, [5], (3, 30)) == Plan(joining=1, open_full=True, new=[])
    assert plan(BATCH, [5], (4, 30)) == Plan(joining=0, open_full=False, new=[(0, 1, False)])


async def test_a_batch_run_reruns_as_a_batch_of_the_same_events() -> None:
    from slayq.client import Client
    from slayq.errors import EventDataError
    from slayq.store.memory import MemoryStore

    client = Client([record], store=MemoryStore())
    first = await client.send_event("usage/recorded", {"account": "a", "n": 1})
    await client.send_event("usage/recorded", {"account": "a", "n": 2})
    assert first is not None
    copy = await client.rerun(first)
    assert (await client.get_run(copy)).data == {
        "events": [{"account": "a", "n": 1}, {"account": "a", "n": 2}]
    }
    edited = await client.rerun(first, data={"events": [{"account": "a", "n": 9}]})
    assert (await client.get_run(edited)).data == {"events": [{"account": "a", "n": 9}]}
    with pytest.raises(EventDataError, match=r"is batched: a rerun's data must be"):
        await client.rerun(first, data={"account": "a", "n": 3})
    with pytest.raises(EventDataError, match="does not match"):
        await client.rerun(first, data={"events": [{"account": 5}]})
