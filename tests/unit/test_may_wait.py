"""Runs say whether they may wait: only those keep the event log from being pruned."""

from __future__ import annotations

import msgspec

import slayq
from slayq.model import NewRun
from slayq.runtime.registry import Registry


class Order(msgspec.Struct):
    order_id: str


@slayq.function(event="order/ship", schema=Order, waits_on=[slayq.Match("order/paid", "order_id")])
async def ship(ctx: slayq.Context[Order]) -> None:
    pass


@slayq.function(event="order/receipt", schema=Order)
async def receipt(ctx: slayq.Context[Order]) -> None:
    pass


@slayq.function(event="order/audit", cron="0 3 * * *")
async def audit(ctx: slayq.Context[slayq.EmptyEvent]) -> None:
    pass


def test_the_registry_marks_runs_of_functions_that_declare_waits() -> None:
    registry = Registry([ship, receipt, audit])
    shipping = registry.outgoing("order/ship", {"order_id": "o1"}).run
    mailing = registry.outgoing("order/receipt", {"order_id": "o1"}).run
    assert shipping is not None and mailing is not None
    assert (shipping.may_wait, mailing.may_wait) == (True, False)
    (schedule,) = registry.schedules()
    assert schedule.template.may_wait is False


def test_a_run_from_a_sender_that_does_not_say_is_assumed_to_wait() -> None:
    run = msgspec.json.decode(b'{"id": "r", "event": "e", "data": {}}', type=NewRun)
    assert run.may_wait is True
