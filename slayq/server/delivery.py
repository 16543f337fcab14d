"""Executing a claimed run over HTTP: deliver it to the app, commit what it answers.

A ``Continue`` answer is committed and the run delivered again at once, with the new
steps in its memo, under the same lease. When the app cannot be reached, times out or
answers anything but a Transition, the attempt fails with that error recorded and the
run is retried with backoff: nothing is lost while an app is down.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

import msgspec

from slayq.model import Continue, ErrorInfo, Failed, Transition
from slayq.runtime.retry import DEFAULT_RETRY_POLICY, RetryPolicy
from slayq.transport.errors import DeliveryError

if TYPE_CHECKING:
    from collections.abc import Sequence

    from slayq.model import Claim
    from slayq.runtime.driver import Commit
    from slayq.transport.deliverer import Deliverer

logger = logging.getLogger(__name__)


class HttpExecutor:
    def __init__(
        self,
        deliverer: Deliverer,
        *,
        allowed_endpoints: Sequence[str] = (),
        fallback_endpoint: str | None = None,
        retry_policy: RetryPolicy = DEFAULT_RETRY_POLICY,
    ) -> None:
        self.deliverer = deliverer
        self.allowed_endpoints = list(allowed_endpoints)
        self.fallback_endpoint = fallback_endpoint
        self.retry_policy = retry_policy

    async def __call__(self, claim: Claim, commit: Commit) -> None:
        endpoint = claim.endpoint or self.fallback_endpoint
        refusal = self._refusal(endpoint)
        if refusal is not None or endpoint is None:
            error = ErrorInfo(type="EndpointError", message=refusal or "no endpoint")
            await commit(claim.lease, Transition(steps=[], outcome=Failed(error)))
            return
        current = claim
        while True:
            try:
                transition = await self.deliverer.deliver(endpoint, current)
            except DeliveryError as exc:
                logger.warning(
                    "delivering run %s failed: %s",
                    claim.lease.run_id,
                    exc,
                    extra={"run_id": claim.lease.run_id, "event": claim.event},
                )
                await commit(claim.lease, self._failed_delivery(claim, exc))
                return
            await commit(claim.lease, transition)
            if not isinstance(transition.outcome, Continue):
                return
            current = msgspec.structs.replace(current, memo=[*current.memo, *transition.steps])

    def _refusal(self, endpoint: str | None) -> str | None:
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

    def _failed_delivery(self, claim: Claim, exc: DeliveryError) -> Transition:
        retry_after = (
            self.retry_policy.delay(claim.attempt) if claim.attempt < claim.max_attempts else None
        )
        error = ErrorInfo(type="DeliveryError", message=str(exc))
        return Transition(steps=[], outcome=Failed(error=error, retry_after=retry_after))
