"""The wire format between the slayq server and the app's receiver: msgspec JSON.

A delivery (server to app) is a ``Claim`` as JSON; the answer (app to server) is a
``Transition`` as JSON. Both are the model's own Structs, so the wire format is the
model: a field added there is on the wire too. Bodies over ``Limits.body_bytes`` are
refused before any decoding, and a body that does not decode raises ``WireError``
naming what was wrong (``Expected `int`, got `str` - at `$.attempt```).
"""

from __future__ import annotations

import msgspec

from slayq.errors import ConfigError
from slayq.model import Claim, Transition
from slayq.runtime.limits import MIB, describe
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

_encoder = msgspec.json.Encoder()
_claim_decoder = msgspec.json.Decoder(Claim)
_transition_decoder = msgspec.json.Decoder(Transition)


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
    """The body of the app's answer: ``transition`` as JSON."""
    return _encode(transition, what="transition")


def decode_transition(body: bytes, *, limits: Limits = DEFAULT_LIMITS) -> Transition:
    """The ``Transition`` in a response body. Raises ``WireError`` (``BodyTooLargeError``)."""
    check_size(len(body), limits, what="transition")
    try:
        return _transition_decoder.decode(body)
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


def _encode(value: Claim | Transition, *, what: str) -> bytes:
    try:
        return _encoder.encode(value)
    except (TypeError, msgspec.EncodeError) as exc:
        raise WireError(f"the {what} cannot be encoded as JSON: {exc}") from None
