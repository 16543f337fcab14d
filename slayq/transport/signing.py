"""Signed requests: HMAC-SHA512 over the exact bytes sent, as Slay Q did.

A signed request carries three headers::

    X-SlayQ-Timestamp: 1735689600                  unix seconds when it was signed
    X-SlayQ-Delivery:  9f1c2b...                   a unique id (128 random bits, hex) for this request
    X-SlayQ-Signature: 5e0a...                     hex HMAC-SHA512 of the message below

The signed message is ``f"{timestamp}.{delivery_id}.".encode() + body``: the body as
it was sent, never re-serialized JSON. Binding the timestamp bounds how long a captured
request can be replayed; binding the delivery id lets a receiver refuse a second copy.

Several secrets may be accepted at once, so a secret can be rotated without downtime:
give the apps ``SLAY_Q_SECRET=new`` and ``SLAY_Q_PREVIOUS_SECRETS=old``, then the server.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import re
import time
from collections import deque
from typing import TYPE_CHECKING

from slayq.errors import ConfigError, InputError
from slayq.transport.errors import SignatureError

if TYPE_CHECKING:
    from collections.abc import Mapping, Sequence

TIMESTAMP_HEADER = "X-SlayQ-Timestamp"
DELIVERY_HEADER = "X-SlayQ-Delivery"
SIGNATURE_HEADER = "X-SlayQ-Signature"
_DELIVERY_HEADER_LOWER = DELIVERY_HEADER.lower()

SECRET_ENV = "SLAY_Q_SECRET"
PREVIOUS_SECRETS_ENV = "SLAY_Q_PREVIOUS_SECRETS"
WORKER_SECRET_ENV = "SLAY_Q_WORKER_SECRET"  # the name Slay Q's app side read
MIN_ENV_SECRET_CHARS = 16

DEFAULT_TOLERANCE = 15.0

_TIMESTAMP = re.compile(r"[0-9]{1,12}")
_DELIVERY_ID = re.compile(r"[A-Za-z0-9_-]{1,128}")
_SIGNATURE = re.compile(r"[0-9a-fA-F]{128}")


def sign(
    body: bytes, secret: str, *, now: float | None = None, delivery_id: str | None = None
) -> dict[str, str]:
    """The headers that sign ``body`` with ``secret`` (timestamp, delivery id, signature)."""
    return Signer(secret).sign(body, now=now, delivery_id=delivery_id)


class Signer:
    """Signs bodies with one secret, checked and encoded once (a sender signs many)."""

    def __init__(self, secret: str) -> None:
        (self._mac,) = _macs([secret])

    def sign(
        self, body: bytes, *, now: float | None = None, delivery_id: str | None = None
    ) -> dict[str, str]:
        """The headers that sign ``body`` (timestamp, delivery id, signature)."""
        timestamp = str(int(time.time() if now is None else now))
        if not _TIMESTAMP.fullmatch(timestamp):
            raise InputError(f"cannot sign at unix time {timestamp}: it must be 0 or later")
        if delivery_id is None:
            delivery_id = os.urandom(16).hex()  # as random as uuid4().hex, 1 us sooner
        elif not _DELIVERY_ID.fullmatch(delivery_id):
            raise InputError(
                f"delivery id {delivery_id!r} must be 1 to 128 letters, digits, '-' or '_'"
            )
        return {
            TIMESTAMP_HEADER: timestamp,
            DELIVERY_HEADER: delivery_id,
            SIGNATURE_HEADER: _digest(self._mac, timestamp, delivery_id, body),
        }


def verify(
    headers: Mapping[str, str],
    body: bytes,
    secrets: Sequence[str],
    *,
    now: float | None = None,
    tolerance: float = DEFAULT_TOLERANCE,
) -> None:
    """Check that ``body`` was signed with one of ``secrets`` within ``tolerance`` seconds.

    ``headers`` are matched case-insensitively. Raises ``SignatureError`` whose ``reason``
    names the check that failed; it never contains a secret or the expected signature.
    """
    Verifier(secrets, tolerance=tolerance).verify(headers, body, now=now)


class Verifier:
    """Checks signatures with ``secrets``, checked and encoded once (a receiver checks
    every delivery); ``verify`` as the function of that name."""

    def __init__(self, secrets: Sequence[str], *, tolerance: float = DEFAULT_TOLERANCE) -> None:
        self._macs = _macs(secrets)
        self.tolerance = tolerance

    def verify(self, headers: Mapping[str, str], body: bytes, *, now: float | None = None) -> None:
        """Raise ``SignatureError`` unless ``body`` was signed with one of the secrets
        within ``tolerance`` seconds of ``now``; ``headers`` match case-insensitively."""
        lowered = {name.lower(): value for name, value in headers.items()}
        timestamp = _header(lowered, TIMESTAMP_HEADER, _TIMESTAMP, "unix time in whole seconds")
        delivery_id = _header(
            lowered, DELIVERY_HEADER, _DELIVERY_ID, "1 to 128 letters, digits, '-' or '_'"
        )
        signature = _header(
            lowered, SIGNATURE_HEADER, _SIGNATURE, "128 hex digits (an HMAC-SHA512)"
        ).lower()
        matched = False
        for mac in self._macs:  # no early exit: the time taken does not tell which matched
            matched |= hmac.compare_digest(_digest(mac, timestamp, delivery_id, body), signature)
        if not matched:
            raise SignatureError(
                f"{SIGNATURE_HEADER} does not match: the body, timestamp or delivery id was "
                "changed, or the sender signs with a secret this receiver does not have"
            )
        # The window is checked after the signature, so only a holder of a secret learns
        # how far our clock is from theirs.
        skew = (time.time() if now is None else now) - int(timestamp)
        if abs(skew) > self.tolerance:
            side = "in the past" if skew > 0 else "in the future"
            raise SignatureError(
                f"timestamp is {abs(skew):.0f} s {side}; at most {self.tolerance:g} s is "
                "accepted (are the clocks of the server and the app in sync?)"
            )


def secrets_from_env(environ: Mapping[str, str] | None = None) -> list[str]:
    """The signing secrets, in order: the first one signs, all of them verify.

    ``SLAY_Q_SECRET`` holds one secret, taken whole (Slay Q's sample secret contains a
    comma, so no character can be a separator there); ``SLAY_Q_WORKER_SECRET``, the name
    Slay Q's app side used, is read too. While rotating, ``SLAY_Q_PREVIOUS_SECRETS`` holds
    the secrets still accepted, one per line. Raises ``ConfigError`` when none is set.
    """
    env = os.environ if environ is None else environ
    found: list[str] = []
    candidates = [(name, env.get(name)) for name in (SECRET_ENV, WORKER_SECRET_ENV)]
    candidates += [
        (PREVIOUS_SECRETS_ENV, line) for line in env.get(PREVIOUS_SECRETS_ENV, "").splitlines()
    ]
    for name, value in candidates:
        if value is None or (name == PREVIOUS_SECRETS_ENV and not value.strip()):
            continue
        secret = value.strip()
        if len(secret) < MIN_ENV_SECRET_CHARS:
            raise ConfigError(
                f"{name}: a secret is too short ({len(secret)} characters, at least "
                f"{MIN_ENV_SECRET_CHARS} are needed). Make one with "
                "python -c 'import secrets; print(secrets.token_hex(32))'"
            )
        if secret not in found:
            found.append(secret)
    if not found:
        raise ConfigError(
            f"no signing secret: set {SECRET_ENV} to the secret shared by the slayq server "
            f"and the app, like {SECRET_ENV}=$(python -c 'import secrets; "
            "print(secrets.token_hex(32))')"
        )
    return found


def check_secrets(secrets: Sequence[str]) -> list[str]:
    """``secrets`` as a list; raises ``ConfigError`` if there is none or one is empty."""
    if isinstance(secrets, str | bytes):
        raise ConfigError("secrets must be a sequence of strings, like [secret], not one string")
    checked = list(secrets)
    for secret in checked:
        if not isinstance(secret, str) or not secret:
            raise ConfigError("a signing secret must be a non-empty string")
    if not checked:
        raise ConfigError("at least one signing secret is needed")
    return checked


def _macs(secrets: Sequence[str]) -> list[hmac.HMAC]:
    """An HMAC keyed with each secret, fed nothing yet: each message is signed on a copy,
    which skips hashing the padded key again (a few us per signature)."""
    return [
        hmac.new(secret.encode(), digestmod=hashlib.sha512) for secret in check_secrets(secrets)
    ]


def _header(headers: Mapping[str, str], name: str, shape: re.Pattern[str], expected: str) -> str:
    value = headers.get(name.lower())
    if value is None:
        raise SignatureError(f"missing header {name}")
    value = value.strip()
    if not shape.fullmatch(value):
        raise SignatureError(f"header {name} is malformed: expected {expected}")
    return value


def _digest(keyed: hmac.HMAC, timestamp: str, delivery_id: str, body: bytes) -> str:
    mac = keyed.copy()
    mac.update(f"{timestamp}.{delivery_id}.".encode())
    mac.update(body)
    return mac.hexdigest()


class ReplayGuard:
    """Delivery ids seen while their signature is still fresh, so a captured request
    replayed within the time window is refused (per process, in memory).

    Ids expire in the order they were added, so expiring is a pop from the front of a
    queue: each call costs O(1) amortized, however many ids are held.
    """

    def __init__(self, tolerance: float = DEFAULT_TOLERANCE) -> None:
        self.tolerance = tolerance
        self._seen: set[str] = set()
        self._expiry: deque[tuple[float, str]] = deque()

    def first_sight(self, headers: Mapping[str, str], now: float) -> bool:
        """True the first time a (verified) request's delivery id is seen."""
        delivery_id = _delivery_id(headers)
        expiry = self._expiry
        while expiry and expiry[0][0] <= now:
            self._seen.discard(expiry.popleft()[1])
        if delivery_id in self._seen:
            return False
        self._seen.add(delivery_id)
        # A timestamp up to ``tolerance`` ahead stays valid until 2 * tolerance from now.
        # ``now`` going backwards (a clock step) only keeps an id longer than needed.
        expiry.append((now + 2 * self.tolerance, delivery_id))
        return True

    def __len__(self) -> int:
        return len(self._seen)


def _delivery_id(headers: Mapping[str, str]) -> str:
    value = headers.get(DELIVERY_HEADER)
    if value is None:  # the receiver's headers are lower-cased
        value = headers.get(_DELIVERY_HEADER_LOWER)
    if value is None:
        value = next(v for k, v in headers.items() if k.lower() == DELIVERY_HEADER.lower())
    return value.strip()
