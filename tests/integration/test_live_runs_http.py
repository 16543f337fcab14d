"""A run's memo crosses the wire once per attempt: the server's executor, a real loopback
socket and the app's receiver, which keeps the run live between deliveries.

The app side is wrapped in a recorder that notes each delivery's kind and size and can
route deliveries to several receivers (replicas behind a load balancer, or an app that
restarts). Whatever the routing, every step handler runs exactly once.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import timedelta

import httpx
import msgspec
import pytest

import slayq
from slayq import step
from slayq.model import RunInfo
from slayq.runtime.clock import VirtualClock
from slayq.runtime.functions import Function
from slayq.runtime.registry import Registry
from slayq.server.delivery import HttpExecutor
from slayq.store.memory import MemoryStore
from slayq.transport import (
    WIRE_VERSION,
    ContinueDelivery,
    Deliverer,
    DeliveryError,
    Receiver,
    asgi_app,
    encode_delivery,
    sign,
)
from slayq.transport.live import LiveRuns
from slayq.transport.receiver import ASGIApp, ASGIReceive, ASGISend, Message, Scope
from tests.contract.helpers import claim_one, start
from tests.integration.test_receiver_http import SECRET, claim_for, fixed_response, serve

pytestmark = pytest.mark.anyio

STEPS = 6
OUTPUT = "x" * 1000  # each step's output: 1,000 bytes a full claim carries per memo record


class ChainData(msgspec.Struct):
    fail_once: bool = False


def chain(calls: Counter[str]) -> Function:
    """``STEPS`` steps, then finish; step 3 fails once when the data says so."""

    @slayq.function(event="test/chain", schema=ChainData, retries=2)
    async def chain(ctx: slayq.Context[ChainData]) -> slayq.Workflow:
        calls["started"] += 1  # a generator started: a fresh replay
        try:
            for n in range(STEPS):

                def work(n: int = n) -> str:
                    calls[f"step-{n}"] += 1
                    if n == 3 and ctx.data.fail_once and calls["step-3"] == 1:
                        raise RuntimeError("the first try of step 3 fails")
                    return OUTPUT

                yield step.run(f"step-{n}", work)
            yield slayq.finish("done")
        finally:
            calls["closed"] += 1  # finished, or closed by the receiver's cache

    return chain


@dataclass
class Delivery:
    kind: str
    size: int
    replica: int


@dataclass
class Recorder:
    """An ASGI app that notes each delivery and hands it to ``route(n)``'s receiver."""

    receivers: list[Receiver]
    route: Callable[[int], int] = lambda n: 0
    before: Callable[[int], None] = lambda n: None
    seen: list[Delivery] = field(default_factory=list)

    async def __call__(self, scope: Scope, receive: ASGIReceive, send: ASGISend) -> None:
        if scope["type"] == "lifespan":
            while (await receive())["type"] == "lifespan.startup":
                await send({"type": "lifespan.startup.complete"})
            await send({"type": "lifespan.shutdown.complete"})
            return
        body = b""
        while True:
            message = await receive()
            body += message.get("body", b"")
            if not message.get("more_body", False):
                break
        n = len(self.seen)
        replica = self.route(n)
        self.before(n)
        kind = msgspec.json.decode(body)["kind"]
        self.seen.append(Delivery(kind, len(body), replica))
        sent = False

        async def replay() -> Message:
            nonlocal sent
            if sent:
                return {"type": "http.disconnect"}
            sent = True
            return {"type": "http.request", "body": body, "more_body": False}

        app: ASGIApp = asgi_app(self.receivers[replica])
        await app(scope, replay, send)

    def kinds(self) -> list[str]:
        return [d.kind for d in self.seen]


def receiver(calls: Counter[str], **options: object) -> Receiver:
    return Receiver(Registry([chain(calls)]), [SECRET], **options)  # type: ignore[arg-type]


@pytest.fixture
def calls() -> Counter[str]:
    return Counter()


@pytest.fixture
def store(clock: VirtualClock) -> MemoryStore:
    return MemoryStore(clock)


async def run_attempt(store: MemoryStore, url: str, deliverer: Deliverer) -> None:
    """Claim the one due run and execute it over HTTP, as the server does."""
    claim = await claim_one(store)
    executor = HttpExecutor(deliverer, release=store.release, fallback_endpoint=url)
    await executor(claim, store.commit)


async def run_to_the_end(
    store: MemoryStore, clock: VirtualClock, recorder: Recorder, data: dict[str, bool]
) -> RunInfo:
    run_id = await start(store, event="test/chain", data=data)
    with serve(recorder) as url:
        async with Deliverer(SECRET, timeout=10) as deliverer:
            for _ in range(3):
                await run_attempt(store, url, deliverer)
                run = await store.get_run(run_id)
                if run.status != "queued":
                    return run
                clock.advance(timedelta(hours=1))  # past the retry's backoff
    raise AssertionError(f"run {run_id} did not finish in 3 attempts")


def each_step_ran_once(calls: Counter[str]) -> bool:
    return all(calls[f"step-{n}"] == 1 for n in range(STEPS))


async def test_a_workflow_ships_its_memo_once_per_attempt(
    store: MemoryStore, clock: VirtualClock, calls: Counter[str]
) -> None:
    app = receiver(calls)
    recorder = Recorder([app])
    run = await run_to_the_end(store, clock, recorder, {"fail_once": True})
    assert run.status == "completed", run.error
    assert run.attempts == 2
    # Attempt 1: steps 0-2 commit, step 3 fails. Attempt 2 starts from the memo of 3
    # steps, then runs steps 3-5 (the finish rides with step 5): one whole claim per
    # attempt, then continues.
    assert recorder.kinds() == [
        *["claim", "continue", "continue", "continue"],
        *["claim", "continue", "continue"],
    ]
    first_claim, resumed_claim = (d for d in recorder.seen if d.kind == "claim")
    assert first_claim.size < len(OUTPUT)  # an empty memo
    assert resumed_claim.size > 3 * len(OUTPUT)  # the memo of steps 0-2, once
    assert all(d.size < 200 for d in recorder.seen if d.kind == "continue")
    assert calls["step-3"] == 2  # failed once, then succeeded
    assert all(calls[f"step-{n}"] == 1 for n in (0, 1, 2, 4, 5))
    # One generator per attempt, each closed at its end; the cache holds nothing after.
    assert (calls["started"], calls["closed"]) == (2, 2)
    assert len(app.live) == 0


async def test_round_robin_replicas_each_step_runs_once(
    store: MemoryStore, clock: VirtualClock, calls: Counter[str]
) -> None:
    # Two app processes behind a load balancer, taking turns: each continue reaches the
    # replica that does not hold the run, which asks for the whole claim.
    replicas = [receiver(calls), receiver(calls)]
    recorder = Recorder(replicas, route=lambda n: n % 2)
    run = await run_to_the_end(store, clock, recorder, {})
    assert (run.status, run.attempts) == ("completed", 1)
    assert run.result == "done"
    assert each_step_ran_once(calls)
    assert [s.name for s in run.steps] == [f"step-{n}" for n in range(STEPS)]
    # claim (A keeps it), continue (B: miss), claim (A: replaces its copy), ...
    assert recorder.kinds()[:4] == ["claim", "continue", "claim", "continue"]
    assert calls["started"] == calls["closed"]  # every replaced generator was closed
    assert sum(len(r.live) for r in replicas) == 0


async def test_an_app_restart_between_steps_loses_no_step(
    store: MemoryStore, clock: VirtualClock, calls: Counter[str]
) -> None:
    before, after = receiver(calls), receiver(calls)  # the process, then its restart
    recorder = Recorder([before, after], route=lambda n: 0 if n < 3 else 1)
    run = await run_to_the_end(store, clock, recorder, {})
    assert (run.status, run.attempts) == ("completed", 1)
    assert each_step_ran_once(calls)
    # The restarted app gets a continue it cannot serve; the claim is resent at once.
    assert recorder.kinds()[2:6] == ["continue", "continue", "claim", "continue"]
    assert [d.replica for d in recorder.seen[3:]] == [1] * (len(recorder.seen) - 3)
    assert len(before.live) == 1  # the old process's copy, never resumed
    await before.live.aclose()


async def test_an_expired_run_is_closed_and_its_claim_resent(
    store: MemoryStore, clock: VirtualClock, calls: Counter[str]
) -> None:
    now = [0.0]
    app = receiver(calls)
    app.live = LiveRuns(idle=30, clock=lambda: now[0])

    def idle_a_minute(n: int) -> None:
        now[0] += 60  # every delivery arrives after the kept run expired

    recorder = Recorder([app], before=idle_a_minute)
    run = await run_to_the_end(store, clock, recorder, {})
    assert (run.status, run.attempts) == ("completed", 1)
    assert each_step_ran_once(calls)
    # One delivery per step (the finish rides with the last); each continue misses.
    assert recorder.kinds() == ["claim"] + ["continue", "claim"] * (STEPS - 1)
    # Each expired generator was closed (its finally ran) before the next replay.
    assert calls["started"] == calls["closed"] == STEPS


async def test_an_evicted_run_is_resent_whole(
    store: MemoryStore, clock: VirtualClock, calls: Counter[str]
) -> None:
    app = receiver(calls, live_runs=0)  # keeps nothing: every continue would miss
    recorder = Recorder([app])
    run = await run_to_the_end(store, clock, recorder, {})
    assert (run.status, run.attempts) == ("completed", 1)
    assert each_step_ran_once(calls)
    # The app said it keeps nothing, so the server never sent a continue.
    assert recorder.kinds() == ["claim"] * STEPS
    assert calls["started"] == calls["closed"] == STEPS


# -- wire versions -----------------------------------------------------------------------


async def test_an_older_server_gets_a_clear_400_from_the_app(calls: Counter[str]) -> None:
    # Wire version 1 was the bare Claim, no version in it: what an older server POSTs.
    old = msgspec.json.encode(claim_for("test/chain"))
    with serve(asgi_app(receiver(calls))) as url:
        async with httpx.AsyncClient(timeout=10) as http:
            response = await http.post(url, content=old, headers=sign(old, SECRET))
    assert response.status_code == 400
    answer = msgspec.json.decode(response.content)
    assert "names no wire version" in answer["error"]
    assert "upgrade slayq on the server" in answer["error"]
    assert answer["wire"] == WIRE_VERSION
    assert not calls  # nothing ran


async def test_an_older_app_gives_the_server_a_clear_error_and_the_run_waits(
    store: MemoryStore,
) -> None:
    # What an app of wire version 1 answers a version 2 delivery: its 400, no version.
    old_answer = (
        b'{"error": "delivery body is not a valid claim: Object missing required field `lease`"}'
    )
    run_id = await start(store, event="test/chain")
    with serve(fixed_response(400, old_answer)) as url:
        async with Deliverer(SECRET, timeout=10) as deliverer:
            with pytest.raises(DeliveryError, match="Upgrade slayq in the app") as caught:
                await deliverer.deliver(url, claim_for("test/chain"))
            assert (caught.value.status, caught.value.may_have_run) == (400, False)
            await run_attempt(store, url, deliverer)
    run = await store.get_run(run_id)
    # Handed back without spending an attempt, with the fix in its error.
    assert run.status == "queued"
    assert run.error is not None
    assert "wire version" in run.error.message
    assert "different wire versions" in run.error.message


# -- signatures ----------------------------------------------------------------------------


async def test_a_continue_is_signed_and_a_replayed_one_refused(calls: Counter[str]) -> None:
    app = receiver(calls)
    claim = claim_for("test/chain")
    continued = encode_delivery(ContinueDelivery(claim.lease.run_id, claim.lease.token, 1))
    with serve(asgi_app(app)) as url:
        async with Deliverer(SECRET, timeout=10) as deliverer:
            first = await deliverer.deliver(url, claim)
        assert first.live
        async with httpx.AsyncClient(timeout=10) as http:
            forged = await http.post(url, content=continued, headers=sign(continued, "x" * 32))
            assert forged.status_code == 401
            headers = sign(continued, SECRET)
            response = await http.post(url, content=continued, headers=headers)
            assert response.status_code == 200
            replayed = await http.post(url, content=continued, headers=headers)
    assert replayed.status_code == 401
    assert "already received" in msgspec.json.decode(replayed.content)["error"]
    assert (calls["step-0"], calls["step-1"], calls["step-2"]) == (1, 1, 0)
    assert calls["closed"] == 1  # the app's shutdown (its lifespan) closed the kept run
