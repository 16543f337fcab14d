"""The errors of the HTTP transport.

They hang under the tree drawn in ``slayq.errors``::

    SlayqError
    ├── InputError
    │   └── WireError                      a body that is not the expected JSON
    │       ├── BodyTooLargeError          a body over ``Limits.body_bytes``
    │       └── WireVersionError           a body of another wire version (upgrade a side)
    ├── SignatureError                     a request whose signature does not verify
    └── DeliveryError                      the server could not get a Transition from the app
"""

from __future__ import annotations

from slayq.errors import InputError, SlayqError


class WireError(InputError):
    """A delivery or response body that cannot be decoded; the message names what is wrong."""


class BodyTooLargeError(WireError):
    """A body larger than ``Limits.body_bytes``; it was refused before decoding."""


class WireVersionError(WireError):
    """A delivery or answer of another wire version than this side speaks; the message
    says which side to upgrade."""


class SignatureError(SlayqError):
    """A request that fails verification. ``reason`` says which check failed.

    The reason is safe to send back to the caller: it never contains a secret or the
    signature that was expected.
    """

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class DeliveryError(SlayqError):
    """A delivery that did not bring back a Transition.

    ``status`` is the HTTP status the app answered with, or None when there was no
    usable answer (connection refused, timeout). ``may_have_run`` is True when the app
    got the whole request and may have run a step handler (a read timeout, a connection
    dropped mid-answer, a 200 that is not a Transition); False when it surely did not
    (it could not be reached, or refused the request with an error status).
    ``permanent`` is True when sending the run again cannot help: it does not fit the
    body limits, or its endpoint is not a URL that can be reached.
    """

    def __init__(
        self,
        message: str,
        *,
        endpoint: str,
        delivery_id: str,
        status: int | None = None,
        may_have_run: bool = False,
        permanent: bool = False,
    ) -> None:
        super().__init__(message)
        self.endpoint = endpoint
        self.delivery_id = delivery_id
        self.status = status
        self.may_have_run = may_have_run
        self.permanent = permanent
