"""OpenTelemetry spans for runs and steps, and the trace context a run carries.

Only the OpenTelemetry API is used (the ``slayq[otel]`` extra). Nothing happens unless
an SDK's tracer provider has been set: without the API, or with the API's default
(proxy) provider, every function here returns at once.

* ``inject(event)``: a PRODUCER span ``send <event>`` for each new run, child of the
  current span (``client.send_event``, ``step.send_event``, the run that invoked it) or
  the root of a new trace; its W3C ``traceparent`` (and ``tracestate``) is stored on the
  run, so every attempt of the run continues that one trace.
* ``attempt_span(claim)``: a CONSUMER span per attempt (per delivery, on an app behind
  the server), child of the send span. It ends OK when the attempt completes,
  continues or suspends (a sleep or wait is not an error), ERROR when it failed.
* ``step_span(name)``: a span per executed ``step.run`` handler (memo hits have none).
"""

from __future__ import annotations

from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

from slayq.model import Completed, Continue, Failed, Suspend

try:
    from opentelemetry import context as otel_context
    from opentelemetry import propagate, trace
except ImportError:  # the otel extra is not installed
    _OTEL = False
else:
    _OTEL = True

if TYPE_CHECKING:
    from collections.abc import Iterator

    from slayq.model import Claim, Transition

_NAME = "slayq"


class Attempt:
    """The span of one attempt (or a no-op): tell it how the attempt ended."""

    def __init__(self, span: Any = None) -> None:
        self._span = span

    def ended(self, transition: Transition) -> None:
        span = self._span
        if span is None:
            return
        outcome = transition.outcome
        span.set_attribute("slayq.steps", len(transition.steps))
        if isinstance(outcome, Failed):
            span.set_attribute("slayq.outcome", "failed")
            span.set_attribute("slayq.error.type", outcome.error.type)
            span.set_attribute("slayq.retry", outcome.retry_after is not None)
            description = f"{outcome.error.type}: {outcome.error.message}"
            span.set_status(trace.Status(trace.StatusCode.ERROR, description))
            return
        if isinstance(outcome, Suspend):
            span.set_attribute("slayq.outcome", "suspended")
            span.set_attribute("slayq.pending", [p.name for p in outcome.pending])
        elif isinstance(outcome, Continue):
            span.set_attribute("slayq.outcome", "continue")
        elif isinstance(outcome, Completed):
            span.set_attribute("slayq.outcome", "completed")
        span.set_status(trace.Status(trace.StatusCode.OK))


_provider_set = False  # an SDK's provider, once set, stays: no need to look again


def enabled() -> bool:
    """Whether spans are recorded: the API is installed and an SDK's provider is set."""
    global _provider_set
    if _provider_set:
        return True
    if not _OTEL or isinstance(trace.get_tracer_provider(), trace.ProxyTracerProvider):
        return False
    _provider_set = True
    return True


def inject(event: str) -> dict[str, str] | None:
    """The trace context to store with a new run of ``event`` (W3C headers), or None."""
    if not enabled():
        return None
    tracer = trace.get_tracer(_NAME)
    # A moment, not a duration: it marks where the run came from in the trace.
    span = tracer.start_span(
        f"send {event}", kind=trace.SpanKind.PRODUCER, attributes={"slayq.event": event}
    )
    span.end()
    carrier: dict[str, str] = {}
    propagate.inject(carrier, context=trace.set_span_in_context(span))
    return carrier or None


@contextmanager
def attempt_span(claim: Claim) -> Iterator[Attempt]:
    """A span around one attempt of ``claim``'s run, current inside the block."""
    if not enabled():
        yield Attempt()
        return
    # A run without a stored context starts its own trace, whatever is current here.
    parent = propagate.extract(claim.trace) if claim.trace else otel_context.Context()
    tracer = trace.get_tracer(_NAME)
    span = tracer.start_span(
        f"run {claim.event}",
        context=parent,
        kind=trace.SpanKind.CONSUMER,
        attributes={
            "slayq.run_id": claim.lease.run_id,
            "slayq.event": claim.event,
            "slayq.queue": claim.queue,
            "slayq.attempt": claim.attempt,
            "slayq.max_attempts": claim.max_attempts,
            "slayq.replaying": bool(claim.memo),
        },
    )
    # Errors are recorded here, not by OpenTelemetry: describing a user's exception may
    # itself raise, and that must not replace the error the attempt fails with.
    with trace.use_span(span, end_on_exit=True, record_exception=False,
                        set_status_on_exception=False):  # fmt: skip
        try:
            yield Attempt(span)
        except Exception as exc:
            _failed(span, exc)
            raise


@contextmanager
def step_span(step: str) -> Iterator[None]:
    """A span around one step handler, child of the current (attempt) span."""
    if not enabled():
        yield
        return
    tracer = trace.get_tracer(_NAME)
    with tracer.start_as_current_span(
        f"step {step}",
        kind=trace.SpanKind.INTERNAL,
        attributes={"slayq.step": step},
        record_exception=False,
        set_status_on_exception=False,
    ) as span:
        try:
            yield
        except Exception as exc:
            _failed(span, exc)
            raise


def _failed(span: Any, exc: Exception) -> None:
    """Mark ``span`` failed by ``exc``, whose ``str()`` (user code) may raise."""
    name = type(exc).__qualname__
    try:
        description = f"{name}: {exc}"
        span.record_exception(exc)
    except Exception:
        description = name
    span.set_status(trace.Status(trace.StatusCode.ERROR, description))
