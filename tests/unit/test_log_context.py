"""User log records inside handlers carry the run; JSON log lines carry every field."""

from __future__ import annotations

import json
import logging
import sys
from collections.abc import Iterator

import pytest

import slayq
from slayq import step
from slayq.telemetry import JsonFormatter, RunContextFilter, configure_logging, log_context
from slayq.testing import Harness

pytestmark = pytest.mark.anyio

user_log = logging.getLogger("my.app")


@slayq.function(event="logs/flow", retries=1)
async def flow(ctx: slayq.Context[slayq.EmptyEvent]) -> slayq.Workflow:
    user_log.info("in the body")

    def handler() -> str:  # a sync handler: it runs in a worker thread
        user_log.info("in the handler")
        if ctx.attempt == 1:
            raise RuntimeError("once")
        return "ok"

    async def async_handler() -> dict[str, object]:
        return log_context()

    yield step.run("sync", handler)
    seen = yield step.run("async", async_handler)
    yield slayq.finish(seen)


@pytest.fixture
def logs(caplog: pytest.LogCaptureFixture) -> Iterator[pytest.LogCaptureFixture]:
    """caplog, its handler filtered as a user's handler would be."""
    run_filter = RunContextFilter()
    caplog.handler.addFilter(run_filter)
    caplog.set_level(logging.INFO, logger="my.app")
    try:
        yield caplog
    finally:
        caplog.handler.removeFilter(run_filter)


async def test_user_records_in_handlers_carry_run_id_step_and_attempt(
    logs: pytest.LogCaptureFixture,
) -> None:
    async with Harness([flow]) as h:
        run_id = await h.send_event("logs/flow")
        assert run_id is not None
        run = await h.run_until_finished(run_id)
    assert run.status == "completed"
    assert run.result == {
        "run_id": run_id,
        "event": "logs/flow",
        "queue": "general",
        "attempt": 2,
        "step": "async",
    }
    records = logs.records
    in_handler = [r for r in records if r.getMessage() == "in the handler"]
    assert [(r.run_id, r.step, r.attempt) for r in in_handler] == [  # type: ignore[attr-defined]
        (run_id, "sync", 1),
        (run_id, "sync", 2),
    ]
    in_body = [r for r in records if r.getMessage() == "in the body"]
    assert in_body and all(r.run_id == run_id for r in in_body)  # type: ignore[attr-defined]
    assert not any(hasattr(r, "step") for r in in_body)  # between steps: no step
    assert log_context() == {}  # nothing leaks out of the run


def test_a_field_given_with_extra_wins_over_the_context() -> None:
    record = logging.makeLogRecord({"msg": "m", "run_id": "mine"})
    assert RunContextFilter().filter(record)
    assert record.run_id == "mine"  # type: ignore[attr-defined]


def test_json_lines_hold_time_level_logger_message_and_extra() -> None:
    try:
        raise ValueError("bad")
    except ValueError:
        exc_info = sys.exc_info()
    record = logging.LogRecord("slayq.x", logging.WARNING, __file__, 1, "run %s", ("r1",), exc_info)
    record.run_id = "r1"
    record.when = object()  # not JSON: written as its str()
    line = json.loads(JsonFormatter().format(record))
    assert line["level"] == "WARNING"
    assert line["logger"] == "slayq.x"
    assert line["message"] == "run r1"
    assert line["run_id"] == "r1"
    assert line["when"].startswith("<object")
    assert "ValueError: bad" in line["exception"]
    assert line["time"].endswith("Z") and "T" in line["time"]


def test_configure_logging_refuses_an_unknown_format() -> None:
    with pytest.raises(ValueError, match="'xml'"):
        configure_logging("INFO", "xml")  # type: ignore[arg-type]
