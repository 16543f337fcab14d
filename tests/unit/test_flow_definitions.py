"""Flow controls as declared on ``@slayq.function``: checked against the schema when the
function is defined, and resolved into buckets when a run is created."""

from __future__ import annotations

from datetime import timedelta

import msgspec
import pytest

import slayq
from slayq.errors import EventDataError, FunctionDefinitionError
from slayq.model import FlowRate, FlowSlot
from slayq.runtime.flow import bucket_label
from slayq.runtime.registry import Registry


class Address(msgspec.Struct):
    country: str
    city: str = ""


class Sync(msgspec.Struct):
    customer_id: int
    document_id: str = "d"
    address: Address | None = None
    account: str = msgspec.field(default="a", name="accountId")


async def handler(ctx: slayq.Context[Sync]) -> None:
    return None


def define(**flow: object) -> slayq.Function:
    return slayq.function(event="sync/requested", schema=Sync, **flow)(handler)  # type: ignore[arg-type]


def new_run(fn: slayq.Function, data: dict[str, object]) -> object:
    return Registry([fn]).outgoing(fn.event, data).run


def test_a_key_resolves_to_a_bucket_of_the_function_and_the_value() -> None:
    fn = define(concurrency=[slayq.Concurrency(limit=2, key="customer_id")])
    run = new_run(fn, {"customer_id": 42})
    assert run.flow is not None  # type: ignore[attr-defined]
    assert run.flow.concurrency == [FlowSlot(bucket="sync/requested customer_id=42", limit=2)]  # type: ignore[attr-defined]
    assert bucket_label("sync/requested", run.flow.concurrency[0].bucket) == "customer_id=42"  # type: ignore[attr-defined]


def test_no_key_is_one_bucket_for_the_whole_function() -> None:
    fn = define(concurrency=slayq.Concurrency(limit=3))
    run = new_run(fn, {"customer_id": 1})
    assert run.flow.concurrency == [FlowSlot(bucket="sync/requested", limit=3)]  # type: ignore[attr-defined]
    assert bucket_label("sync/requested", "sync/requested") == "(all runs)"


def test_dotted_keys_walk_nested_structs_by_their_encoded_names() -> None:
    fn = define(
        singleton=slayq.Singleton(key="address.country"),
        idempotency=slayq.Idempotency(key="account", ttl="1h"),
    )
    run = new_run(fn, {"customer_id": 1, "address": {"country": "NL"}, "accountId": "x"})
    assert run.flow.singleton.bucket == 'sync/requested address.country="NL"'  # type: ignore[attr-defined]
    assert run.flow.idempotency.bucket == 'sync/requested accountId="x"'  # type: ignore[attr-defined]
    assert run.flow.idempotency.ttl == timedelta(hours=1)  # type: ignore[attr-defined]
    # a missing optional struct keys as null, not as an error
    run = new_run(fn, {"customer_id": 1})
    assert run.flow.singleton.bucket == "sync/requested address.country=null"  # type: ignore[attr-defined]


def test_a_function_without_flow_control_sends_plain_runs() -> None:
    run = new_run(define(), {"customer_id": 1})
    assert run.flow is None  # type: ignore[attr-defined]


def test_throttle_and_rate_limit_resolve_to_gcra_rates() -> None:
    fn = define(
        throttle=slayq.Throttle(limit=60, period="1m", burst=5, key="customer_id"),
        rate_limit=slayq.RateLimit(limit=4, period="4h"),
    )
    flow = new_run(fn, {"customer_id": 7}).flow  # type: ignore[attr-defined]
    assert flow.throttle == FlowRate(
        bucket="sync/requested customer_id=7", interval=timedelta(seconds=1), burst=5
    )
    # a rate limit admits `limit` at once, then one per period / limit
    assert flow.rate_limit == FlowRate(
        bucket="sync/requested", interval=timedelta(hours=1), burst=3
    )


@pytest.mark.parametrize(
    ("flow", "message"),
    [
        (
            {"concurrency": [slayq.Concurrency(limit=2, key="customer")]},
            "Sync has no field 'customer'",
        ),
        ({"concurrency": [slayq.Concurrency(limit=0)]}, "Concurrency limit must be an int >= 1"),
        ({"concurrency": [3]}, "concurrency takes slayq.Concurrency"),
        ({"throttle": slayq.Throttle(limit=1, period="soon")}, "Throttle period"),
        ({"throttle": slayq.Throttle(limit=1, period="1s", burst=-1)}, "burst must be >= 0"),
        ({"rate_limit": slayq.RateLimit(limit=1, period="0s")}, "must be positive"),
        ({"singleton": slayq.Singleton(mode="newest")}, "mode must be 'skip' or 'cancel'"),  # type: ignore[arg-type]
        ({"singleton": slayq.Singleton(key="customer_id.x")}, "customer_id is not a struct"),
        ({"debounce": slayq.Debounce(period="5m", timeout="1m")}, "shorter than its period"),
        ({"batch": slayq.Batch(max_size=0, timeout="5s")}, "Batch max_size must be"),
        (
            {
                "batch": slayq.Batch(max_size=10, timeout="5s"),
                "debounce": slayq.Debounce(period="1s"),
                "singleton": slayq.Singleton(),
            },
            "batch cannot be combined with debounce, singleton",
        ),
        (
            {"idempotency": slayq.Idempotency(key="", ttl="1h")},
            "Idempotency key must be a field path",
        ),
        (
            {"singleton": slayq.Singleton(), "debounce": slayq.Debounce(period="1m")},
            "singleton cannot be combined with debounce",
        ),
    ],
)
def test_bad_flow_controls_are_refused_when_the_function_is_defined(
    flow: dict[str, object], message: str
) -> None:
    with pytest.raises(FunctionDefinitionError, match="sync/requested") as caught:
        define(**flow)
    assert message in str(caught.value)


def test_batch_refuses_cancel_on_with_the_reason() -> None:
    with pytest.raises(FunctionDefinitionError, match="batch cannot be combined with cancel_on"):
        define(
            batch=slayq.Batch(max_size=10, timeout="5s"),
            cancel_on=[slayq.Match("sync/stopped", "customer_id")],
        )


def test_an_oversized_key_value_is_refused_at_send_naming_the_field() -> None:
    fn = define(concurrency=[slayq.Concurrency(limit=1, key="document_id")])
    with pytest.raises(EventDataError, match=r"data\.document_id is .* flow control key"):
        new_run(fn, {"customer_id": 1, "document_id": "x" * 600})
