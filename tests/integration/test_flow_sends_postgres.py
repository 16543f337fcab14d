"""Send-time flow control through the real stack: a Client on PostgreSQL with a worker."""

from __future__ import annotations

import msgspec
import pytest

import slayq
from slayq import step
from slayq.store.postgres import PostgresStore
from tests.integration.workers import finished, running

pytestmark = pytest.mark.anyio


class Order(msgspec.Struct):
    user: str
    order: str


async def test_singleton_and_idempotency_decide_client_sends(pg_url: str) -> None:
    @slayq.function(
        event="shop/order",
        schema=Order,
        singleton=slayq.Singleton(key="user", mode="skip"),
        idempotency=slayq.Idempotency(key="order", ttl="1h"),
        waits_on=[slayq.Match("shop/go", "user")],
    )
    async def order(ctx: slayq.Context[Order]) -> slayq.Workflow:
        go = yield step.wait_for_event("go", "shop/go", timeout="1m")
        yield slayq.finish(ctx.data.order if go is not None else None)

    async with running(PostgresStore(pg_url), [order]) as client:

        async def send(user: str, order: str) -> slayq.RunId | None:
            return await client.send_event("shop/order", {"user": user, "order": order})

        first = await send("u1", "o1")
        assert first is not None
        assert await send("u1", "o1") == first  # the same order: idempotent
        assert await send("u1", "o2") == first  # u1 has an unfinished run: skipped
        other = await send("u2", "o3")
        assert other not in (None, first)
        await client.send_event("shop/go", {"user": "u1"})
        assert (await finished(client, first)).result == "o1"
        second = await send("u1", "o4")  # u1's run finished: a new one starts
        assert second not in (None, first, other)
        assert await send("u1", "o2") == first  # o2 was answered with u1's first run
        await client.send_event("shop/go", {"user": "u1"})
        await client.send_event("shop/go", {"user": "u2"})
        assert (await finished(client, second)).result == "o4"
        assert (await finished(client, other)).result == "o3"
