"""OpenTelemetry spans, recorded with the SDK's in-memory exporter on the test Harness."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from datetime import UTC, datetime

import pytest
from opentelemetry import trace
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind, StatusCode

import slayq
from slayq import step
from slayq.testing import Harness

pytestmark = pytest.mark.anyio

_EXPORTER = InMemorySpanExporter()
_attached = False


@pytest.fixture
def spans() -> Iterator[InMemorySpanExporter]:
    """The process's tracer provider can be set once: the first test that needs it does."""
    global _attached
    provider = trace.get_tracer_provider()
    if not isinstance(provider, TracerProvider):
        provider = TracerProvider()
        trace.set_tracer_provider(provider)
    if not _attached:  # the provider may be another test's (the docs' example sets one)
        provider.add_span_processor(SimpleSpanProcessor(_EXPORTER))
        _attached = True
    _EXPORTER.clear()
    yield _EXPORTER
    _EXPORTER.clear()


def named(exporter: InMemorySpanExporter, name: str) -> list[ReadableSpan]:
    return [s for s in exporter.get_finished_spans() if s.name == name]


def parent_of(span: ReadableSpan) -> int | None:
    return span.parent.span_id if span.parent is not None else None


def span_id(span: ReadableSpan) -> int:
    assert span.context is not None
    return int(span.context.span_id)


def trace_id(span: ReadableSpan) -> int:
    assert span.context is not None
    return int(span.context.trace_id)


@slayq.function(event="otel/steps")
async def steps_then_sleep(ctx: slayq.Context[slayq.EmptyEvent]) -> slayq.Workflow:
    yield step.run("one", lambda: 1)
    yield step.sleep("nap", "1h")
    yield step.run("two", lambda: 2)


@slayq.function(event="otel/fails", retries=0)
async def fails(ctx: slayq.Context[slayq.EmptyEvent]) -> slayq.Workflow:
    def boom() -> None:
        raise RuntimeError("boom")

    yield step.run("boom", boom)


@slayq.function(event="otel/callee")
async def callee(ctx: slayq.Context[slayq.EmptyEvent]) -> slayq.Workflow:
    yield step.run("inner", lambda: "x")


@slayq.function(event="otel/caller", invokes=["otel/callee"])
async def caller(ctx: slayq.Context[slayq.EmptyEvent]) -> slayq.Workflow:
    yield step.invoke("call", "otel/callee", {}, "1h")
    yield step.send_event("tell", "otel/callee", {})


FUNCTIONS = [steps_then_sleep, fails, callee, caller]


async def test_an_attempt_span_per_attempt_and_a_step_span_per_executed_step(
    spans: InMemorySpanExporter,
) -> None:
    tracer = trace.get_tracer("test")
    async with Harness(FUNCTIONS, start=datetime(2025, 1, 1, tzinfo=UTC)) as h:
        with tracer.start_as_current_span("sender") as sender:
            run_id = await h.send_event("otel/steps")
            assert run_id is not None
        assert (await h.run_until_finished(run_id)).status == "completed"

    attempts = named(spans, "run otel/steps")
    assert len(attempts) == 2  # before the sleep, and after it
    # send_event marks where the run came from, in the sender's trace.
    (send,) = named(spans, "send otel/steps")
    assert send.kind == SpanKind.PRODUCER
    assert parent_of(send) == sender.get_span_context().span_id
    for attempt in attempts:
        assert attempt.kind == SpanKind.CONSUMER
        assert parent_of(attempt) == span_id(send)
        assert trace_id(attempt) == sender.get_span_context().trace_id
        assert attempt.attributes is not None
        assert attempt.attributes["slayq.run_id"] == run_id
        # The sleep ends its attempt OK, never as an error.
        assert attempt.status.status_code == StatusCode.OK
    first, second = sorted(attempts, key=lambda s: s.start_time or 0)
    assert first.attributes is not None and second.attributes is not None
    assert first.attributes["slayq.outcome"] == "suspended"
    assert second.attributes["slayq.outcome"] == "completed"
    # "one" ran once: the second attempt answered it from the memo, without a span.
    (one,) = named(spans, "step one")
    (two,) = named(spans, "step two")
    assert parent_of(one) == span_id(first)
    assert parent_of(two) == span_id(second)
    assert not named(spans, "step nap")


async def test_a_failed_step_fails_its_span_and_its_attempt(spans: InMemorySpanExporter) -> None:
    async with Harness(FUNCTIONS) as h:
        run_id = await h.send_event("otel/fails")
        assert run_id is not None
        assert (await h.run_until_finished(run_id)).status == "failed"
    (attempt,) = named(spans, "run otel/fails")
    (boom,) = named(spans, "step boom")
    assert boom.status.status_code == StatusCode.ERROR
    assert [e.name for e in boom.events] == ["exception"]
    assert attempt.status.status_code == StatusCode.ERROR
    assert attempt.status.description == "RuntimeError: boom"
    # Sent outside any span: the send span starts the run's own trace.
    (send,) = named(spans, "send otel/fails")
    assert parent_of(send) is None
    assert parent_of(attempt) == span_id(send)


async def test_invoked_and_sent_runs_continue_the_callers_trace(
    spans: InMemorySpanExporter,
) -> None:
    async with Harness(FUNCTIONS) as h:
        run_id = await h.send_event("otel/caller")
        assert run_id is not None
        assert (await h.run_until_finished(run_id)).status == "completed"
        await h.run_until_idle()
    callers = sorted(named(spans, "run otel/caller"), key=lambda s: s.start_time or 0)
    callees = named(spans, "run otel/callee")
    assert len(callers) == 2  # before the invoke returns, and after
    assert len(callees) == 2  # the invoked run, and the run of the sent event
    sends = named(spans, "send otel/callee")
    # invoke from the first attempt, step.send_event from the second
    assert {parent_of(s) for s in sends} == {span_id(s) for s in callers}
    assert {parent_of(s) for s in callees} == {span_id(s) for s in sends}
    assert {trace_id(s) for s in [*callers, *callees]} == {trace_id(callers[0])}
    inner = named(spans, "step inner")
    assert {parent_of(s) for s in inner} == {span_id(s) for s in callees}


WITHOUT_SDK = """
import anyio, slayq
from datetime import timedelta
from slayq import step
from slayq.testing import Harness
from slayq.telemetry import tracing

@slayq.function(event="otel/plain")
async def plain(ctx):
    yield step.run("one", lambda: 1)

async def main():
    async with Harness([plain]) as h:
        run_id = await h.send_event("otel/plain")
        assert run_id is not None
        (claim,) = await h.store.claim(queues=None, limit=1, lease_for=timedelta(minutes=1), owner="t")
        assert claim.trace is None, claim.trace
        with tracing.attempt_span(claim) as span:
            assert span._span is None
    print("untraced")

anyio.run(main)
"""


def test_without_an_sdk_nothing_is_traced() -> None:
    import subprocess

    done = subprocess.run(
        [sys.executable, "-c", WITHOUT_SDK], capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "untraced"


class _Unprintable(Exception):
    def __str__(self) -> str:
        raise RuntimeError("no str for you")


@slayq.function(event="otel/unprintable", retries=0)
async def unprintable(ctx: slayq.Context[slayq.EmptyEvent]) -> slayq.Workflow:
    def explode() -> None:
        raise _Unprintable

    yield step.run("explode", explode)


async def test_an_exception_that_cannot_be_described_still_fails_its_step_span(
    spans: InMemorySpanExporter,
) -> None:
    async with Harness([unprintable]) as h:
        run_id = await h.send_event("otel/unprintable")
        assert run_id is not None
        run = await h.run_until_finished(run_id)
    assert run.status == "failed" and run.error is not None
    assert run.error.type.endswith("_Unprintable")
    (explode,) = named(spans, "step explode")
    assert explode.status.status_code == StatusCode.ERROR
    assert explode.status.description is not None
    assert explode.status.description.endswith("_Unprintable")
