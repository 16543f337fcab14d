"""Executing a claimed run over HTTP: deliver it to the app, commit what it answers.

The first delivery of an attempt carries the whole claim (the memo of finished steps).
A ``Continue`` answer is committed and the run delivered again at once, under the same
lease: as a short continue when the app said it keeps the run live (it goes on from
where it stopped), else, or when the app asks for it (it restarted, another replica got
the continue), as the whole claim with the new steps in its memo; asking spends nothing.
So the memo crosses the wire once per attempt, and a step's cost does not grow with the
run. When a delivery fails, what happens depends on whether a step handler may have run:

* the app could not be reached, or refused the request (401 wrong secret, 404 no such
  function, 5xx): no handler ran, so no attempt is spent. The run is handed back with
  the error recorded, due again after a delay that grows with how long the endpoint has
  been failing (so a short blip costs seconds) and is capped at ``MAX_UNDELIVERED_DELAY``
  (so runs resume within a minute of the app coming back); each failure is logged at
  WARNING with the likely fix;
* the request reached the app but no usable answer came back (a read timeout, a
  connection dropped mid-answer, a 200 that is not a Transition): a handler may have run,
  so the attempt counts and the run is retried with the usual backoff. A handler slower
  than the delivery timeout thus runs out of attempts instead of looping forever;
* the run cannot fit the body limits or its endpoint is no URL: it fails for good.
"""

from __future__ import annotations

import logging
import random
import time
from datetime import timedelta
from typing import TYPE_CHECKING

import msgspec

from slayq.model import Continue, ErrorInfo, Failed, Transition
from slayq.runtime.retry import DEFAULT_RETRY_POLICY, RetryPolicy
from slayq.telemetry.metrics import record_delivery
from slayq.transport.errors import BodyTooLargeError, DeliveryError

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable, Sequence

    from slayq.model import Claim
    from slayq.runtime.driver import Commit
    from slayq.transport.deliverer import Deliverer

    Release = Callable[..., Awaitable[None]]

logger = logging.getLogger(__name__)

MIN_UNDELIVERED_DELAY = timedelta(seconds=1)
MAX_UNDELIVERED_DELAY = timedelta(minutes=1)


def likely_fix(exc: DeliveryError) -> str:
    """What an operator should check, by how the delivery failed."""
    if exc.status is None:
        return f"is the app running, and reachable from the server at {exc.endpoint}?"
    if exc.status == 401:
        return (
            "wrong SLAY_Q_SECRET? The server and the app must share it (or their clocks are "
            "more than 15 s apart)"
        )
    if exc.status == 400 and "wire version" in str(exc):
        return "the server and the app run slayq versions that speak different wire versions"
    if exc.status == 404:
        return "function not registered in the app? Its Client has no function for the event"
    if exc.status >= 500:
        return "the app failed or is deploying; see its log"
    return "is the endpoint the exact URL of the app's receiver? Redirects are not followed"


class HttpExecutor:
    """Delivers each claimed run to its endpoint; ``release`` is the store's, for failed
    deliveries that must not spend an attempt."""

    def __init__(
        self,
        deliverer: Deliverer,
        *,
        release: Release,
        allowed_endpoints: Sequence[str] = (),
        fallback_endpoint: str | None = None,
        retry_policy: RetryPolicy = DEFAULT_RETRY_POLICY,
    ) -> None:
        self.deliverer = deliverer
        self.release = release
        self.allowed_endpoints = list(allowed_endpoints)
        self.fallback_endpoint = fallback_endpoint
        self.retry_policy = retry_policy
        self._failing_since: dict[str, float] = {}  # endpoint -> first failure, monotonic

    async def __call__(self, claim: Claim, commit: Commit) -> None:
        endpoint = claim.endpoint or self.fallback_endpoint
        refusal = self.refusal(endpoint)
        if refusal is not None or endpoint is None:
            error = ErrorInfo(type="EndpointError", message=refusal or "no endpoint")
            record_delivery(claim, "refused")
            await commit(claim.lease, Transition(steps=[], outcome=Failed(error)))
            return
        memo = list(claim.memo)  # and each committed Continue's steps, for a resend
        live = False  # the app said it keeps the run live: a continue will do
        while True:
            try:
                answer = None
                if live:
                    answer = await self.deliverer.deliver_next(endpoint, claim, len(memo))
                if answer is None:  # the first delivery, or the app asked for the claim
                    whole = msgspec.structs.replace(claim, memo=memo)
                    answer = await self.deliverer.deliver(endpoint, whole)
            except DeliveryError as exc:
                await self._failed(claim, exc, commit)
                return
            self._failing_since.pop(endpoint, None)
            record_delivery(claim, "delivered")
            transition, live = answer.transition, answer.live
            await commit(claim.lease, transition)
            if not isinstance(transition.outcome, Continue):
                return
            memo.extend(transition.steps)

    def refusal(self, endpoint: str | None) -> str | None:
        """Why runs for ``endpoint`` can never be delivered, or None."""
        if endpoint is None:
            return (
                "this run has no endpoint to deliver to: send it from a slayq.Client made "
                "with endpoint=..., or set SLAY_Q_CRON_URL on the server"
            )
        if self.allowed_endpoints and not any(
            endpoint.startswith(prefix) for prefix in self.allowed_endpoints
        ):
            return (
                f"endpoint {endpoint!r} is not allowed: the server's config lists "
                f"allowed_endpoints {self.allowed_endpoints}; the run was never delivered"
            )
        return None

    async def _failed(self, claim: Claim, exc: DeliveryError, commit: Commit) -> None:
        # A failure committed as the attempt's outcome is logged by the dispatcher's
        # commit, as every failed attempt is; only a hand-back is logged here.
        if exc.permanent:
            error = ErrorInfo(type=_error_type(exc), message=str(exc))
            record_delivery(claim, "refused")
            await commit(claim.lease, Transition(steps=[], outcome=Failed(error)))
            return
        if exc.may_have_run:
            record_delivery(claim, "lost")
            retry_after = (
                self.retry_policy.delay(claim.attempt)
                if claim.attempt < claim.max_attempts
                else None
            )
            error = ErrorInfo(type="DeliveryError", message=str(exc))
            await commit(claim.lease, Transition(steps=[], outcome=Failed(error, retry_after)))
            return
        record_delivery(claim, "unreachable")
        now = time.monotonic()
        failing = timedelta(seconds=now - self._failing_since.setdefault(exc.endpoint, now))
        nominal = min(MAX_UNDELIVERED_DELAY, max(MIN_UNDELIVERED_DELAY, failing))
        delay = nominal * random.uniform(0.5, 1.0)  # spread out the runs of one endpoint
        hint = likely_fix(exc)
        extra = _extra(claim) | {"endpoint": exc.endpoint, "status": exc.status}
        logger.warning(
            "could not deliver run %s to %s (status %s): %s. Likely fix: %s. The run waits, "
            "without spending an attempt, and is tried again in %.0f s",
            claim.lease.run_id,
            exc.endpoint,
            exc.status if exc.status is not None else "none",
            exc,
            hint,
            delay.total_seconds(),
            extra=extra,
        )
        error = ErrorInfo(type="DeliveryError", message=f"{exc} (likely fix: {hint})")
        await self.release(claim.lease, delay=delay, error=error)


def _error_type(exc: DeliveryError) -> str:
    too_large = exc.status == 413 or isinstance(exc.__cause__, BodyTooLargeError)
    return "BodyTooLargeError" if too_large else "EndpointError"


def _extra(claim: Claim) -> dict[str, object]:
    return {"run_id": claim.lease.run_id, "event": claim.event, "queue": claim.queue}
