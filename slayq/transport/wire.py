"""The wire format between the slayq server and the app's receiver: msgspec JSON.

A delivery (server to app) is a ``Claim`` as JSON; the answer (app to server) is a
``Transition`` as JSON. Both are the model's own Structs, so the wire format is the
model: a field added there is on the wire too. Bodies over ``Limits.body_bytes`` are
refused before any decoding, and a body that does not decode raises ``WireError``
naming what was wrong (``Expected `int`, got `str` - at `$.attempt```).

One difference: an ``OutgoingEvent`` whose run starts with the event's own data (the
usual case) leaves ``data`` out of its ``run``, and decoding puts it back, so each
event's data is carried once (``events_to_wire`` / ``events_from_wire``; the ingest RPC's
``send-events`` does the same).
"""

from __future__ import annotations

import re
from typing import Any

import msgspec

from slayq.errors import ConfigError
from slayq.model import Claim, OutgoingEvent, Transition
from slayq.runtime.limits import KIB, MIB, describe
from slayq.transport.errors import BodyTooLargeError, WireError


class Limits(msgspec.Struct, frozen=True, kw_only=True):
    """Bounds on what one HTTP request or response may carry.

    ``body_bytes`` must cover a run's whole memo (every step's output rides in each
    delivery), so keep it above the sum of the step outputs a run may hold.
    """

    body_bytes: int = 8 * MIB

    def __post_init__(self) -> None:
        if isinstance(self.body_bytes, bool) or self.body_bytes < 1:
            raise ConfigError(
                f"Limits.body_bytes must be a positive number of bytes, got {self.body_bytes!r}"
            )


DEFAULT_LIMITS = Limits()

RAISE_LIMITS = (
    "To let it through, raise the limit on both sides: SLAY_Q_BODY_LIMIT on the server "
    "and Client(body_limits=Limits(body_bytes=...)) in the app; or keep step outputs and "
    "sent events small (store large data elsewhere and pass a reference)."
)

_SIZE = re.compile(r"\s*([0-9]+)\s*(B|KB|KiB|MB|MiB|GB|GiB)?\s*", re.IGNORECASE)
_UNITS = {
    "b": 1,
    "kb": 1000,
    "kib": KIB,
    "mb": 1000**2,
    "mib": MIB,
    "gb": 1000**3,
    "gib": 1024 * MIB,
}


def parse_size(text: str, *, what: str = "a body limit") -> int:
    """Bytes from ``"16MiB"``, ``"512 KiB"``, ``"20MB"`` or ``"1048576"``.

    Raises ``ConfigError`` naming ``what`` for anything else, or a size of 0.
    """
    match = _SIZE.fullmatch(text)
    size = int(match[1]) * _UNITS[(match[2] or "b").lower()] if match else 0
    if size < 1:
        raise ConfigError(
            f"{what}: {text!r} is not a size; give bytes or a number with a unit, "
            "like 16MiB, 512KiB or 20MB"
        )
    return size


_encoder = msgspec.json.Encoder()
_claim_decoder = msgspec.json.Decoder(Claim)


def events_to_wire(events: list[OutgoingEvent]) -> list[Any]:
    """``events`` as JSON-ready builtins, each event's data once (see the module doc)."""
    wire: list[Any] = []
    for event in events:
        run = event.run
        if run is not None and (run.data is event.data or run.data == event.data):
            event = msgspec.structs.replace(event, run=msgspec.structs.replace(run, data={}))
            item = msgspec.to_builtins(event)
            del item["run"]["data"]
        else:
            item = msgspec.to_builtins(event)
        wire.append(item)
    return wire


def events_from_wire(events: object) -> None:
    """Put each event's data back in its run where ``events_to_wire`` left it out.

    Works in place on decoded JSON, before it is converted to Structs; anything not
    shaped like events is left for the conversion to refuse.
    """
    if not isinstance(events, list):
        return
    for event in events:
        if isinstance(event, dict) and "data" in event:
            run = event.get("run")
            if isinstance(run, dict) and "data" not in run:
                run["data"] = event["data"]


def encode_delivery(claim: Claim) -> bytes:
    """The body of a delivery: ``claim`` as JSON."""
    return _encode(claim, what="delivery")


def decode_delivery(body: bytes, *, limits: Limits = DEFAULT_LIMITS) -> Claim:
    """The ``Claim`` in a delivery body. Raises ``WireError`` (``BodyTooLargeError``)."""
    check_size(len(body), limits, what="delivery")
    try:
        return _claim_decoder.decode(body)
    except msgspec.ValidationError as exc:
        raise WireError(f"delivery body is not a valid claim: {exc}") from None
    except msgspec.DecodeError as exc:
        raise WireError(f"delivery body is not valid JSON: {exc}") from None
    except RecursionError:
        raise WireError("delivery body is not a valid claim: JSON nested too deeply") from None


def encode_transition(transition: Transition) -> bytes:
    """The body of the app's answer: ``transition`` as JSON, sent event data once."""
    try:
        wire = msgspec.to_builtins(msgspec.structs.replace(transition, sent=[]))
        wire["sent"] = events_to_wire(transition.sent)
    except (TypeError, msgspec.EncodeError) as exc:
        raise WireError(f"the transition cannot be encoded as JSON: {exc}") from None
    return _encoder.encode(wire)


def decode_transition(body: bytes, *, limits: Limits = DEFAULT_LIMITS) -> Transition:
    """The ``Transition`` in a response body. Raises ``WireError`` (``BodyTooLargeError``)."""
    check_size(len(body), limits, what="transition")
    try:
        wire = msgspec.json.decode(body)
        if isinstance(wire, dict):
            events_from_wire(wire.get("sent"))
        return msgspec.convert(wire, Transition)
    except msgspec.ValidationError as exc:
        raise WireError(f"response body is not a valid transition: {exc}") from None
    except msgspec.DecodeError as exc:
        raise WireError(f"response body is not valid JSON: {exc}") from None
    except RecursionError:
        raise WireError("response body is not a valid transition: JSON nested too deeply") from None


def check_size(size: int, limits: Limits, *, what: str, at_least: bool = False) -> None:
    """Raise ``BodyTooLargeError`` if a body of ``size`` bytes is over the limit.

    ``at_least`` says that only the first ``size`` bytes were counted.
    """
    if size > limits.body_bytes:
        more = "at least " if at_least else ""
        raise BodyTooLargeError(
            f"{what} body is {more}{describe(size)} ({size} bytes), over the limit of "
            f"{describe(limits.body_bytes)} ({limits.body_bytes} bytes, Limits.body_bytes)"
        )


def _encode(value: Claim, *, what: str) -> bytes:
    try:
        return _encoder.encode(value)
    except (TypeError, msgspec.EncodeError) as exc:
        raise WireError(f"the {what} cannot be encoded as JSON: {exc}") from None
