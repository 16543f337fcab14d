"""The functions the browser tests' worker runs, and what the tests see of their handlers.

Each run is told apart by its ``order`` field, so tests sharing the one server and
database never read each other's runs or counts.
"""

from __future__ import annotations

import threading
from collections import Counter

import msgspec

import slayq
from slayq import step


class Order(msgspec.Struct):
    order: str


class HandlerCalls:
    """How many times each step handler ran, per order: written by the worker's thread,
    read by the test's."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._counts: Counter[tuple[str, str]] = Counter()
        self._fixed: set[str] = set()

    def called(self, order: str, step_name: str) -> None:
        with self._lock:
            self._counts[order, step_name] += 1

    def of(self, order: str) -> dict[str, int]:
        """Step name -> times its handler ran for ``order``."""
        with self._lock:
            return {name: n for (o, name), n in self._counts.items() if o == order}

    def fix(self, order: str) -> None:
        """From now on the ``charge`` step of ``order`` succeeds."""
        with self._lock:
            self._fixed.add(order)

    def is_fixed(self, order: str) -> bool:
        with self._lock:
            return order in self._fixed


CALLS = HandlerCalls()


class Gates:
    """A gate per order (a ``threading.Event``) that a step handler waits at until the test
    opens it: the handler's run holds its lease, and so its concurrency slot, meanwhile."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._gates: dict[str, threading.Event] = {}
        self._all_open = False

    def _gate(self, order: str) -> threading.Event:
        with self._lock:
            gate = self._gates.setdefault(order, threading.Event())
            if self._all_open:
                gate.set()
            return gate

    def open(self, order: str) -> None:
        self._gate(order).set()

    def open_all(self) -> None:
        """Every gate, now and later: the worker must not wait at one when it stops."""
        with self._lock:
            self._all_open = True
            for gate in self._gates.values():
                gate.set()

    def wait(self, order: str, timeout: float) -> bool:
        """Whether the gate of ``order`` opened within ``timeout`` seconds."""
        return self._gate(order).wait(timeout)


GATES = Gates()
# How long a gated handler waits before it gives up (and its run fails): a test that
# fails before opening its gate holds a worker slot no longer than this.
GATE_TIMEOUT = 60.0


class CardDeclinedError(Exception):
    """What the checkout's charge step raises until its order is fixed."""


def _handler(order: str, name: str, value: object) -> object:
    CALLS.called(order, name)
    return value


@slayq.function(event="shop/ping", schema=Order)
async def ping(ctx: slayq.Context[Order]) -> slayq.Workflow:
    said = yield step.run("say", _handler, ctx.data.order, "say", "pong")
    yield slayq.finish(said)


@slayq.function(event="shop/checkout", schema=Order, queue="payments", retries=0)
async def checkout(ctx: slayq.Context[Order]) -> slayq.Workflow:
    """Fails for good at its second step (no automatic retry) until ``CALLS.fix``;
    then completes two seconds after that step."""
    order = ctx.data.order
    reserved = yield step.run("reserve", _handler, order, "reserve", {"reserved": order})

    def charge() -> str:
        CALLS.called(order, "charge")
        if not CALLS.is_fixed(order):
            raise CardDeclinedError(f"card declined for order {order}")
        return f"charged {order}"

    charged = yield step.run("charge", charge)
    # Long enough that a page opened when the run is retried sees it unfinished: the
    # test then watches it complete live.
    yield step.sleep("settle", "2s")
    yield slayq.finish({"reserved": reserved, "charged": charged})


@slayq.function(event="reports/build", schema=Order, queue="reports")
async def pipeline(ctx: slayq.Context[Order]) -> slayq.Workflow:
    order = ctx.data.order
    rows = yield step.run("extract", _handler, order, "extract", [1, 2, 3])
    total = yield step.run("transform", _handler, order, "transform", sum(rows))
    saved = yield step.run("load", _handler, order, "load", f"saved {total}")
    yield slayq.finish(saved)


@slayq.function(
    event="shop/ship",
    schema=Order,
    queue="shipping",
    waits_on=[slayq.Match("shop/packed", "order")],
)
async def ship(ctx: slayq.Context[Order]) -> slayq.Workflow:
    """Waits a day for its order to be packed: a pending wait on the waits page."""
    packed = yield step.wait_for_event("packed", "shop/packed", timeout="1d", match="order")
    yield slayq.finish({"packed": packed is not None})


@slayq.function(event="mail/reminder", schema=Order, queue="mail")
async def reminder(ctx: slayq.Context[Order]) -> slayq.Workflow:
    """Sleeps an hour: a sleeping run."""
    yield step.run("draft", _handler, ctx.data.order, "draft", "drafted")
    yield step.sleep("later", "1h")
    yield slayq.finish("sent")


class GateShutError(Exception):
    """What a gated handler raises when its gate stayed shut for ``GATE_TIMEOUT``."""


@slayq.function(
    event="shop/fulfil",
    schema=Order,
    queue="fulfilment",
    retries=0,
    concurrency=slayq.Concurrency(limit=1, key="order"),
)
async def fulfil(ctx: slayq.Context[Order]) -> slayq.Workflow:
    """One run per order at a time; its step waits at the order's gate (``GATES``), so a
    second run of the order stays queued, held back by the concurrency key, until then."""
    order = ctx.data.order

    def pack() -> str:
        CALLS.called(order, "pack")
        if not GATES.wait(order, GATE_TIMEOUT):
            raise GateShutError(f"the gate of order {order} stayed shut for {GATE_TIMEOUT:g} s")
        return f"packed {order}"

    packed = yield step.run("pack", pack)
    yield slayq.finish(packed)


class Nothing(msgspec.Struct):
    pass


@slayq.function(event="reports/nightly", schema=Nothing, queue="reports", cron="0 3 * * *")
async def nightly(ctx: slayq.Context[Nothing]) -> slayq.Workflow:
    """A cron function: a row on the schedules page."""
    yield slayq.finish("ok")


FUNCTIONS = [ping, checkout, pipeline, ship, reminder, fulfil, nightly]
