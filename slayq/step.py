"""The step commands: ``from slayq import step``, then ``yield step.run(...)`` and so on."""

from slayq.runtime.commands import (
    finish,
    invoke,
    parallel,
    run,
    send_event,
    send_events,
    sleep,
    sleep_until,
    wait_for_event,
)

__all__ = [
    "finish",
    "invoke",
    "parallel",
    "run",
    "send_event",
    "send_events",
    "sleep",
    "sleep_until",
    "wait_for_event",
]
