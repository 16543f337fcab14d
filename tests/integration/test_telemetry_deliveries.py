"""slayq_deliveries_total by outcome, from the server's executor over a real socket."""

from __future__ import annotations

import socket
from collections import Counter
from collections.abc import Iterator

import pytest
from prometheus_client import REGISTRY

from slayq.runtime.clock import VirtualClock
from slayq.runtime.registry import Registry
from slayq.server.delivery import HttpExecutor
from slayq.store.memory import MemoryStore
from slayq.transport import Deliverer, Receiver, asgi_app
from tests.contract.helpers import claim_one, start
from tests.integration.test_receiver_http import SECRET, app_functions, serve

pytestmark = pytest.mark.anyio


@pytest.fixture
def app_url() -> Iterator[str]:
    receiver = Receiver(Registry(app_functions(Counter())), [SECRET])
    with serve(asgi_app(receiver)) as url:
        yield url


def deliveries(event: str, outcome: str) -> float:
    return (
        REGISTRY.get_sample_value("slayq_deliveries_total", {"event": event, "outcome": outcome})
        or 0.0
    )


async def deliver(
    clock: VirtualClock,
    endpoint: str,
    event: str,
    *,
    delivery_timeout: float = 10,
    allowed: str = "",
) -> None:
    store = MemoryStore(clock)
    await start(store, event=event)
    claim = await claim_one(store)
    async with Deliverer(SECRET, timeout=delivery_timeout) as deliverer:
        executor = HttpExecutor(
            deliverer,
            release=store.release,
            fallback_endpoint=endpoint,
            allowed_endpoints=[allowed] if allowed else [],
        )
        await executor(claim, store.commit)


@pytest.mark.parametrize(
    ("event", "outcome", "count", "options"),
    [
        # One delivery per step: the first answers Continue, the second completes.
        ("test/two-steps", "delivered", 2, {}),
        ("test/slow", "lost", 1, {"delivery_timeout": 0.2}),  # the app got it, no answer
        ("test/two-steps", "refused", 1, {"allowed": "http://elsewhere.test/"}),
    ],
)
async def test_each_delivery_is_counted_by_its_outcome(
    app_url: str,
    clock: VirtualClock,
    event: str,
    outcome: str,
    count: int,
    options: dict[str, object],
) -> None:
    before = {o: deliveries(event, o) for o in ("delivered", "lost", "refused", "unreachable")}
    await deliver(clock, app_url, event, **options)  # type: ignore[arg-type]
    moved = {o: deliveries(event, o) - n for o, n in before.items()}
    assert moved == {o: count if o == outcome else 0 for o in before}


async def test_an_unreachable_app_is_counted(clock: VirtualClock) -> None:
    before = deliveries("test/two-steps", "unreachable")
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))  # bound, not listening: connections are refused
        await deliver(clock, f"http://127.0.0.1:{sock.getsockname()[1]}/", "test/two-steps")
    assert deliveries("test/two-steps", "unreachable") - before == 1
