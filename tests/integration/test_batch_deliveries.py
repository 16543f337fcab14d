"""Deliveries that start together go in one request (a batch), over a real socket: each
gets its own answer, as soon as its run stops, and fails as it would have alone."""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import anyio
import httpx
import msgspec
import pytest

from slayq.model import Claim, Completed, Continue, Failed, Transition
from slayq.runtime.registry import Registry
from slayq.transport import (
    Answer,
    BodyTooLargeError,
    ClaimDelivery,
    Deliverer,
    DeliveryError,
    Limits,
    Receiver,
    asgi_app,
    encode_delivery,
    sign,
)
from slayq.transport.receiver import ASGIApp, ASGIReceive, ASGISend, Scope
from slayq.transport.wire import batch_line, encode_answer, encode_batch
from tests.integration.test_receiver_http import SECRET, app_functions, claim_for, serve

pytestmark = pytest.mark.anyio


@dataclass
class Requests:
    """Counts the requests an app gets."""

    count: int = 0
    bodies: list[bytes] = field(default_factory=list)

    def wrap(self, app: ASGIApp) -> ASGIApp:
        async def counted(scope: Scope, receive: ASGIReceive, send: ASGISend) -> None:
            if scope["type"] == "http":
                self.count += 1
            await app(scope, receive, send)

        return counted


def claim_of(event: str, run: str) -> Claim:
    claim = claim_for(event)
    return msgspec.structs.replace(claim, lease=msgspec.structs.replace(claim.lease, run_id=run))


Outcome = Answer | None | DeliveryError


async def all_at_once(
    *deliveries: Callable[[], Awaitable[Answer | None]],
) -> tuple[list[Outcome], list[int]]:
    """Start ``deliveries`` in one turn; their outcomes, and the order they came back in."""
    outcomes: list[Outcome] = [None] * len(deliveries)
    order: list[int] = []

    async def one(i: int) -> None:
        try:
            outcomes[i] = await deliveries[i]()
        except DeliveryError as exc:
            outcomes[i] = exc
        order.append(i)

    async with anyio.create_task_group() as group:
        for i in range(len(deliveries)):
            group.start_soon(one, i)
    return outcomes, order


@pytest.fixture
def requests() -> Requests:
    return Requests()


@pytest.fixture
def url(requests: Requests) -> Iterator[str]:
    receiver = Receiver(Registry(app_functions(Counter())), [SECRET])
    with serve(requests.wrap(asgi_app(receiver))) as url:
        yield url


async def test_deliveries_started_together_go_in_one_request_each_with_its_answer(
    url: str, requests: Requests
) -> None:
    async with Deliverer(SECRET, timeout=10) as deliverer:
        (first, second, failing), _order = await all_at_once(
            lambda: deliverer.deliver(url, claim_of("test/two-steps", "run_a")),
            lambda: deliverer.deliver(url, claim_of("test/two-steps", "run_b")),
            lambda: deliverer.deliver(url, claim_of("test/failing", "run_c")),
        )
        assert requests.count == 1
        for answer in (first, second):
            assert isinstance(answer, Answer)
            assert isinstance(answer.transition.outcome, Continue)
            assert [s.name for s in answer.transition.steps] == ["first"]
        assert isinstance(failing, Answer)
        assert isinstance(failing.transition.outcome, Failed)
        assert failing.transition.outcome.error.message == "Yoinks."
        # One alone goes as a delivery of its own, as before batches.
        alone = await deliverer.deliver(url, claim_of("test/two-steps", "run_d"))
        assert isinstance(alone.transition.outcome, Continue)
    assert requests.count == 2


async def test_a_quick_run_is_answered_while_a_slow_one_of_its_batch_still_runs(
    url: str, requests: Requests
) -> None:
    async with Deliverer(SECRET, timeout=10) as deliverer:
        began = time.monotonic()
        took: dict[str, float] = {}

        async def timed(event: str, run: str) -> Answer:
            answer = await deliverer.deliver(url, claim_of(event, run))
            took[event] = time.monotonic() - began
            return answer

        (slow, quick), order = await all_at_once(
            lambda: timed("test/slow", "run_slow"), lambda: timed("test/two-steps", "run_quick")
        )
    assert requests.count == 1
    assert order == [1, 0]
    assert took["test/two-steps"] < 0.5 <= 1 <= took["test/slow"]  # test/slow sleeps 1 s
    assert isinstance(slow, Answer)
    assert isinstance(quick, Answer)


async def test_each_delivery_of_a_batch_is_refused_or_answered_on_its_own(
    url: str, requests: Requests
) -> None:
    async with Deliverer(SECRET, timeout=10) as deliverer:
        unknown, not_live, answered = (
            claim_of("test/no-such-function", "run_x"),
            claim_of("test/two-steps", "run_y"),
            claim_of("test/two-steps", "run_z"),
        )
        outcomes, _order = await all_at_once(
            lambda: deliverer.deliver(url, unknown),
            lambda: deliverer.deliver_next(url, not_live, 1),
            lambda: deliverer.deliver(url, answered),
        )
    assert requests.count == 1
    refused, resend, answer = outcomes
    assert isinstance(refused, DeliveryError)
    assert refused.status == 404
    assert (refused.may_have_run, refused.permanent) == (False, False)
    assert "run run_x (one of 3 in the request)" in str(refused)
    assert "no function of this app runs on event 'test/no-such-function'" in str(refused)
    assert resend is None  # the app holds no such run live: send the whole claim
    assert isinstance(answer, Answer)


async def test_a_caller_that_stops_waiting_leaves_the_others_their_answers(
    url: str, requests: Requests
) -> None:
    async with Deliverer(SECRET, timeout=10) as deliverer:
        outcomes: dict[str, Answer | None] = {}

        async def gives_up() -> None:  # the first to deliver: it reads the answer's lines
            with anyio.move_on_after(0.2):
                outcomes["gave up"] = await deliverer.deliver(url, claim_of("test/slow", "run_1"))

        async def waits() -> None:
            outcomes["waited"] = await deliverer.deliver(url, claim_of("test/slow", "run_2"))

        async with anyio.create_task_group() as group:
            group.start_soon(gives_up)
            group.start_soon(waits)
    assert requests.count == 1
    assert "gave up" not in outcomes
    answer = outcomes["waited"]
    assert isinstance(answer, Answer)
    assert [s.name for s in answer.transition.steps] == ["dawdle"]


async def test_deliveries_that_joined_a_cancelled_first_one_go_on_their_own(
    url: str, requests: Requests
) -> None:
    async with Deliverer(SECRET, timeout=10) as deliverer:
        first_scope = anyio.CancelScope()
        outcomes: dict[str, Answer] = {}

        async def first() -> None:  # gathers this turn's deliveries, then is cancelled
            with first_scope:
                outcomes["first"] = await deliverer.deliver(url, claim_of("test/slow", "run_1"))

        async def joins() -> None:  # runs after first() reached its gathering
            first_scope.cancel()
            outcomes["joined"] = await deliverer.deliver(url, claim_of("test/two-steps", "run_2"))

        async with anyio.create_task_group() as group:
            group.start_soon(first)
            group.start_soon(joins)
    assert list(outcomes) == ["joined"]
    assert requests.count == 1  # the one that joined, alone


def answering(requests: Requests, answer: Callable[[ASGISend], Awaitable[None]]) -> ASGIApp:
    """An app that reads each request whole, starts a 200 and leaves the rest to
    ``answer``; its requests counted by ``requests``."""

    async def app(scope: Scope, receive: ASGIReceive, send: ASGISend) -> None:
        if scope["type"] == "lifespan":
            while (await receive())["type"] == "lifespan.startup":
                await send({"type": "lifespan.startup.complete"})
            await send({"type": "lifespan.shutdown.complete"})
            return
        while (await receive()).get("more_body"):
            pass
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await answer(send)

    return requests.wrap(app)


def answers_one_line_then_drops(requests: Requests) -> ASGIApp:
    """Answers a batch's first delivery, then breaks the connection off."""

    async def answer(send: ASGISend) -> None:
        line = batch_line(0, 200, encode_answer(Transition(steps=[], outcome=Completed(1))))
        await send({"type": "http.response.body", "body": line, "more_body": True})
        raise RuntimeError("the app went down mid-answer")

    return answering(requests, answer)


async def test_a_batch_cut_off_mid_answer_fails_the_unanswered_as_may_have_run(
    requests: Requests,
) -> None:
    with serve(answers_one_line_then_drops(requests)) as url:
        async with Deliverer(SECRET, timeout=10) as deliverer:
            (first, second), _order = await all_at_once(
                lambda: deliverer.deliver(url, claim_of("test/two-steps", "run_1")),
                lambda: deliverer.deliver(url, claim_of("test/two-steps", "run_2")),
            )
    assert requests.count == 1
    assert isinstance(first, Answer)
    assert isinstance(second, DeliveryError)
    assert "the answer broke off" in str(second)
    assert (second.may_have_run, second.permanent) == (True, False)


def answers_a_line_over_the_limit(requests: Requests, *, chunks: int) -> ASGIApp:
    """Answers delivery 0 of a batch with 5,000 bytes of result, in ``chunks`` pieces,
    and delivery 1 with a small one."""

    async def answer(send: ASGISend) -> None:
        big = encode_answer(Transition(steps=[], outcome=Completed("x" * 5000)))
        lines = batch_line(0, 200, big) + batch_line(
            1, 200, encode_answer(Transition(steps=[], outcome=Completed(1)))
        )
        size = -(-len(lines) // chunks)
        for start in range(0, len(lines), size):
            piece = lines[start : start + size]
            await send({"type": "http.response.body", "body": piece, "more_body": True})
        await send({"type": "http.response.body", "body": b""})

    return answering(requests, answer)


@pytest.mark.parametrize("chunks", [1, 20])
async def test_an_answer_over_the_servers_limit_fails_its_run_for_good_and_no_other(
    requests: Requests, chunks: int
) -> None:
    with serve(answers_a_line_over_the_limit(requests, chunks=chunks)) as url:
        async with Deliverer(SECRET, timeout=10, limits=Limits(body_bytes=2000)) as deliverer:
            (big, small), _order = await all_at_once(
                lambda: deliverer.deliver(url, claim_of("test/two-steps", "run_big")),
                lambda: deliverer.deliver(url, claim_of("test/two-steps", "run_small")),
            )
    assert requests.count == 1
    assert isinstance(big, DeliveryError)
    assert (big.status, big.permanent, big.may_have_run) == (200, True, True)
    assert "the app answered 200 with a body too large" in str(big)
    assert "over the server's limit of 2.0 KiB" in str(big)
    assert isinstance(big.__cause__, BodyTooLargeError)  # the run's error type
    assert isinstance(small, Answer)
    assert small.transition.outcome == Completed(1)


async def test_a_batch_the_app_finds_too_large_is_sent_one_by_one(requests: Requests) -> None:
    single = len(encode_delivery(ClaimDelivery(claim_of("test/two-steps", "run_1"))))
    # Room for one delivery, not for two.
    limits = Limits(body_bytes=single + single // 2)
    receiver = Receiver(Registry(app_functions(Counter())), [SECRET], limits=limits)
    with serve(requests.wrap(asgi_app(receiver))) as url:
        async with Deliverer(SECRET, timeout=10) as deliverer:
            outcomes, _order = await all_at_once(
                lambda: deliverer.deliver(url, claim_of("test/two-steps", "run_1")),
                lambda: deliverer.deliver(url, claim_of("test/two-steps", "run_2")),
            )
    assert requests.count == 3  # the batch, refused (413), then each alone
    assert all(isinstance(answer, Answer) for answer in outcomes)


async def test_a_receiver_answers_a_version_2_delivery_in_version_2(url: str) -> None:
    claim = claim_of("test/two-steps", "run_old")
    body = msgspec.json.encode({**msgspec.to_builtins(ClaimDelivery(claim)), "wire": 2})
    async with httpx.AsyncClient(timeout=10) as http:
        response = await http.post(url, content=body, headers=sign(body, SECRET))
    assert response.status_code == 200
    answer = response.json()
    assert answer["wire"] == 2
    assert answer["outcome"]["type"] == "continue"


async def test_a_batch_answer_is_streamed_line_by_line(url: str) -> None:
    claims = [claim_of("test/slow", "run_slow"), claim_of("test/two-steps", "run_quick")]
    body = encode_batch([encode_delivery(ClaimDelivery(c)) for c in claims])
    lines: list[tuple[float, dict[str, Any]]] = []
    async with httpx.AsyncClient(timeout=10) as http:
        began = time.monotonic()
        async with http.stream("POST", url, content=body, headers=sign(body, SECRET)) as response:
            assert response.status_code == 200
            assert response.headers["content-type"] == "application/x-ndjson"
            async for line in response.aiter_lines():
                lines.append((time.monotonic() - began, msgspec.json.decode(line)))
    (quick_at, quick), (slow_at, slow) = lines
    assert (quick["i"], quick["status"], slow["i"], slow["status"]) == (1, 200, 0, 200)
    assert quick_at < 0.5 and slow_at >= 1
    assert quick["body"]["wire"] == 3
    assert [s["name"] for s in slow["body"]["steps"]] == ["dawdle"]
