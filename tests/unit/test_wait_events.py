"""Events that only answer waits are checked against what the waiting functions match on."""

from __future__ import annotations

from datetime import datetime

import msgspec
import pytest

import slayq
from slayq import step
from slayq.testing import Harness

pytestmark = pytest.mark.anyio


class Order(msgspec.Struct):
    order_id: int
    placed_at: datetime | None = None


class Shipment(msgspec.Struct, rename={"tracking": "trackingNumber"}):
    tracking: str


@slayq.function(event="order", schema=Order, waits_on=[slayq.Match("order/paid", "order_id")])
async def order(ctx: slayq.Context[Order]) -> slayq.Workflow:
    paid = yield step.wait_for_event("paid", "order/paid", timeout="1d")
    yield slayq.finish(paid)


@slayq.function(event="ship", schema=Shipment, waits_on=[slayq.Match("ship/delivered", "tracking")])
async def ship(ctx: slayq.Context[Shipment]) -> slayq.Workflow:
    yield step.wait_for_event("delivered", "ship/delivered", timeout="1d")


async def test_an_event_without_any_matched_field_is_refused() -> None:
    async with Harness([order]) as h:
        with pytest.raises(slayq.EventDataError, match=r"'order/paid'.*order_id"):
            await h.send_event("order/paid", {"orderId": 7})


async def test_a_matched_field_of_the_wrong_type_is_refused() -> None:
    async with Harness([order]) as h:
        with pytest.raises(slayq.EventDataError, match=r"order_id.*Expected `int`"):
            await h.send_event("order/paid", {"order_id": "7"})


async def test_a_matching_event_is_accepted_and_answers_the_wait() -> None:
    async with Harness([order]) as h:
        run_id = await h.send_event("order", {"order_id": 7})
        assert run_id is not None
        await h.run_until_idle()
        await h.send_event("order/paid", {"order_id": 7, "amount": 12})
        run = await h.run_until_finished(run_id)
    assert run.result == {"order_id": 7, "amount": 12}


async def test_matching_uses_the_encoded_field_name() -> None:
    async with Harness([ship]) as h:
        await h.send_event("ship/delivered", {"trackingNumber": "T1"})
        with pytest.raises(slayq.EventDataError, match="trackingNumber"):
            await h.send_event("ship/delivered", {"tracking": "T1"})
