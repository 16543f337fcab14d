"""The server -> app delivery over a real loopback socket: Deliverer -> uvicorn -> Receiver."""

from __future__ import annotations

import contextlib
import logging
import socket
import threading
import time
from collections import Counter
from collections.abc import AsyncIterator, Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import aiohttp
import anyio
import httpx
import msgspec
import pytest
import uvicorn

import slayq
from slayq import step
from slayq.model import (
    Claim,
    Completed,
    Continue,
    Failed,
    Lease,
    RunId,
    StepRecord,
    Suspend,
    Transition,
)
from slayq.runtime.functions import Function
from slayq.runtime.registry import Registry
from slayq.transport import (
    WIRE_VERSION,
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

pytestmark = pytest.mark.anyio

SECRET = "integration-secret-0123456789"


# -- the app's functions ---------------------------------------------------------------


def app_functions(calls: Counter[str]) -> list[Function]:
    @slayq.function(event="test/two-steps")
    async def two_steps(ctx: slayq.Context[slayq.EmptyEvent]) -> slayq.Workflow:
        def first() -> str:
            calls["first"] += 1
            return "hello"

        async def second() -> str:
            calls["second"] += 1
            return "world"

        a = yield step.run("first", first)
        b = yield step.run("second", second)
        yield step.sleep("nap", "1h")
        yield slayq.finish(f"{a} {b}")

    @slayq.function(event="test/failing", retries=2)
    async def failing(ctx: slayq.Context[slayq.EmptyEvent]) -> slayq.Workflow:
        def explode() -> None:
            calls["explode"] += 1
            raise RuntimeError("Yoinks.")

        yield step.run("explode", explode)

    @slayq.function(event="test/slow")
    async def slow(ctx: slayq.Context[slayq.EmptyEvent]) -> slayq.Workflow:
        async def dawdle() -> None:
            calls["slow"] += 1
            await anyio.sleep(1)

        yield step.run("dawdle", dawdle)

    return [two_steps, failing, slow]


def claim_for(
    event: str, *, memo: list[StepRecord] | None = None, attempt: int = 1, data: Any = None
) -> Claim:
    return Claim(
        lease=Lease(
            run_id=RunId("run_http_1"),
            token=1,
            expires_at=datetime.now(UTC) + timedelta(minutes=5),
        ),
        event=event,
        data={} if data is None else data,
        queue="general",
        attempt=attempt,
        max_attempts=3,
        memo=memo or [],
    )


# -- a real uvicorn server in a thread -------------------------------------------------


@contextlib.contextmanager
def serve(app: ASGIApp) -> Iterator[str]:
    """Serve ``app`` with uvicorn on a free loopback port; yield its URL."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    config = uvicorn.Config(
        app,
        http="h11",
        ws="none",
        lifespan="on",
        log_level="warning",
        access_log=False,
        timeout_graceful_shutdown=2,
    )
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    try:
        deadline = time.monotonic() + 10
        while not server.started:
            assert thread.is_alive(), "uvicorn stopped before it started"
            assert time.monotonic() < deadline, "uvicorn did not start within 10 s"
            time.sleep(0.01)
        yield f"http://127.0.0.1:{port}/api/slayq"
    finally:
        server.should_exit = True
        thread.join(timeout=10)
        sock.close()
    assert not thread.is_alive(), "uvicorn did not stop"


@pytest.fixture
def calls() -> Counter[str]:
    return Counter()


@pytest.fixture
def receiver(calls: Counter[str]) -> Receiver:
    return Receiver(Registry(app_functions(calls)), [SECRET], limits=Limits(body_bytes=64 * 1024))


@pytest.fixture
def url(receiver: Receiver) -> Iterator[str]:
    with serve(asgi_app(receiver)) as url:
        yield url


@pytest.fixture
async def deliverer() -> AsyncIterator[Deliverer]:
    async with Deliverer(SECRET, timeout=10) as deliverer:
        yield deliverer


@pytest.fixture
async def http() -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(timeout=10) as client:
        yield client


def error_of(response: httpx.Response) -> str:
    assert response.headers["content-type"] == "application/json"
    reason = msgspec.json.decode(response.content)["error"]
    assert isinstance(reason, str)
    return reason


# -- deliveries that run -----------------------------------------------------------------


async def test_a_new_run_answers_continue_with_its_first_step(
    url: str, deliverer: Deliverer, calls: Counter[str]
) -> None:
    transition = (await deliverer.deliver(url, claim_for("test/two-steps"))).transition
    (record,) = transition.steps
    # The app timed the handler; the server records the timing with the step.
    assert record.started_at is not None and record.duration is not None
    untimed = msgspec.structs.replace(record, started_at=None, duration=None)
    assert msgspec.structs.replace(transition, steps=[untimed]) == Transition(
        steps=[StepRecord(name="first", kind="run", output="hello")], outcome=Continue()
    )
    assert calls == {"first": 1}


async def test_each_delivery_runs_one_new_step_after_replaying_the_memo(
    url: str, deliverer: Deliverer, calls: Counter[str]
) -> None:
    memo = [StepRecord(name="first", kind="run", output="hello")]
    transition = (await deliverer.deliver(url, claim_for("test/two-steps", memo=memo))).transition
    assert [s.name for s in transition.steps] == ["second"]
    assert transition.steps[0].output == "world"
    # The sleep right after the step rides in the same answer.
    assert isinstance(transition.outcome, Suspend)
    assert [p.name for p in transition.outcome.pending] == ["nap"]
    assert calls == {"second": 1}


async def test_a_run_replayed_from_a_full_memo_completes_without_running_anything(
    url: str, deliverer: Deliverer, calls: Counter[str]
) -> None:
    memo = [
        StepRecord(name="first", kind="run", output="hello"),
        StepRecord(name="second", kind="run", output="world"),
        StepRecord(name="nap", kind="sleep"),
    ]
    transition = (await deliverer.deliver(url, claim_for("test/two-steps", memo=memo))).transition
    # All three memo records were answered from the memo; the count travels back.
    assert transition == Transition(steps=[], outcome=Completed("hello world"), replayed=3)
    assert calls == {}


async def test_a_failing_step_answers_failed_with_a_retry_after(
    url: str, deliverer: Deliverer, calls: Counter[str]
) -> None:
    transition = (await deliverer.deliver(url, claim_for("test/failing", attempt=1))).transition
    assert transition.steps == []
    assert isinstance(transition.outcome, Failed)
    assert transition.outcome.retry_after is not None
    assert transition.outcome.retry_after > timedelta(0)
    error = transition.outcome.error
    assert (error.type, error.message, error.step) == ("RuntimeError", "Yoinks.", "explode")
    assert "Traceback" in error.traceback

    last = (await deliverer.deliver(url, claim_for("test/failing", attempt=3))).transition
    assert isinstance(last.outcome, Failed)
    assert last.outcome.retry_after is None  # out of attempts: failed for good
    assert calls == {"explode": 2}


# -- requests that are refused -----------------------------------------------------------


async def test_a_forged_signature_is_refused_with_401_and_nothing_runs(
    url: str, calls: Counter[str]
) -> None:
    async with Deliverer("not-the-apps-secret-at-all") as forger:
        with pytest.raises(DeliveryError, match="401") as caught:
            await forger.deliver(url, claim_for("test/two-steps"))
    assert caught.value.status == 401
    assert (caught.value.may_have_run, caught.value.permanent) == (False, False)
    assert "does not match" in str(caught.value)
    assert calls == {}


async def test_an_old_timestamp_is_refused_with_401(
    url: str, http: httpx.AsyncClient, calls: Counter[str]
) -> None:
    body = encode_delivery(ClaimDelivery(claim_for("test/two-steps")))
    response = await http.post(url, content=body, headers=sign(body, SECRET, now=time.time() - 60))
    assert response.status_code == 401
    assert "s in the past; at most 15 s is accepted" in error_of(response)
    assert calls == {}


async def test_a_truncated_body_fails_the_signature_with_401(
    url: str, http: httpx.AsyncClient, calls: Counter[str]
) -> None:
    body = encode_delivery(ClaimDelivery(claim_for("test/two-steps")))
    response = await http.post(url, content=body[:-7], headers=sign(body, SECRET))
    assert response.status_code == 401
    assert "does not match" in error_of(response)
    assert calls == {}


async def test_a_replayed_request_is_refused_with_401(
    url: str, http: httpx.AsyncClient, calls: Counter[str]
) -> None:
    body = encode_delivery(ClaimDelivery(claim_for("test/two-steps")))
    headers = sign(body, SECRET)
    first = await http.post(url, content=body, headers=headers)
    assert first.status_code == 200
    again = await http.post(url, content=body, headers=headers)
    assert again.status_code == 401
    assert "already received" in error_of(again)
    assert calls == {"first": 1}


async def test_an_oversized_body_is_refused_with_413(
    url: str, http: httpx.AsyncClient, deliverer: Deliverer, calls: Counter[str]
) -> None:
    big = claim_for("test/two-steps", data={"blob": "x" * 100_000})
    body = encode_delivery(ClaimDelivery(big))
    response = await http.post(url, content=body, headers=sign(body, SECRET))
    assert response.status_code == 413
    assert "over the limit of 64.0 KiB" in error_of(response)

    async def chunks() -> AsyncIterator[bytes]:  # no Content-Length: chunked encoding
        for start in range(0, len(body), 8192):
            yield body[start : start + 8192]

    response = await http.post(url, content=chunks(), headers=sign(body, SECRET))
    assert response.status_code == 413

    with pytest.raises(DeliveryError, match="413") as caught:
        await deliverer.deliver(url, big)
    assert caught.value.status == 413
    assert calls == {}


async def test_an_unknown_event_is_refused_with_404_naming_it(
    url: str, deliverer: Deliverer
) -> None:
    with pytest.raises(DeliveryError, match="404") as caught:
        await deliverer.deliver(url, claim_for("test/nobody-runs-this"))
    assert caught.value.status == 404
    assert "'test/nobody-runs-this'" in str(caught.value)


async def test_a_signed_body_that_is_not_a_claim_is_refused_with_400(
    url: str, http: httpx.AsyncClient
) -> None:
    for body in (b"not json", b'{"lease": 1}', b"\xff\xfe"):
        response = await http.post(url, content=body, headers=sign(body, SECRET))
        assert response.status_code == 400, body
        assert "delivery body is not" in error_of(response)


@pytest.mark.parametrize("method", ["GET", "PUT", "DELETE"])
async def test_other_methods_than_post_are_405(
    url: str, http: httpx.AsyncClient, method: str
) -> None:
    response = await http.request(method, url)
    assert response.status_code == 405
    assert response.headers["allow"] == "POST"
    assert "deliveries are POSTed" in error_of(response)


async def test_an_unexpected_error_is_a_logged_500_and_the_app_keeps_serving(
    calls: Counter[str], deliverer: Deliverer, caplog: pytest.LogCaptureFixture
) -> None:
    class BrokenRegistry(Registry):
        def get(self, event: str) -> Function:
            if event == "test/failing":
                raise RuntimeError("the registry broke")
            return super().get(event)

    receiver = Receiver(BrokenRegistry(app_functions(calls)), [SECRET])
    with serve(asgi_app(receiver)) as url, caplog.at_level(logging.ERROR):
        with pytest.raises(DeliveryError, match="500") as caught:
            await deliverer.deliver(url, claim_for("test/failing"))
        assert caught.value.status == 500
        assert "RuntimeError" in str(caught.value)
        assert "the registry broke" not in str(caught.value)  # details stay in the log
        assert "the registry broke" in caplog.text
        transition = (await deliverer.deliver(url, claim_for("test/two-steps"))).transition
    assert isinstance(transition.outcome, Continue)


async def test_the_app_survives_any_bad_request_and_then_serves_a_good_one(
    url: str, http: httpx.AsyncClient, deliverer: Deliverer, calls: Counter[str]
) -> None:
    good = encode_delivery(ClaimDelivery(claim_for("test/two-steps")))
    signed = sign(good, SECRET)
    bad_requests: list[tuple[dict[str, Any], int]] = [
        ({"content": b""}, 401),
        ({"content": good}, 401),
        ({"content": good, "headers": {**signed, "X-SlayQ-Timestamp": "soon"}}, 401),
        ({"content": good, "headers": {**signed, "X-SlayQ-Signature": b"\xff" * 128}}, 401),
        ({"content": good, "headers": {**signed, "X-SlayQ-Delivery": "a.b"}}, 401),
        ({"content": b"x" * 200_000}, 413),
        ({"content": b"[]", "headers": sign(b"[]", SECRET)}, 400),
    ]
    for kwargs, status in bad_requests:
        response = await http.post(url, **kwargs)
        assert response.status_code == status, kwargs.get("headers")
        assert error_of(response)
    # Duplicated headers are joined, so they are malformed rather than ambiguous.
    duplicated = [*signed.items(), ("X-SlayQ-Signature", signed["X-SlayQ-Signature"])]
    response = await http.post(url, content=good, headers=duplicated)
    assert response.status_code == 401
    assert "X-SlayQ-Signature is malformed" in error_of(response)
    assert calls == {}

    transition = (await deliverer.deliver(url, claim_for("test/two-steps"))).transition
    assert [(s.name, s.kind, s.output) for s in transition.steps] == [("first", "run", "hello")]
    assert calls == {"first": 1}


# -- the deliverer's errors --------------------------------------------------------------


def fixed_response(status: int, body: bytes, *, chunks: int = 1, length: bool = False) -> ASGIApp:
    """An ASGI app that answers every request with ``status`` and ``body``.

    The body is sent in ``chunks`` pieces, with a Content-Length header if ``length``.
    """
    headers = [(b"content-length", str(len(body)).encode())] if length else []

    async def app(scope: Scope, receive: ASGIReceive, send: ASGISend) -> None:
        if scope["type"] == "lifespan":
            while (await receive())["type"] == "lifespan.startup":
                await send({"type": "lifespan.startup.complete"})
            await send({"type": "lifespan.shutdown.complete"})
            return
        await send({"type": "http.response.start", "status": status, "headers": headers})
        size = max(1, -(-len(body) // chunks))
        for start in range(0, len(body), size):
            piece = body[start : start + size]
            await send({"type": "http.response.body", "body": piece, "more_body": True})
        await send({"type": "http.response.body", "body": b""})

    return app


async def test_a_closed_port_is_a_delivery_error(deliverer: Deliverer) -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]  # bound, not listening: connections are refused
        with pytest.raises(DeliveryError, match="could not connect") as caught:
            await deliverer.deliver(f"http://127.0.0.1:{port}/", claim_for("test/two-steps"))
    assert caught.value.status is None
    assert (caught.value.may_have_run, caught.value.permanent) == (False, False)
    assert caught.value.endpoint == f"http://127.0.0.1:{port}/"
    assert isinstance(caught.value.__cause__, aiohttp.ClientConnectorError)


async def test_a_bad_url_is_a_delivery_error(deliverer: Deliverer) -> None:
    for endpoint in ("ftp://example.invalid/", "http://[::1/"):
        with pytest.raises(DeliveryError, match="request failed") as caught:
            await deliverer.deliver(endpoint, claim_for("test/two-steps"))
        assert caught.value.permanent  # no retry can reach it


async def test_a_slow_app_is_a_timeout(url: str, calls: Counter[str]) -> None:
    async with Deliverer(SECRET, timeout=0.2) as impatient:
        with pytest.raises(DeliveryError, match=r"timed out after 0.2 s") as caught:
            await impatient.deliver(url, claim_for("test/slow"))
    assert caught.value.status is None
    assert caught.value.may_have_run  # the handler started: the attempt counts
    assert calls == {"slow": 1}


async def test_an_error_status_is_reported_with_the_start_of_its_text(
    deliverer: Deliverer,
) -> None:
    page = b"<html>" + b"Bad Gateway " * 1000 + b"</html>"
    with serve(fixed_response(502, page)) as url, pytest.raises(DeliveryError) as caught:
        await deliverer.deliver(url, claim_for("test/two-steps"))
    message = str(caught.value)
    assert caught.value.status == 502
    assert "the app answered 502 Bad Gateway: <html>Bad Gateway" in message
    assert message.endswith("...")
    assert len(message) < 800


@pytest.mark.parametrize(
    ("body", "match"),
    [
        (b"<html>ok</html>", "bad body: response body is not valid JSON"),
        (b'{"steps": [], "outcome": {"type": "nope"}}', "bad body: response body is not a valid"),
        (b'{"status": "ok"}', "missing required field"),
    ],
)
async def test_a_200_with_a_body_that_is_not_a_transition_is_a_delivery_error(
    deliverer: Deliverer, body: bytes, match: str
) -> None:
    with (
        serve(fixed_response(200, body)) as url,
        pytest.raises(DeliveryError, match=match) as caught,
    ):
        await deliverer.deliver(url, claim_for("test/two-steps"))
    assert caught.value.status == 200


@pytest.mark.parametrize("length", [True, False])
async def test_an_oversized_response_is_refused(length: bool) -> None:
    body = b'{"steps": [], "outcome": {"type": "completed", "result": "' + b"x" * 5000 + b'"}'
    body += b', "wire": %d}' % WIRE_VERSION
    with serve(fixed_response(200, body, chunks=10, length=length)) as url:
        async with Deliverer(SECRET, limits=Limits(body_bytes=1000)) as small:
            with pytest.raises(
                DeliveryError, match=r"over the server's limit of 1.0 KiB \(1000 bytes"
            ) as caught:
                await small.deliver(url, claim_for("test/two-steps"))
            assert caught.value.status == 200
            assert (caught.value.permanent, caught.value.may_have_run) == (True, True)
            async with Deliverer(SECRET) as roomy:  # the same answer, under the limit
                transition = (await roomy.deliver(url, claim_for("test/two-steps"))).transition
    assert transition.outcome == Completed("x" * 5000)


async def test_a_claim_over_the_limit_is_not_sent() -> None:
    async with Deliverer(SECRET, limits=Limits(body_bytes=100)) as small:
        with pytest.raises(DeliveryError, match="not sent: delivery body is") as caught:
            await small.deliver("http://127.0.0.1:9/", claim_for("test/two-steps"))
    assert caught.value.permanent
    assert "SLAY_Q_BODY_LIMIT" in str(caught.value)


async def test_a_client_passed_in_is_used_and_left_open(url: str) -> None:
    async with aiohttp.ClientSession() as client:
        deliverer = Deliverer(SECRET, client=client)
        transition = (await deliverer.deliver(url, claim_for("test/two-steps"))).transition
        await deliverer.aclose()
        assert not client.closed
    assert isinstance(transition.outcome, Continue)
