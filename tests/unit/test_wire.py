"""The wire format: deliveries and answers as msgspec JSON, their version, what it refuses."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import msgspec
import pytest

from slayq.errors import ConfigError, InputError
from slayq.model import (
    CancelRule,
    Claim,
    Completed,
    Continue,
    ErrorInfo,
    Failed,
    Lease,
    NewRun,
    OutgoingEvent,
    ParentLink,
    PendingStep,
    RunId,
    StepRecord,
    Suspend,
    Transition,
)
from slayq.transport import (
    WIRE_VERSION,
    Answer,
    BatchDelivery,
    BodyTooLargeError,
    ClaimDelivery,
    ContinueDelivery,
    Limits,
    WireError,
    WireVersionError,
    decode_answer,
    decode_delivery,
    encode_answer,
    encode_delivery,
)
from slayq.transport.wire import (
    batch_line,
    batch_line_index,
    decode_batch_line,
    encode_batch,
    parse_size,
)

AT = datetime(2025, 3, 1, 12, 0, tzinfo=UTC)
RUN = RunId("run_01")

CHILD = NewRun(
    id=RunId("run_02"),
    event="media/thumbnail",
    data={"file_id": "f1"},
    queue="media",
    priority=-1,
    max_attempts=6,
    cancel_on=[CancelRule("media/cancel", "file_id", "f1")],
    key="k",
    delay=timedelta(seconds=90),
    parent=ParentLink(RUN, "thumb"),
)


def claim(**changes: object) -> Claim:
    base = Claim(
        lease=Lease(run_id=RUN, token=7, expires_at=AT),
        event="media/upload/process",
        data={"file_id": "f1", "nested": {"list": [1, 2.5, None, True, "é"]}},
        queue="media",
        attempt=2,
        max_attempts=6,
        memo=[
            StepRecord("probe", "run", output={"size": 3}, finished_at=AT),
            StepRecord("cool-down", "sleep"),
            StepRecord(
                "thumb",
                "invoke",
                error=ErrorInfo("RuntimeError", "boom", "Traceback...", step="resize"),
            ),
        ],
    )
    return msgspec.structs.replace(base, **changes)


TRANSITIONS = {
    "continue": Transition(
        steps=[StepRecord("probe", "run", output=[1, "two"])], outcome=Continue()
    ),
    "suspend": Transition(
        steps=[],
        outcome=Suspend(
            [
                PendingStep("nap", "sleep", until=AT + timedelta(days=365)),
                PendingStep("cool-down", "sleep", delay=timedelta(minutes=5)),
                PendingStep(
                    "approval",
                    "wait",
                    delay=timedelta(days=1),
                    event="media/approved",
                    match_field="file_id",
                    match_value="f1",
                ),
                PendingStep("thumb", "invoke", delay=timedelta(minutes=15), child=CHILD),
            ]
        ),
    ),
    "completed": Transition(
        steps=[StepRecord("notify", "send")],
        outcome=Completed({"meta": {"size": 3}, "thumb": None}),
        sent=[
            OutgoingEvent("mail/send", {"to": "ops"}, run=CHILD, logged=True),
            OutgoingEvent("media/approved", {"file_id": "f1"}),
        ],
    ),
    "completed-none": Transition(steps=[], outcome=Completed()),
    "failed-retry": Transition(
        steps=[],
        outcome=Failed(
            ErrorInfo("RuntimeError", "Yoinks.", "Traceback ...", step="third-step"),
            retry_after=timedelta(seconds=12.5),
        ),
    ),
    "failed-for-good": Transition(
        steps=[], outcome=Failed(ErrorInfo("NoRetryError", "stop"), retry_after=None)
    ),
}


def encode_transition(transition: Transition) -> bytes:
    return encode_answer(transition)


def decode_transition(body: bytes, *, limits: Limits | None = None) -> Transition:
    return decode_answer(body, limits=limits or Limits()).transition


def delivery_of(original: Claim) -> bytes:
    return encode_delivery(ClaimDelivery(original))


def with_wire(body: bytes) -> bytes:
    """A JSON object body with this side's wire version added."""
    return msgspec.json.encode({**msgspec.json.decode(body), "wire": WIRE_VERSION})


def test_a_claim_round_trips() -> None:
    original = claim()
    body = delivery_of(original)
    assert isinstance(body, bytes)
    decoded = decode_delivery(body)
    assert decoded == ClaimDelivery(original)
    assert isinstance(decoded, ClaimDelivery)
    assert decoded.claim.lease.expires_at.tzinfo is not None


def test_a_continue_round_trips_and_is_small() -> None:
    original = ContinueDelivery(RUN, token=7, memo_size=12)
    body = encode_delivery(original)
    assert msgspec.json.decode(body) == {
        "kind": "continue",
        "run_id": RUN,
        "token": 7,
        "memo_size": 12,
        "wire": WIRE_VERSION,
    }
    assert decode_delivery(body) == original


def test_every_delivery_names_its_wire_version_and_kind() -> None:
    body = msgspec.json.decode(delivery_of(claim()))
    assert (body["wire"], body["kind"]) == (WIRE_VERSION, "claim")


def test_a_delivery_of_an_older_server_names_who_to_upgrade() -> None:
    # Wire version 1 was the bare Claim, with no version in it.
    old = msgspec.json.encode(claim())
    with pytest.raises(WireVersionError, match=r"no wire version\. A slayq server older than this"):
        decode_delivery(old)


def test_a_delivery_of_a_newer_server_names_who_to_upgrade() -> None:
    newer = msgspec.json.decode(delivery_of(claim()))
    newer["wire"] = WIRE_VERSION + 1
    with pytest.raises(
        WireVersionError, match=rf"wire version {WIRE_VERSION + 1}, .* upgrade slayq in the app"
    ):
        decode_delivery(msgspec.json.encode(newer))
    # Even in a shape this version cannot read: the version is named, not the shape.
    other = {"wire": WIRE_VERSION + 1, "kind": "teleport"}
    with pytest.raises(WireVersionError, match=f"wire version {WIRE_VERSION + 1}"):
        decode_delivery(msgspec.json.encode(other))


def test_an_answer_without_a_wire_version_names_who_to_upgrade() -> None:
    old = msgspec.json.encode(TRANSITIONS["completed"])  # what an older app answers
    with pytest.raises(WireVersionError, match=r"runs a slayq older .* Upgrade the app"):
        decode_answer(old)
    assert issubclass(WireVersionError, WireError)


@pytest.mark.parametrize("live", [True, False])
def test_an_answer_says_whether_the_app_keeps_the_run_live(live: bool) -> None:
    transition = TRANSITIONS["continue"]
    body = encode_answer(transition, live=live)
    assert msgspec.json.decode(body)["live"] is live
    assert decode_answer(body) == Answer(transition, live=live)


def test_an_answer_whose_live_is_not_a_boolean_is_refused() -> None:
    body = msgspec.json.decode(encode_answer(TRANSITIONS["continue"]))
    body["live"] = "yes"
    with pytest.raises(WireError, match="live is 'yes', not a boolean"):
        decode_answer(msgspec.json.encode(body))


@pytest.mark.parametrize("name", sorted(TRANSITIONS))
def test_a_transition_of_every_outcome_round_trips(name: str) -> None:
    transition = TRANSITIONS[name]
    decoded = decode_transition(encode_transition(transition))
    assert decoded == transition
    assert type(decoded.outcome) is type(transition.outcome)


def test_every_outcome_kind_is_covered() -> None:
    kinds = {type(t.outcome) for t in TRANSITIONS.values()}
    assert kinds == {Continue, Suspend, Completed, Failed}


def test_outcomes_are_tagged_on_the_wire() -> None:
    body = msgspec.json.decode(encode_transition(TRANSITIONS["failed-retry"]))
    assert body["outcome"]["type"] == "failed"


@pytest.mark.parametrize(
    ("body", "match"),
    [
        (b"", "not valid JSON"),
        (b"not json", "not valid JSON"),
        (b'{"lease": ', "not valid JSON"),
        (b"[]", "Expected `object`, got `array`"),
        (b"null", "Expected `object`, got `null`"),
    ],
)
def test_garbage_deliveries_are_refused(body: bytes, match: str) -> None:
    with pytest.raises(WireError, match=match):
        decode_delivery(body)


def test_a_delivery_with_a_wrong_type_names_the_field() -> None:
    body = msgspec.json.decode(delivery_of(claim()))
    body["claim"]["attempt"] = "two"
    with pytest.raises(WireError, match=r"Expected `int`, got `str` - at `\$.claim.attempt`"):
        decode_delivery(msgspec.json.encode(body))
    body = msgspec.json.decode(delivery_of(claim()))
    body["claim"]["lease"]["token"] = None
    with pytest.raises(WireError, match=r"at `\$.claim.lease.token`"):
        decode_delivery(msgspec.json.encode(body))


def test_a_delivery_missing_a_field_names_it() -> None:
    body = msgspec.json.decode(delivery_of(claim()))
    del body["claim"]["memo"]
    with pytest.raises(WireError, match="missing required field `memo`"):
        decode_delivery(msgspec.json.encode(body))
    continued = msgspec.json.decode(encode_delivery(ContinueDelivery(RUN, 7, 3)))
    del continued["memo_size"]
    with pytest.raises(WireError, match="missing required field `memo_size`"):
        decode_delivery(msgspec.json.encode(continued))


def test_a_step_of_an_unknown_kind_is_refused() -> None:
    body = msgspec.json.decode(delivery_of(claim()))
    body["claim"]["memo"][0]["kind"] = "teleport"
    with pytest.raises(WireError, match=r"\$.claim.memo\[0\].kind"):
        decode_delivery(msgspec.json.encode(body))


def test_a_transition_with_an_unknown_outcome_is_refused() -> None:
    body = msgspec.json.decode(encode_transition(TRANSITIONS["completed"]))
    body["outcome"]["type"] = "exploded"
    with pytest.raises(WireError, match="Invalid value 'exploded'"):
        decode_transition(msgspec.json.encode(body))


@pytest.mark.parametrize(
    ("body", "match"),
    [
        (b"<html>502 Bad Gateway</html>", "not valid JSON"),
        (b'{"steps": []}', "missing required field `outcome`"),
        (b'{"steps": {}, "outcome": {"type": "continue"}}', r"at `\$.steps`"),
        (
            b'{"steps": [], "outcome": {"type": "failed", "error": {}}}',
            r"missing required field `type` - at `\$.outcome.error`",
        ),
        (
            b'{"steps": [], "outcome": {"type": "failed", "error": {"type": "E", '
            b'"message": "m"}, "retry_after": "soon"}}',
            r"at `\$.outcome.retry_after`",
        ),
    ],
)
def test_bad_transitions_are_refused_naming_what_is_wrong(body: bytes, match: str) -> None:
    if body.startswith(b"{"):
        body = with_wire(body)
    with pytest.raises(WireError, match=match):
        decode_transition(body)


def test_wire_errors_are_input_errors() -> None:
    with pytest.raises(InputError):
        decode_transition(b"{")
    with pytest.raises(ValueError, match="not valid JSON"):
        decode_transition(b"{")


def test_oversize_bodies_are_refused_before_decoding() -> None:
    limits = Limits(body_bytes=100)
    big = delivery_of(claim(data={"blob": "x" * 200}))
    with pytest.raises(BodyTooLargeError, match=r"over the limit of .*100 bytes"):
        decode_delivery(big, limits=limits)
    # Refused by size even though it is not JSON at all: no decoding was tried.
    with pytest.raises(BodyTooLargeError):
        decode_transition(b"\xff" * 101, limits=limits)
    assert issubclass(BodyTooLargeError, WireError)


def test_a_body_exactly_at_the_limit_is_accepted() -> None:
    body = encode_transition(TRANSITIONS["completed-none"])
    assert (
        decode_transition(body, limits=Limits(body_bytes=len(body)))
        == TRANSITIONS["completed-none"]
    )
    with pytest.raises(BodyTooLargeError):
        decode_transition(body, limits=Limits(body_bytes=len(body) - 1))


def test_the_default_limit_is_8_mib() -> None:
    assert Limits().body_bytes == 8 * 1024 * 1024


@pytest.mark.parametrize("size", [0, -1])
def test_a_limit_that_admits_nothing_is_refused(size: int) -> None:
    with pytest.raises(ConfigError, match="body_bytes"):
        Limits(body_bytes=size)


def test_a_transition_that_is_not_json_cannot_be_encoded() -> None:
    bad = Transition(steps=[StepRecord("s", "run", output={1j})], outcome=Continue())
    with pytest.raises(WireError, match="cannot be encoded"):
        encode_transition(bad)


def test_sent_event_data_is_carried_once_and_restored() -> None:
    data = {"blob": "z" * 1000}
    run = msgspec.structs.replace(CHILD, data=data, parent=None)
    sent = [
        OutgoingEvent("media/thumbnail", data, run=run),
        OutgoingEvent("media/thumbnail", {"other": 1}, run=run),  # a run with other data
        OutgoingEvent("media/approved", {"file_id": "f1"}, logged=True),  # no run
    ]
    transition = Transition(steps=[], outcome=Continue(), sent=sent)
    body = encode_transition(transition)
    assert body.count(b"z" * 1000) == 2  # once for the first event, once for the other run
    assert decode_transition(body) == transition


def test_a_run_that_carries_its_own_data_still_decodes() -> None:
    run = msgspec.structs.replace(CHILD, parent=None)
    transition = Transition(
        steps=[], outcome=Continue(), sent=[OutgoingEvent(CHILD.event, CHILD.data, run=run)]
    )
    assert decode_transition(with_wire(msgspec.json.encode(transition))) == transition


def test_deeply_nested_json_is_a_wire_error() -> None:
    nested = b"[" * 100_000 + b"]" * 100_000
    with pytest.raises(WireError, match="nested too deeply"):
        decode_transition(
            b'{"steps": [], "outcome": {"type": "completed", "result": ' + nested + b"}}"
        )
    with pytest.raises(WireError, match="nested too deeply"):
        decode_delivery(b'{"data": {"x": ' + nested + b"}}")


@pytest.mark.parametrize(
    ("text", "size"),
    [("16MiB", 16 * 1024 * 1024), ("512 KiB", 512 * 1024), ("20MB", 20_000_000), ("1000", 1000)],
)
def test_sizes_are_read_with_units(text: str, size: int) -> None:
    assert parse_size(text) == size


@pytest.mark.parametrize("text", ["", "0", "lots", "16 MiBs", "-5", "1.5MiB"])
def test_a_size_that_cannot_be_read_is_a_config_error_naming_it(text: str) -> None:
    with pytest.raises(ConfigError, match=f"SLAY_Q_BODY_LIMIT: {text!r} is not a size"):
        parse_size(text, what="SLAY_Q_BODY_LIMIT")


def test_a_batch_holds_deliveries_of_version_3_and_is_never_empty() -> None:
    claim_delivery = msgspec.json.decode(delivery_of(claim()))
    batch = {"wire": WIRE_VERSION, "kind": "batch", "deliveries": [claim_delivery]}
    decoded = decode_delivery(msgspec.json.encode(batch))
    assert isinstance(decoded, BatchDelivery)
    assert decoded.deliveries == [ClaimDelivery(claim())]
    with pytest.raises(WireError, match="the batch is empty"):
        decode_delivery(msgspec.json.encode({**batch, "deliveries": []}))
    with pytest.raises(WireError, match="batches are wire version 3"):
        decode_delivery(msgspec.json.encode({**batch, "wire": 2}))
    nested = {**batch, "deliveries": [batch]}
    with pytest.raises(WireError, match="not a valid delivery"):
        decode_delivery(msgspec.json.encode(nested))


def test_a_line_of_a_batch_answer_names_a_delivery_of_the_batch() -> None:
    body = encode_answer(TRANSITIONS["completed"])
    line = batch_line(1, 200, body)
    assert line.endswith(b"\n") and line.count(b"\n") == 1
    decoded = decode_batch_line(line, size=2)
    assert (decoded.i, decoded.status) == (1, 200)
    assert decode_answer(bytes(decoded.body)).transition == TRANSITIONS["completed"]
    with pytest.raises(WireError, match="names delivery 1 of 1"):
        decode_batch_line(line, size=1)
    with pytest.raises(WireError, match="line of the batch's answer is not valid"):
        decode_batch_line(b'{"i": 0}', size=1)
    assert batch_line_index(line[:12]) == 1  # read from its head alone
    assert batch_line_index(b'{"steps": []') is None


def test_a_batch_of_encoded_deliveries_decodes_to_them() -> None:
    deliveries: list[ClaimDelivery | ContinueDelivery] = [
        ClaimDelivery(claim()),
        ContinueDelivery(RUN, 7, 2),
    ]
    body = encode_batch([encode_delivery(d) for d in deliveries])
    decoded = decode_delivery(body)
    assert isinstance(decoded, BatchDelivery)
    assert decoded.deliveries == deliveries
    assert decoded.wire == WIRE_VERSION
