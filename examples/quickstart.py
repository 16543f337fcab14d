"""The demo from the README: a three-step function that fails once, then a one-year sleep.

Run it with ``python examples/quickstart.py``: everything runs in-process on the test
harness's virtual clock, so it needs no database and finishes in well under a second.
"""

from __future__ import annotations

import anyio
import msgspec

import slayq
from slayq import step
from slayq.testing import Harness

calls: dict[str, int] = {}


def count(name: str) -> None:
    calls[name] = calls.get(name, 0) + 1


class TestEvent(msgspec.Struct):
    test_string: str


@slayq.function(event="test/event", schema=TestEvent)
async def three_steps(ctx: slayq.Context[TestEvent]) -> slayq.Workflow:
    def first() -> str:
        count("first-step")
        return "hello"

    def second() -> str:
        count("second-step")
        return "world"

    def third() -> str:
        count("third-step")
        if ctx.retry == 1:  # ctx.retry is 1 on the first run, as in Slay Q
            raise RuntimeError("Yoinks.")
        return ctx.data.test_string

    val = yield step.run("first-step", first)
    val2 = yield step.run("second-step", second)
    val3 = yield step.run("third-step", third)
    yield step.sleep("hush-baby", "1 year")
    yield slayq.finish(f"{val} {val2} {val3}")


async def main() -> None:
    async with Harness([three_steps]) as h:
        run_id = await h.send_event("test/event", {"test_string": "from slayq"})
        assert run_id is not None
        run = await h.run_until_finished(run_id)
        print(f"run {run.id}: {run.status} after {run.attempts} attempts -> {run.result!r}")
        print("handler calls:", calls)
        print("steps:", [s.name for s in run.steps])
        print("virtual time now:", h.now.isoformat())


if __name__ == "__main__":
    anyio.run(main)
