"""Operations on runs: list_runs and its filters, retry, rerun from a step, bulk actions and
the audit log. Every test runs on each store; runs are driven by the engine through a
``Client`` on that store, as the Harness and the worker drive them."""

from __future__ import annotations

import random
from collections import Counter
from datetime import UTC, datetime, timedelta
from typing import Any

import anyio
import anyio.lowlevel
import msgspec
import pytest

import slayq
from slayq import step
from slayq.client import Client
from slayq.errors import EventDataError, InputError, RunNotFoundError
from slayq.model import CancelRule, ParentLink, RunFilter, RunId
from slayq.runtime.clock import VirtualClock
from slayq.runtime.driver import drive
from slayq.runtime.ids import first_id_at, new_run_id
from slayq.store.protocol import Store
from tests.contract.helpers import LEASE, claim_one, new_run, plain_event, start, starting

pytestmark = pytest.mark.anyio

MINUTE = timedelta(minutes=1)


async def run_due(client: Client) -> None:
    """Drive every due run until none is (the Harness's ``run_until_idle``)."""
    rng = random.Random(0)
    while claims := await client.store.claim(queues=None, limit=1, lease_for=LEASE, owner="t"):
        await drive(client.registry, claims[0], client.store.commit, rng=rng)


async def ids(store: Store, **filters: Any) -> list[RunId]:
    client = Client([], store=store)
    page = await client.list_runs(limit=1000, **filters)
    return [run.id for run in page.runs]


# -- finding runs ----------------------------------------------------------------------


async def test_list_runs_filters_by_status_event_queue_parent_and_time(
    store: Store, clock: VirtualClock
) -> None:
    a = await start(store, event="shop/order", queue="orders")
    clock.advance(MINUTE)
    b = await start(store, event="shop/order")
    clock.advance(MINUTE)
    c = await start(store, event="mail/send", parent=ParentLink(run_id=a, step="mail"))
    claim = await claim_one(store)  # the oldest due first: a
    assert claim.lease.run_id == a
    clock.advance(MINUTE)
    assert await store.cancel_run(b)

    assert await ids(store) == [c, b, a]  # newest first
    assert await ids(store, status="running") == [a]
    assert await ids(store, status=["cancelled", "queued"]) == [c, b]
    assert await ids(store, event="shop/order") == [b, a]
    assert await ids(store, queue="orders") == [a]
    assert await ids(store, queue="general", event="shop/order") == [b]
    assert await ids(store, parent=a) == [c]
    # since is inclusive, until exclusive; durations count back from the store's clock
    created_b = (await store.get_run(b)).created_at
    assert await ids(store, since=created_b) == [c, b]
    assert await ids(store, until=created_b) == [a]
    assert await ids(store, since="150s") == [c, b]
    assert await ids(store, since=timedelta(minutes=2, seconds=30), until="90s") == [b]
    assert await ids(store, status="failed") == []


async def test_list_runs_filters_by_data_containment_nested_and_in_arrays(
    store: Store, clock: VirtualClock
) -> None:
    order = {"customer": {"id": 7, "tier": "gold"}, "items": [{"sku": "a"}, {"sku": "b"}]}
    one = await start(store, data=order)
    other = await start(store, data={"customer": {"id": 8}, "items": [], "flag": True})
    numbers = await start(store, data={"n": 1, "s": "1", "f": 1.5, "none": None})
    assert await ids(store, data={"customer": {"id": 7}}) == [one]
    assert await ids(store, data={"customer": {"tier": "gold", "id": 7}}) == [one]
    assert await ids(store, data={"items": [{"sku": "b"}]}) == [one]
    assert await ids(store, data={"customer": {}}) == sorted([one, other], reverse=True)
    assert await ids(store, data={"customer": {"id": 7, "tier": "silver"}}) == []
    assert await ids(store, data={"flag": True}) == [other]
    assert await ids(store, data={"flag": 1}) == []  # JSON types differ: true is not 1
    assert await ids(store, data={"n": 1.0}) == [numbers]  # numbers compare as numbers
    assert await ids(store, data={"n": "1"}) == []
    assert await ids(store, data={"s": "1", "none": None}) == [numbers]
    assert await ids(store, data={"missing": None}) == []


async def test_listed_runs_are_a_list_view_and_get_run_has_the_details(
    store: Store, clock: VirtualClock
) -> None:
    client = Client([], store=store)
    run_id = await start(store)
    claim = await claim_one(store)
    await store.commit(
        claim.lease,
        slayq.model.Transition(
            steps=[slayq.model.StepRecord(name="a", kind="run", output=1)],
            outcome=slayq.model.Suspend(
                pending=[slayq.model.PendingStep(name="nap", kind="sleep", delay=MINUTE)]
            ),
        ),
    )
    (listed,) = (await client.list_runs()).runs
    full = await client.get_run(run_id)
    assert (listed.steps, listed.pending) == ([], [])
    assert ([s.name for s in full.steps], [p.name for p in full.pending]) == (["a"], ["nap"])
    assert msgspec.structs.replace(full, steps=[], pending=[], history=[]) == listed


async def test_pages_are_stable_while_runs_are_inserted_between_fetches(
    store: Store, clock: VirtualClock
) -> None:
    client = Client([], store=store)
    existing = set()
    for i in range(23):
        existing.add(await start(store, data={"i": i}))
        if i % 3 == 0:  # several runs share a creation time: the id breaks the tie
            clock.advance(timedelta(seconds=1))
    seen: list[RunId] = []
    cursor = None
    pages = 0
    while True:
        page = await client.list_runs(limit=5, cursor=cursor)
        seen += [run.id for run in page.runs]
        pages += 1
        for _ in range(3):  # newer runs arrive while the pages are read
            await start(store)
        clock.advance(timedelta(milliseconds=10))
        if page.next_cursor is None:
            break
        cursor = page.next_cursor
    assert len(seen) == len(set(seen)), "a run was listed twice"
    assert set(seen) == existing
    assert pages == 5
    assert seen == sorted(seen, reverse=True)  # newest first is by id


async def test_pages_follow_ids_and_stay_stable_while_runs_are_inserted_concurrently(
    store: Store, clock: VirtualClock
) -> None:
    """Pages are read while another task sends runs: newer ones, and ones from a sender
    whose clock is an hour behind (ids older than every listed run). Each run that existed
    before the first page is listed once; the listing is in descending id order."""
    client = Client([], store=store)
    an_hour_ago = datetime.now(UTC) - timedelta(hours=1)
    existing: set[RunId] = set()
    for i in range(30):
        run = new_run(data={"i": i})
        if i % 10 == 9:  # stored last, made first: listed after the others
            run = msgspec.structs.replace(run, id=first_id_at(an_hour_ago - timedelta(seconds=i)))
        await store.send_events([starting(run)])
        existing.add(run.id)
        clock.advance(timedelta(seconds=1))
    seen: list[RunId] = []
    inserted: list[RunId] = []

    async def read_pages() -> None:
        cursor = None
        while True:
            page = await client.list_runs(limit=4, cursor=cursor)
            seen.extend(run.id for run in page.runs)
            await anyio.lowlevel.checkpoint()
            if page.next_cursor is None:
                return
            cursor = page.next_cursor

    async def insert() -> None:
        for i in range(40):
            run = new_run(data={"new": i})
            if i % 2:
                behind = first_id_at(an_hour_ago + timedelta(milliseconds=i))
                run = msgspec.structs.replace(run, id=behind)
            await store.send_events([starting(run)])
            inserted.append(run.id)
            await anyio.lowlevel.checkpoint()

    async with anyio.create_task_group() as tg:
        tg.start_soon(insert)
        tg.start_soon(read_pages)
    assert len(seen) == len(set(seen)), "a run was listed twice"
    assert existing <= set(seen), "a run that existed was skipped"
    assert set(seen) <= existing | set(inserted)
    assert seen == sorted(seen, reverse=True)
    assert len(inserted) == 40
    assert seen[-3:] == sorted(existing, reverse=True)[-3:]  # by id, not by created_at


async def test_an_exact_page_has_no_next_cursor(store: Store, clock: VirtualClock) -> None:
    client = Client([], store=store)
    for _ in range(4):
        await start(store)
    first = await client.list_runs(limit=2)
    assert first.next_cursor is not None
    second = await client.list_runs(limit=2, cursor=first.next_cursor)
    assert len(second.runs) == 2
    assert second.next_cursor is None


@pytest.mark.parametrize(
    ("options", "named"),
    [
        ({"status": "finished"}, "'finished'"),
        ({"status": ["failed", "exploded"]}, "'exploded'"),
        ({"status": []}, "status"),
        ({"limit": 0}, "limit"),
        ({"limit": 1001}, "limit"),
        ({"cursor": "not-a-cursor"}, "cursor 'not-a-cursor'"),
        ({"cursor": "MjAyNXxub3QtYW4taWQ"}, "cursor"),
        ({"data": ["a"]}, "data"),
        ({"since": "yesterday-ish"}, "since 'yesterday-ish'"),
        ({"parent": "nope"}, "parent 'nope'"),
        ({"event": ""}, "event"),
    ],
)
async def test_bad_list_arguments_are_input_errors_naming_them(
    store: Store, options: dict[str, Any], named: str
) -> None:
    await start(store)
    with pytest.raises(InputError, match=named.replace("[", r"\[")):
        await Client([], store=store).list_runs(**options)


async def test_stores_check_filters_that_did_not_come_through_a_client(store: Store) -> None:
    bad = RunFilter(status=["lost"])  # type: ignore[list-item]  # as an older client may send
    with pytest.raises(InputError, match="'lost'"):
        await store.list_runs(bad, limit=10, cursor=None)
    with pytest.raises(InputError, match="'lost'"):
        await store.cancel_runs(bad, dry_run=False, actor="t")
    with pytest.raises(InputError, match="limit"):
        await store.list_runs(RunFilter(), limit=5000, cursor=None)


# -- acting on runs --------------------------------------------------------------------


class Keyed(msgspec.Struct):
    k: int


def flaky_function(calls: Counter[str], broken: list[bool]) -> slayq.Function:
    @slayq.function(
        event="test/flaky", schema=Keyed, retries=0, cancel_on=[slayq.Match("test/stop", "k")]
    )
    async def flaky(ctx: slayq.Context[Keyed]) -> slayq.Workflow:
        def first() -> str:
            calls["first"] += 1
            return "one"

        def second() -> str:
            calls["second"] += 1
            if broken[0]:
                raise RuntimeError("the bug")
            return "two"

        def third() -> str:
            calls["third"] += 1
            return "three"

        a = yield step.run("first", first)
        b = yield step.run("second", second)
        c = yield step.run("third", third)
        yield slayq.finish([a, b, c])

    return flaky


async def test_retry_runs_a_failed_run_again_from_where_it_stopped(
    store: Store, clock: VirtualClock
) -> None:
    calls: Counter[str] = Counter()
    broken = [True]
    client = Client([flaky_function(calls, broken)], store=store)
    run_id = await client.send_event("test/flaky", {"k": 1})
    assert run_id is not None
    await run_due(client)
    failed = await client.get_run(run_id)
    assert (failed.status, failed.attempts, failed.max_attempts) == ("failed", 1, 1)
    assert failed.error is not None and failed.error.message == "the bug"

    broken[0] = False
    clock.advance(MINUTE)
    assert await client.retry(run_id, actor="tester") == run_id
    queued = await client.get_run(run_id)
    assert (queued.status, queued.attempts, queued.max_attempts) == ("queued", 2, 2)
    assert (queued.result, queued.finished_at, queued.run_at) == (None, None, clock.now())
    assert queued.error == failed.error  # kept until the next attempt ends
    assert [s.name for s in queued.steps] == ["first"]

    await run_due(client)
    done = await client.get_run(run_id)
    assert (done.status, done.result) == ("completed", ["one", "two", "three"])
    assert calls == {"first": 1, "second": 2, "third": 1}


async def test_the_attempt_budget_is_renewed_by_as_many_attempts_as_were_spent(
    store: Store, clock: VirtualClock
) -> None:
    run_id = await start(store, max_attempts=3)
    for attempt in (1, 2, 3):
        claim = await claim_one(store)
        assert claim.attempt == attempt
        error = slayq.model.ErrorInfo(type="E", message="no")
        retry = MINUTE if attempt < 3 else None
        await store.commit(
            claim.lease,
            slayq.model.Transition(steps=[], outcome=slayq.model.Failed(error, retry)),
        )
        clock.advance(MINUTE)
    assert (await store.get_run(run_id)).status == "failed"
    await store.retry_run(run_id, actor="t")
    run = await store.get_run(run_id)
    assert (run.attempts, run.max_attempts) == (4, 6)
    assert (await claim_one(store)).attempt == 4


async def test_a_retried_run_gets_its_cancel_rules_back(store: Store, clock: VirtualClock) -> None:
    rule = CancelRule(event="test/stop", field="k", value=1)
    run_id = await start(store, cancel_on=[rule])
    assert await store.cancel_run(run_id)
    await store.send_events([plain_event("test/stop", {"k": 1})])
    await store.retry_run(run_id, actor="t")
    assert (await store.get_run(run_id)).status == "queued"
    await store.send_events([plain_event("test/stop", {"k": 2})])
    assert (await store.get_run(run_id)).status == "queued"
    await store.send_events([plain_event("test/stop", {"k": 1})])
    assert (await store.get_run(run_id)).status == "cancelled"


async def test_only_failed_or_cancelled_runs_can_be_retried(
    store: Store, clock: VirtualClock
) -> None:
    run_id = await start(store)
    with pytest.raises(InputError, match="is queued"):
        await store.retry_run(run_id, actor="t")
    await claim_one(store)
    with pytest.raises(InputError, match="is running"):
        await store.retry_run(run_id, actor="t")
    with pytest.raises(RunNotFoundError):
        await store.retry_run(new_run_id(), actor="t")
    with pytest.raises(RunNotFoundError):
        await store.retry_run(RunId("not-an-id"), actor="t")
    assert (await store.get_run(run_id)).status == "running"
    assert await store.list_audit() == []


async def test_retrying_an_invoked_run_leaves_its_caller_as_it_was(
    store: Store, clock: VirtualClock
) -> None:
    parent = await start(store, event="test/parent")
    claim = await claim_one(store)
    child = new_run(event="test/child", parent=ParentLink(run_id=parent, step="call"))
    await store.commit(
        claim.lease,
        slayq.model.Transition(
            steps=[],
            outcome=slayq.model.Suspend(
                pending=[slayq.model.PendingStep(name="call", kind="invoke", child=child)]
            ),
        ),
    )
    assert await store.cancel_run(child.id)
    caller = await store.get_run(parent)
    assert (caller.status, [s.name for s in caller.steps]) == ("queued", ["call"])
    await store.retry_run(child.id, actor="t")
    child_claim = await claim_one(store)  # the caller is due too; take the child's
    if child_claim.lease.run_id != child.id:
        child_claim = await claim_one(store)
    await store.commit(
        child_claim.lease, slayq.model.Transition(steps=[], outcome=slayq.model.Completed("ok"))
    )
    assert (await store.get_run(child.id)).status == "completed"
    after = await store.get_run(parent)
    assert [s.name for s in after.steps] == ["call"]
    assert after.steps[0].error is not None  # the caller keeps the failure it got


async def test_rerun_from_a_step_copies_the_memo_before_it_and_runs_the_rest(
    store: Store, clock: VirtualClock
) -> None:
    calls: Counter[str] = Counter()
    client = Client([flaky_function(calls, [False])], store=store)
    source = await client.send_event("test/flaky", {"k": 1})
    assert source is not None
    await run_due(client)
    assert calls == {"first": 1, "second": 1, "third": 1}
    original = await client.get_run(source)

    fork = await client.rerun(source, from_step="second", actor="tester")
    assert fork != source
    forked = await client.get_run(fork)
    assert (forked.forked_from, forked.status, forked.data) == (source, "queued", {"k": 1})
    assert forked.steps == original.steps[:1]  # "first", as it was recorded
    first = forked.steps[0]  # with when it ran, for how long, in which attempt
    assert (first.started_at, first.duration, first.attempt) != (None, None, None)
    assert first.attempt == 1
    await run_due(client)
    assert calls == {"first": 1, "second": 2, "third": 2}
    assert (await client.get_run(fork)).result == ["one", "two", "three"]

    whole = await client.rerun(source, data={"k": 2})
    assert (await client.get_run(whole)).steps == []
    await run_due(client)
    assert calls == {"first": 2, "second": 3, "third": 3}
    assert (await client.get_run(whole)).data == {"k": 2}
    assert (await client.get_run(source)).forked_from is None


async def test_rerun_refuses_an_unknown_step_and_bad_data_changing_nothing(
    store: Store, clock: VirtualClock
) -> None:
    class Order(msgspec.Struct):
        n: int

    @slayq.function(event="test/order", schema=Order)
    async def order(ctx: slayq.Context[Order]) -> slayq.Workflow:
        yield step.run("charge", lambda: ctx.data.n)

    client = Client([order], store=store)
    source = await client.send_event("test/order", {"n": 1})
    assert source is not None
    await run_due(client)
    with pytest.raises(InputError, match=r"no step 'ship'.*\['charge'\]"):
        await client.rerun(source, from_step="ship")
    with pytest.raises(EventDataError):
        await client.rerun(source, data={"n": "one"})
    with pytest.raises(InputError, match="from_step"):
        await client.rerun(source, from_step="")
    with pytest.raises(RunNotFoundError):
        await client.rerun(new_run_id())
    assert await ids(store) == [source]
    assert await store.list_audit() == []


async def test_bulk_actions_count_on_a_dry_run_and_act_on_the_filtered_runs(
    store: Store, clock: VirtualClock
) -> None:
    client = Client([], store=store)
    keep = await start(store, event="test/other")
    doomed = [await start(store, data={"batch": 1}) for _ in range(4)]
    done = await start(store, data={"batch": 1})
    assert await store.cancel_run(done)

    assert await client.cancel_runs(data={"batch": 1}, dry_run=True) == 4
    assert await ids(store, status="cancelled") == [done]
    assert await store.list_audit() == [
        msgspec.convert(
            {"at": clock.now(), "actor": "api", "action": "cancel", "target": done, "detail": {}},
            slayq.model.AuditEntry,
        )
    ]
    assert await client.cancel_runs(data={"batch": 1}, actor="ops") == 4
    assert set(await ids(store, status="cancelled")) == {done, *doomed}
    assert (await store.get_run(keep)).status == "queued"

    assert await client.retry_runs(event="test/run", dry_run=True) == 5
    assert await client.retry_runs(event="test/run", status="cancelled", actor="ops") == 5
    assert set(await ids(store, status="queued")) == {keep, done, *doomed}
    assert await client.retry_runs(event="test/run") == 0


async def test_every_action_writes_one_audit_row_and_dry_runs_none(
    store: Store, clock: VirtualClock
) -> None:
    calls: Counter[str] = Counter()
    client = Client([flaky_function(calls, [True])], store=store)
    run_id = await client.send_event("test/flaky", {"k": 1})
    assert run_id is not None
    await run_due(client)
    await client.retry(run_id, actor="cli:ann@box")
    clock.advance(MINUTE)
    await client.cancel(run_id)
    assert not await client.cancel(run_id)  # already finished: nothing done, nothing audited
    fork = await client.rerun(run_id, from_step="first", actor="dash")
    await client.cancel_runs(status="queued", dry_run=True)
    await client.cancel_runs(status="queued", actor="ops")
    await client.retry_runs(event="test/flaky", dry_run=True)

    entries = await client.list_audit()
    assert [(e.actor, e.action, e.target) for e in entries] == [
        ("ops", "cancel_runs", '{"status":["queued"]}'),
        ("dash", "rerun", run_id),
        ("api", "cancel", run_id),
        ("cli:ann@box", "retry", run_id),
    ]
    assert entries[0].detail == {"count": 1}
    assert entries[1].detail == {"run_id": fork, "from_step": "first"}
    assert entries[3].detail == {"status": "failed"}
    assert entries[3].at == entries[2].at - MINUTE
    assert [e.action for e in await client.list_audit(limit=1)] == ["cancel_runs"]
    with pytest.raises(InputError, match="actor"):
        await store.retry_run(run_id, actor="")


async def test_bulk_actions_go_in_batches_and_record_one_audit_row(
    store: Store, clock: VirtualClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    from slayq.store.postgres import _ops_runs

    monkeypatch.setattr(_ops_runs, "BULK_BATCH", 3)
    runs = [new_run() for _ in range(10)]
    await store.send_events([starting(run) for run in runs])
    assert await store.cancel_runs(RunFilter(), dry_run=False, actor="ops") == 10
    assert set(await ids(store, status="cancelled")) == {run.id for run in runs}
    assert await store.retry_runs(RunFilter(), dry_run=False, actor="ops") == 10
    assert await ids(store, status="cancelled") == []
    audit = await store.list_audit()
    assert [(e.action, e.detail) for e in audit] == [
        ("retry_runs", {"count": 10}),
        ("cancel_runs", {"count": 10}),
    ]
