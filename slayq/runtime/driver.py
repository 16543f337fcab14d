"""Driving one claimed run to its next stop: advance the engine, commit, repeat.

Shared by every in-process driver (the test harness and the worker). Between steps the
generator stays alive: a ``Continue`` is committed, then the step's result is sent in,
so the memo is replayed only when a run resumes after a suspension or a crash.

Each drive is one attempt at the engine boundary: it runs under the run's log context
(``run_id``, ``event``, ``queue``, ``attempt`` on log records) and its OpenTelemetry
span.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING

from slayq.model import Claim, Continue, ErrorInfo, Failed, Lease, Transition
from slayq.runtime.replay import Execution
from slayq.runtime.retry import DEFAULT_RETRY_POLICY, RetryPolicy
from slayq.telemetry import tracing
from slayq.telemetry.logs import enter_run, leave_run

if TYPE_CHECKING:
    import random

    from slayq.runtime.clock import Clock
    from slayq.runtime.registry import Registry

Commit = Callable[[Lease, Transition], Awaitable[None]]


async def drive(
    registry: Registry,
    claim: Claim,
    commit: Commit,
    *,
    retry_policy: RetryPolicy = DEFAULT_RETRY_POLICY,
    rng: random.Random | None = None,
    max_new_steps: int = 1,
    clock: Clock | None = None,
) -> Transition:
    """Run ``claim`` until it suspends, finishes or fails; return the last transition.

    ``clock`` times the step handlers for the record (the system clock by default).

    Raises what ``commit`` raises (``LeaseLostError`` when the run was taken over or
    cancelled); the engine itself never raises for user code.
    """
    token = enter_run(claim.lease.run_id, claim.event, claim.queue, claim.attempt)
    try:
        # Asked once per attempt: while no SDK is set, asking costs an environment look-up.
        traced = tracing.enabled()
        args = (registry, claim, commit, retry_policy, rng, max_new_steps, clock, traced)
        if not traced:
            return await _drive(*args)
        with tracing.attempt_span(claim) as span:
            transition = await _drive(*args)
            span.ended(transition)
            return transition
    finally:
        leave_run(token)


async def _drive(
    registry: Registry,
    claim: Claim,
    commit: Commit,
    retry_policy: RetryPolicy,
    rng: random.Random | None,
    max_new_steps: int,
    clock: Clock | None,
    traced: bool,
) -> Transition:
    if claim.event not in registry.functions:
        transition = _unknown_function(claim, retry_policy, rng)
        await commit(claim.lease, transition)
        return transition
    execution = Execution.start(
        registry,
        claim,
        retry_policy=retry_policy,
        rng=rng,
        max_new_steps=max_new_steps,
        clock=clock,
        traced=traced,
    )
    try:
        while True:
            transition = await execution.advance()
            await commit(claim.lease, transition)
            if not isinstance(transition.outcome, Continue):
                return transition
    finally:
        await execution.aclose()


def _unknown_function(
    claim: Claim, retry_policy: RetryPolicy, rng: random.Random | None
) -> Transition:
    """A run of an event this process has no function for: retry later, maybe elsewhere."""
    error = ErrorInfo(
        type="UnknownEventError",
        message=f"this process has no function for event {claim.event!r}; "
        "is it registered with the client that runs this queue?",
    )
    retry_after = (
        retry_policy.delay(claim.attempt, rng) if claim.attempt < claim.max_attempts else None
    )
    return Transition(steps=[], outcome=Failed(error=error, retry_after=retry_after))
