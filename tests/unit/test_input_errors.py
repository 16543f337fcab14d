"""Bad input gets a clear error that names what was wrong, raised before anything is stored."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import msgspec
import pytest

import slayq
from slayq import step
from slayq.runtime.durations import parse_duration, parse_instant
from slayq.testing import Harness

pytestmark = pytest.mark.anyio


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("5m", timedelta(minutes=5)),
        ("2 hours", timedelta(hours=2)),
        ("500ms", timedelta(milliseconds=500)),
        ("1.5h", timedelta(minutes=90)),
        ("3 years", timedelta(days=3 * 365.25)),
        ("1 year", timedelta(days=365.25)),
        ("2d", timedelta(days=2)),
        ("1w", timedelta(weeks=1)),
        ("10 SECONDS", timedelta(seconds=10)),
        (30, timedelta(seconds=30)),
        (0.25, timedelta(milliseconds=250)),
        (timedelta(hours=1), timedelta(hours=1)),
    ],
)
def test_durations_read_like_ms(text: Any, expected: timedelta) -> None:
    assert parse_duration(text) == expected


@pytest.mark.parametrize(
    ("bad", "says"),
    [
        ("500", "is not a duration"),
        ("5 parsecs", "unknown unit 'parsecs'"),
        ("soon", "is not a duration"),
        ("-5m", "is negative"),
        (True, "must be a string"),
        (None, "must be a string"),
    ],
)
def test_bad_durations_are_named(bad: Any, says: str) -> None:
    with pytest.raises(slayq.DurationError, match=says):
        parse_duration(bad)


def test_instants_must_carry_a_timezone() -> None:
    assert parse_instant("2025-01-01T00:00:00Z") == datetime(2025, 1, 1, tzinfo=UTC)
    assert parse_instant("2025-01-01T08:00:00+08:00") == datetime(2025, 1, 1, tzinfo=UTC)
    with pytest.raises(slayq.DurationError, match="has no timezone"):
        parse_instant("2025-01-01T00:00:00")
    with pytest.raises(slayq.DurationError, match="not an ISO-8601"):
        parse_instant("1/1/2025")


def test_step_commands_check_their_arguments_where_they_are_written() -> None:
    with pytest.raises(slayq.StepDefinitionError, match="non-empty string"):
        step.run("", print)
    with pytest.raises(slayq.StepDefinitionError, match="not callable"):
        step.run("x", 42)  # type: ignore[arg-type]
    with pytest.raises(slayq.DurationError, match=r"step.sleep\('nap'\)"):
        step.sleep("nap", "forever")
    with pytest.raises(slayq.StepDefinitionError, match="parallel"):
        step.parallel(step.send_event("s", "e", {}))


class Upload(msgspec.Struct):
    file_id: str
    size: int = 0


async def noop(ctx: slayq.Context[Any]) -> None:
    return None


def test_function_definitions_are_checked() -> None:
    with pytest.raises(slayq.FunctionDefinitionError, match=r"msgspec\.Struct"):
        slayq.function(event="x", schema=dict)(noop)  # type: ignore[arg-type]
    with pytest.raises(slayq.FunctionDefinitionError, match="retries must be an int >= 0"):
        slayq.function(event="x", retries=-1)(noop)
    with pytest.raises(slayq.FunctionDefinitionError, match="field 'fileid'"):
        slayq.function(event="x", schema=Upload, cancel_on=[slayq.Match("c", "fileid")])(noop)
    with pytest.raises(slayq.FunctionDefinitionError, match="not a valid cron"):
        slayq.function(event="x", cron="every day")(noop)
    with pytest.raises(slayq.FunctionDefinitionError, match="unknown timezone 'Mars/Base'"):
        slayq.function(event="x", cron="TZ=Mars/Base 0 3 * * *")(noop)
    with pytest.raises(slayq.FunctionDefinitionError, match="must have no required fields"):
        slayq.function(event="x", schema=Upload, cron="0 3 * * *")(noop)
    with pytest.raises(slayq.FunctionDefinitionError, match="async generator"):
        slayq.function(event="x")(lambda ctx: None)  # type: ignore[arg-type,return-value]


def test_event_names_are_unique_per_client() -> None:
    a = slayq.function(event="same")(noop)
    b = slayq.function(event="same")(noop)
    with pytest.raises(slayq.FunctionDefinitionError, match="unique per client"):
        Harness([a, b])


async def test_event_data_is_validated_before_anything_is_stored() -> None:
    @slayq.function(event="upload", schema=Upload)
    async def upload(ctx: slayq.Context[Upload]) -> slayq.Workflow:
        yield step.run("noop", lambda: None)

    async with Harness([upload]) as h:
        with pytest.raises(slayq.EventDataError, match=r"\$\.file_id"):
            await h.send_event("upload", {"file_id": 7})
        with pytest.raises(slayq.EventDataError, match="file_id"):
            await h.send_event("upload", {})
        with pytest.raises(slayq.EventDataError, match="must be a mapping"):
            await h.send_event("upload", ["f1"])
        with pytest.raises(slayq.UnknownEventError, match="'uplaod' is not handled"):
            await h.send_event("uplaod", {"file_id": "f1"})
        with pytest.raises(slayq.InputError, match="delay or run_at, not both"):
            await h.send_event("upload", {"file_id": "f1"}, delay="1m", run_at="2030-01-01T00:00Z")
        assert await h.store.next_wakeup() is None  # nothing was stored
        run_id = await h.send_event("upload", Upload(file_id="f1"))
        assert run_id is not None
        assert (await h.get_run(run_id)).data == {"file_id": "f1", "size": 0}


async def test_events_that_only_wake_or_cancel_are_accepted() -> None:
    @slayq.function(
        event="job",
        schema=Upload,
        waits_on=[slayq.Match("job/approved", "file_id")],
        cancel_on=[slayq.Match("job/cancel", "file_id")],
    )
    async def job(ctx: slayq.Context[Upload]) -> slayq.Workflow:
        yield step.wait_for_event("ok", "job/approved", "1h")

    async with Harness([job]) as h:
        assert await h.send_event("job/approved", {"file_id": "f1"}) is None
        assert await h.send_event("job/cancel", {"file_id": "f1"}) is None


async def test_idempotency_keys_return_the_first_run() -> None:
    @slayq.function(event="charge", schema=Upload)
    async def charge(ctx: slayq.Context[Upload]) -> None:
        return None

    async with Harness([charge]) as h:
        first = await h.send_event("charge", {"file_id": "f"}, key="order-1")
        again = await h.send_event("charge", {"file_id": "f"}, key="order-1")
        other = await h.send_event("charge", {"file_id": "f"}, key="order-2")
    assert first == again != other


async def test_oversized_event_data_and_step_outputs_are_refused_whole() -> None:
    @slayq.function(event="big")
    async def big(ctx: slayq.Context[slayq.EmptyEvent]) -> slayq.Workflow:
        yield step.run("blob", lambda: "x" * 2000)

    @slayq.function(event="blob", schema=Upload)
    async def blob(ctx: slayq.Context[Upload]) -> None:
        return None

    limits = slayq.SizeLimits(event_data_bytes=100, step_output_bytes=1000)
    async with Harness([big, blob], limits=limits) as h:
        with pytest.raises(slayq.EventDataError, match=r"over the limit of 0\.1 KiB"):
            await h.send_event("blob", {"file_id": "f" * 200})
        assert await h.store.next_wakeup() is None
        run_id = await h.send_event("big")
        assert run_id is not None
        run = await h.run_until_finished(run_id)
    assert (run.status, run.steps) == ("failed", [])
    assert run.error is not None and "step 'blob' is 2.0 KiB of JSON" in run.error.message
