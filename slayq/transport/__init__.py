"""HTTP delivery of runs: the server POSTs a signed delivery, the app answers a Transition.

* ``wire``: the JSON bodies (msgspec, versioned) and their size ``Limits``.
* ``signing``: HMAC-SHA512 headers over the exact bytes sent, with secret rotation.
* ``receiver``: the app's side, ``Receiver`` and its ``asgi_app``.
* ``live``: the runs the receiver keeps live between the deliveries of an attempt.
* ``deliverer``: the server's side, an aiohttp ``Deliverer``.
"""

from slayq.transport.deliverer import Deliverer
from slayq.transport.errors import (
    BodyTooLargeError,
    DeliveryError,
    SignatureError,
    WireError,
    WireVersionError,
)
from slayq.transport.receiver import Receiver, asgi_app
from slayq.transport.signing import (
    DELIVERY_HEADER,
    SIGNATURE_HEADER,
    TIMESTAMP_HEADER,
    secrets_from_env,
    sign,
    verify,
)
from slayq.transport.wire import (
    WIRE_VERSION,
    Answer,
    BatchDelivery,
    ClaimDelivery,
    ContinueDelivery,
    Limits,
    decode_answer,
    decode_delivery,
    encode_answer,
    encode_delivery,
)

__all__ = [
    "DELIVERY_HEADER",
    "SIGNATURE_HEADER",
    "TIMESTAMP_HEADER",
    "WIRE_VERSION",
    "Answer",
    "BatchDelivery",
    "BodyTooLargeError",
    "ClaimDelivery",
    "ContinueDelivery",
    "Deliverer",
    "DeliveryError",
    "Limits",
    "Receiver",
    "SignatureError",
    "WireError",
    "WireVersionError",
    "asgi_app",
    "decode_answer",
    "decode_delivery",
    "encode_answer",
    "encode_delivery",
    "secrets_from_env",
    "sign",
    "verify",
]
