"""HTTP delivery of runs: the server POSTs a signed Claim, the app answers a Transition.

* ``wire``: the JSON bodies (msgspec) and their size ``Limits``.
* ``signing``: HMAC-SHA512 headers over the exact bytes sent, with secret rotation.
* ``receiver``: the app's side, ``Receiver`` and its ``asgi_app``.
* ``deliverer``: the server's side, an httpx ``Deliverer``.
"""

from slayq.transport.deliverer import Deliverer
from slayq.transport.errors import BodyTooLargeError, DeliveryError, SignatureError, WireError
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
    Limits,
    decode_delivery,
    decode_transition,
    encode_delivery,
    encode_transition,
)

__all__ = [
    "DELIVERY_HEADER",
    "SIGNATURE_HEADER",
    "TIMESTAMP_HEADER",
    "BodyTooLargeError",
    "Deliverer",
    "DeliveryError",
    "Limits",
    "Receiver",
    "SignatureError",
    "WireError",
    "asgi_app",
    "decode_delivery",
    "decode_transition",
    "encode_delivery",
    "encode_transition",
    "secrets_from_env",
    "sign",
    "verify",
]
