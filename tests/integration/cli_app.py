"""The app the CLI tests run: ``--app tests.integration.cli_app:client``.

Its client's store is a MemoryStore on purpose: the CLI takes only the functions (to
validate data) and works on the database it is given.
"""

from __future__ import annotations

import threading

import msgspec

import slayq
from slayq import step
from slayq.store.memory import MemoryStore


class Text(msgspec.Struct):
    text: str


@slayq.function(event="cli/greet", schema=Text, retries=0)
async def greet(ctx: slayq.Context[Text]) -> slayq.Workflow:
    loud = yield step.run("shout", lambda: ctx.data.text.upper())

    def check() -> None:
        if ctx.data.text.startswith("fail"):
            raise RuntimeError(f"boom: {ctx.data.text}")

    yield step.run("check", check)
    yield slayq.finish({"greeting": f"hello {loud}"})


@slayq.function(
    event="cli/approve",
    schema=Text,
    queue="approvals",
    waits_on=[slayq.Match("cli/approved", "text")],
)
async def approve(ctx: slayq.Context[Text]) -> slayq.Workflow:
    answer = yield step.wait_for_event("approval", "cli/approved", timeout="1h")
    yield slayq.finish(answer)


# Set by a test to let the runs of ``cli/hold`` finish: until then their worker holds them.
RELEASE = threading.Event()


@slayq.function(event="cli/hold", queue="holding")
async def hold(ctx: slayq.Context[slayq.EmptyEvent]) -> slayq.Workflow:
    yield step.run("hold", lambda: RELEASE.wait(20))


@slayq.function(event="cli/tick", cron="0 3 * * *")
async def tick(ctx: slayq.Context[slayq.EmptyEvent]) -> slayq.Workflow:
    yield slayq.finish("tock")


client = slayq.Client([greet, approve, hold, tick], store=MemoryStore())
