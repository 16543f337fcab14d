"""The server's executor over a real socket, on the memory store: which failed deliveries
spend an attempt, which hand the run back to wait, which fail it for good."""

from __future__ import annotations

import logging
import socket
from collections import Counter
from collections.abc import Iterator

import pytest

from slayq.model import RunInfo
from slayq.runtime.clock import VirtualClock
from slayq.runtime.registry import Registry
from slayq.server.delivery import MAX_UNDELIVERED_DELAY, HttpExecutor
from slayq.store.memory import MemoryStore
from slayq.transport import Deliverer, Limits, Receiver, asgi_app
from tests.contract.helpers import claim_one, start
from tests.integration.test_receiver_http import SECRET, app_functions, serve

pytestmark = pytest.mark.anyio


@pytest.fixture
def url() -> Iterator[str]:
    receiver = Receiver(Registry(app_functions(Counter())), [SECRET])
    with serve(asgi_app(receiver)) as url:
        yield url


async def deliver_once(
    store: MemoryStore, endpoint: str, event: str, *, delivery_timeout: float = 10, **limits: int
) -> RunInfo:
    run_id = await start(store, event=event)
    claim = await claim_one(store)
    async with Deliverer(SECRET, timeout=delivery_timeout, limits=Limits(**limits)) as deliverer:
        executor = HttpExecutor(deliverer, release=store.release, fallback_endpoint=endpoint)
        await executor(claim, store.commit)
    return await store.get_run(run_id)


async def test_an_unreachable_app_spends_no_attempt_and_the_run_waits_at_most_a_minute(
    clock: VirtualClock, caplog: pytest.LogCaptureFixture
) -> None:
    store = MemoryStore(clock)
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))  # bound, not listening: connections are refused
        endpoint = f"http://127.0.0.1:{sock.getsockname()[1]}/"
        with caplog.at_level(logging.WARNING):
            run = await deliver_once(store, endpoint, "test/two-steps")
    assert (run.status, run.attempts) == ("queued", 1)
    assert run.error is not None
    assert run.error.type == "DeliveryError"
    assert "could not connect" in run.error.message
    assert "is the app running" in run.error.message
    assert run.run_at is not None
    assert clock.now() < run.run_at <= clock.now() + MAX_UNDELIVERED_DELAY
    assert "Likely fix: is the app running" in caplog.text


async def test_a_timeout_after_the_app_got_the_run_spends_an_attempt(
    url: str, clock: VirtualClock
) -> None:
    store = MemoryStore(clock)
    run = await deliver_once(store, url, "test/slow", delivery_timeout=0.2)
    assert (run.status, run.attempts) == ("queued", 2)
    assert run.error is not None
    assert "timed out after 0.2 s" in run.error.message


async def test_a_memo_over_the_limit_fails_the_run_for_good_without_sending_it(
    url: str, clock: VirtualClock
) -> None:
    store = MemoryStore(clock)
    run = await deliver_once(store, url, "test/two-steps", body_bytes=100)
    assert (run.status, run.attempts) == ("failed", 1)
    assert run.error is not None
    assert run.error.type == "BodyTooLargeError"
    assert "over the server's limit of 0.1 KiB (100 bytes, SLAY_Q_BODY_LIMIT)" in run.error.message
