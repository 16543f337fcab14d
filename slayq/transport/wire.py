"""The wire format between the slayq server and the app's receiver: msgspec JSON, version 3.

Every delivery (server to app) names the wire version and its kind:

* ``{"wire": 3, "kind": "claim", "claim": {...}}``: a ``ClaimDelivery``, the whole
  ``Claim`` (event, data, attempt, the memo of finished steps). The first delivery of an
  attempt, and any delivery the app asks to be resent whole.
* ``{"wire": 3, "kind": "continue", "run_id": "...", "token": 7, "memo_size": 12}``: a
  ``ContinueDelivery``. The app answered ``Continue`` to the last delivery of this lease
  and said it kept the run live; the server committed that answer. The app goes on from
  where it stopped, running the next step, without the memo being sent again.
  ``memo_size`` (the steps the run has committed) lets it check that both sides agree.
* ``{"wire": 3, "kind": "batch", "deliveries": [{...}, {...}]}``: a ``BatchDelivery``,
  several of the above in one request (version 3). The server sends one when deliveries
  to the same endpoint start together (the runs of one claim, the continues of one
  commit), so that a request's fixed costs (HTTP on both sides, the signature) are paid
  once for all of them.

The answer (app to server) is the ``Transition`` as JSON plus ``"wire": 3`` and
``"live"``: true when the app keeps the run's execution for a ``ContinueDelivery``. Error
answers are ``{"error": "...", "wire": 3}``; the app answers 409 with ``"resend": "claim"``
to a continue it cannot serve (restarted, another replica, evicted), and the server then
sends the whole claim at once. A batch is answered 200 with one line per delivery
(``application/x-ndjson``), each as soon as its run stops, whatever order that is:
``{"i": 0, "status": 200, "body": {...}}``, ``i`` the delivery's place in the batch and
``body`` what a delivery of its own would have been answered with that status.

A delivery or answer of another (or no) wire version raises ``WireVersionError`` saying
which side to upgrade, never a misparse. A receiver also reads deliveries of version 2
(no batches), and answers them in version 2: apps can be upgraded before the server.
The Structs inside are the model's own, so a field added there is on the wire too. Bodies over ``Limits.body_bytes`` are refused
before any decoding, and a body that does not decode raises ``WireError`` naming what
was wrong (``Expected `int`, got `str` - at `$.claim.attempt```).

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
from slayq.model import Claim, OutgoingEvent, RunId, Transition
from slayq.runtime.limits import KIB, MIB, describe
from slayq.transport.errors import BodyTooLargeError, WireError, WireVersionError


class Limits(msgspec.Struct, frozen=True, kw_only=True):
    """Bounds on what one HTTP request or response may carry.

    ``body_bytes`` must cover a run's whole memo (every step's output rides in the first
    delivery of each attempt), so keep it above the sum of the step outputs a run may hold.
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


WIRE_VERSION = 3
# The versions of deliveries a receiver reads (it answers each in its own version).
READS = (2, 3)


class ClaimDelivery(msgspec.Struct, frozen=True, tag="claim", tag_field="kind"):
    """The whole run: the first delivery of an attempt, or one the app asked for."""

    claim: Claim
    wire: int = WIRE_VERSION


class ContinueDelivery(msgspec.Struct, frozen=True, tag="continue", tag_field="kind"):
    """Go on with the run the app kept live for lease ``token``: its last answer, a
    ``Continue``, was committed, and the run's memo now holds ``memo_size`` steps."""

    run_id: RunId
    token: int
    memo_size: int
    wire: int = WIRE_VERSION


Single = ClaimDelivery | ContinueDelivery


class BatchDelivery(msgspec.Struct, frozen=True, tag="batch", tag_field="kind"):
    """Several deliveries in one request, each answered by a line of its own."""

    deliveries: list[Single]
    wire: int = WIRE_VERSION


Delivery = ClaimDelivery | ContinueDelivery | BatchDelivery


class BatchLine(msgspec.Struct, frozen=True):
    """One line of a batch's answer: delivery ``i`` of the batch was answered ``status``
    with ``body`` (an answer, or an error answer)."""

    i: int
    status: int
    body: msgspec.Raw


class Answer(msgspec.Struct, frozen=True):
    """What the app answered: the run's ``transition``, and whether it keeps the run
    ``live`` (its generator, at the next step) for a ``ContinueDelivery``."""

    transition: Transition
    live: bool = False


class _Version(msgspec.Struct):
    wire: Any = None


_encoder = msgspec.json.Encoder()
_delivery_decoder: msgspec.json.Decoder[Delivery] = msgspec.json.Decoder(Delivery)
_line_decoder: msgspec.json.Decoder[BatchLine] = msgspec.json.Decoder(BatchLine)


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


def encode_delivery(delivery: Delivery) -> bytes:
    """The body of a delivery: ``delivery`` as JSON."""
    try:
        return _encoder.encode(delivery)
    except (TypeError, msgspec.EncodeError) as exc:
        raise WireError(f"the delivery cannot be encoded as JSON: {exc}") from None


def decode_delivery(body: bytes, *, limits: Limits = DEFAULT_LIMITS) -> Delivery:
    """The delivery in a body. Raises ``WireError`` (``BodyTooLargeError``,
    ``WireVersionError`` for a delivery of another wire version)."""
    check_size(len(body), limits, what="delivery")
    try:
        delivery = _delivery_decoder.decode(body)
    except msgspec.ValidationError as exc:
        version = _version_of(body)
        if version is not _NOT_AN_OBJECT:
            _check_delivery_version(version)
        raise WireError(f"delivery body is not a valid delivery: {exc}") from None
    except msgspec.DecodeError as exc:
        raise WireError(f"delivery body is not valid JSON: {exc}") from None
    except RecursionError:
        raise WireError("delivery body is not a valid delivery: JSON nested too deeply") from None
    _check_delivery_version(delivery.wire)
    if isinstance(delivery, BatchDelivery):
        if delivery.wire < 3:
            raise WireError("delivery body is not a valid delivery: batches are wire version 3")
        if not delivery.deliveries:
            raise WireError("delivery body is not a valid delivery: the batch is empty")
    return delivery


def encode_answer(transition: Transition, *, live: bool = False, wire: int = WIRE_VERSION) -> bytes:
    """The body of the app's answer: ``transition`` as JSON, sent event data once, with
    the wire version (the delivery's) and whether the app keeps the run ``live`` for a
    continue."""
    try:
        body = msgspec.to_builtins(msgspec.structs.replace(transition, sent=[]))
        body["sent"] = events_to_wire(transition.sent)
    except (TypeError, msgspec.EncodeError) as exc:
        raise WireError(f"the transition cannot be encoded as JSON: {exc}") from None
    body["wire"] = wire
    body["live"] = live
    return _encoder.encode(body)


def decode_answer(body: bytes, *, limits: Limits = DEFAULT_LIMITS) -> Answer:
    """The ``Answer`` in a response body. Raises ``WireError`` (``BodyTooLargeError``,
    ``WireVersionError`` for an answer of another wire version)."""
    check_size(len(body), limits, what="transition")
    try:
        wire = msgspec.json.decode(body)
        version: object = None
        live: object = False
        if isinstance(wire, dict):
            version, live = wire.pop("wire", None), wire.pop("live", False)
            events_from_wire(wire.get("sent"))
        transition = msgspec.convert(wire, Transition)
    except msgspec.ValidationError as exc:
        raise WireError(f"response body is not a valid transition: {exc}") from None
    except msgspec.DecodeError as exc:
        raise WireError(f"response body is not valid JSON: {exc}") from None
    except RecursionError:
        raise WireError("response body is not a valid transition: JSON nested too deeply") from None
    # Checked once the body is a Transition: garbage is named as garbage, not as a version.
    _check_answer_version(version)
    if not isinstance(live, bool):
        raise WireError(f"response body is not a valid answer: live is {live!r}, not a boolean")
    return Answer(transition, live=live)


def error_body(reason: str, *, wire: int = WIRE_VERSION, **extra: object) -> bytes:
    """An error answer: ``{"error": reason, "wire": 3, ...extra}``."""
    return _encoder.encode({"error": reason, "wire": wire, **extra})


def encode_batch(deliveries: list[bytes]) -> bytes:
    """The body of a batch of ``deliveries``, each encoded already (``encode_delivery``):
    they are put in as they are, not encoded again."""
    return b'{"kind":"batch","deliveries":[%b],"wire":%d}' % (b",".join(deliveries), WIRE_VERSION)


def batch_line(i: int, status: int, body: bytes) -> bytes:
    """The line that answers delivery ``i`` of a batch with ``status`` and ``body`` (a
    JSON answer or error answer, put in as it is)."""
    return b'{"i":%d,"status":%d,"body":%b}\n' % (i, status, body)


_LINE_HEAD = re.compile(rb'\{"i":(\d+),')


def batch_line_index(head: bytes | bytearray) -> int | None:
    """The delivery a line of a batch's answer is for, from the line's first bytes (its
    body may be too large to read whole); None if they are not a line's."""
    match = _LINE_HEAD.match(head)
    return int(match[1]) if match else None


def decode_batch_line(line: bytes, *, size: int) -> BatchLine:
    """A line of a batch's answer, for a batch of ``size`` deliveries. Raises
    ``WireError``."""
    try:
        decoded = _line_decoder.decode(line)
    except (msgspec.DecodeError, RecursionError) as exc:
        raise WireError(f"a line of the batch's answer is not valid: {exc}") from None
    if not 0 <= decoded.i < size:
        raise WireError(f"a line of the batch's answer names delivery {decoded.i} of {size}")
    return decoded


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


_NOT_AN_OBJECT = object()


def _version_of(body: bytes) -> object:
    """The ``wire`` field of a JSON object body (None if absent), or ``_NOT_AN_OBJECT``."""
    try:
        return msgspec.json.decode(body, type=_Version).wire
    except (msgspec.DecodeError, RecursionError):
        return _NOT_AN_OBJECT


def _check_delivery_version(version: object) -> None:
    if version in READS and isinstance(version, int):
        return
    if version is None:
        raise WireVersionError(
            "delivery body is not a valid delivery: it names no wire version. A slayq server "
            f"older than this app (which reads wire version {WIRE_VERSION}) sends none: if "
            "so, upgrade slayq on the server to the app's version; runs wait meanwhile, "
            "spending no attempt"
        )
    newer = isinstance(version, int) and version > WIRE_VERSION
    raise WireVersionError(
        f"the delivery is wire version {version!r}, and this app reads version "
        f"{WIRE_VERSION}: upgrade slayq {'in the app' if newer else 'on the server'} so that "
        "both speak the same version; runs wait meanwhile, spending no attempt"
    )


def _check_answer_version(version: object) -> None:
    if version == WIRE_VERSION:
        return
    side = "older" if version is None or (isinstance(version, int) and version < 2) else "newer"
    named = "names no wire version" if version is None else f"is wire version {version!r}"
    raise WireVersionError(
        f"the app's answer {named}, and this server reads version {WIRE_VERSION}: the app "
        f"runs a slayq {side} than the server's. Upgrade the "
        f"{'app' if side == 'older' else 'server'} so that both speak the same version"
    )
