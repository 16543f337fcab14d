"""The app the CLI tests run: ``--app tests.integration.cli_app:client``.

Its client's store is a MemoryStore on purpose: the CLI takes only the functions (to
validate data) and works on the database it is given.
"""

from __future__ import annotations

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


client = slayq.Client([greet, approve], store=MemoryStore())
