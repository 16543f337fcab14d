"""Step commands: what a workflow function yields, and the engine answers.

Each constructor checks its arguments at once, so a bad duration or name is raised at the
``yield`` line that wrote it.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from slayq.errors import StepDefinitionError
from slayq.runtime.durations import Duration, parse_duration, parse_instant, parse_timeout
from slayq.runtime.names import name_problem

if TYPE_CHECKING:
    from collections.abc import Callable, Sequence
    from datetime import datetime, timedelta

    from slayq.model import StepKind


def _check_name(name: object) -> str:
    if not isinstance(name, str) or not name:
        raise StepDefinitionError(f"a step name must be a non-empty string, got {name!r}")
    problem = name_problem(name)
    if problem is not None:
        raise StepDefinitionError(f"step name {problem}")
    return name


def _check_event(event: object, where: str) -> str:
    if not isinstance(event, str) or not event:
        raise StepDefinitionError(f"{where}: event must be a name")
    problem = name_problem(event)
    if problem is not None:
        raise StepDefinitionError(f"{where}: event name {problem}")
    return event


class StepCommand:
    """Base of the commands a function yields; ``kind`` is how the memo records it."""

    __slots__ = ("name",)
    kind: StepKind

    def __init__(self, name: str) -> None:
        self.name = _check_name(name)

    def __repr__(self) -> str:
        return f"step.{type(self).__name__}({self.name!r})"


class RunStep(StepCommand):
    """Run ``fn(*args)``; ``timeout`` (if set) overrides the function's ``step_timeout``."""

    __slots__ = ("args", "fn", "timeout")
    kind: StepKind = "run"

    def __init__(
        self,
        name: str,
        fn: Callable[..., Any],
        args: tuple[Any, ...],
        timeout: timedelta | None = None,
    ) -> None:
        super().__init__(name)
        if not callable(fn):
            raise StepDefinitionError(f"step.run({name!r}, ...): {fn!r} is not callable")
        self.fn = fn
        self.args = args
        self.timeout = timeout


class SleepStep(StepCommand):
    """Sleep for ``delay`` or until ``until``; exactly one is set."""

    __slots__ = ("delay", "until")
    kind: StepKind = "sleep"

    def __init__(
        self, name: str, *, delay: timedelta | None = None, until: datetime | None = None
    ) -> None:
        super().__init__(name)
        self.delay = delay
        self.until = until


class WaitStep(StepCommand):
    __slots__ = ("event", "match", "timeout")
    kind: StepKind = "wait"

    def __init__(self, name: str, event: str, timeout: timedelta, match: str | None) -> None:
        super().__init__(name)
        self.event = _check_event(event, f"step.wait_for_event({name!r})")
        self.timeout = timeout
        self.match = match


class InvokeStep(StepCommand):
    __slots__ = ("data", "event", "timeout")
    kind: StepKind = "invoke"

    def __init__(self, name: str, event: str, data: object, timeout: timedelta) -> None:
        super().__init__(name)
        self.event = _check_event(event, f"step.invoke({name!r})")
        self.data = data
        self.timeout = timeout


class SendStep(StepCommand):
    __slots__ = ("events",)
    kind: StepKind = "send"

    def __init__(self, name: str, events: list[tuple[str, object]]) -> None:
        super().__init__(name)
        self.events = events


class Parallel:
    """Several ``run``, ``invoke``, ``wait_for_event`` or ``sleep`` steps at once."""

    __slots__ = ("commands",)

    def __init__(self, commands: Sequence[StepCommand]) -> None:
        if not commands:
            raise StepDefinitionError("step.parallel() needs at least one step")
        for command in commands:
            if not isinstance(command, RunStep | InvokeStep | WaitStep | SleepStep):
                raise StepDefinitionError(
                    f"step.parallel() takes step.run, step.invoke, step.wait_for_event and "
                    f"step.sleep commands, got {command!r}"
                )
        self.commands = list(commands)

    def __repr__(self) -> str:
        return f"step.parallel({', '.join(repr(c) for c in self.commands)})"


class Finish:
    """``yield slayq.finish(value)`` ends the run with ``value`` as its result."""

    __slots__ = ("value",)

    def __init__(self, value: Any) -> None:
        self.value = value


# The public constructors: ``from slayq import step`` then ``yield step.run(...)``.


def run(name: str, fn: Callable[..., Any], *args: Any, timeout: Duration | None = None) -> RunStep:
    """Run ``fn(*args)`` (sync in a thread, or async) once; its result is memoized.

    ``timeout`` bounds one attempt of the handler (it wins over the function's
    ``step_timeout``): past it the attempt fails with ``StepTimeoutError`` and is retried.
    """
    limit = parse_timeout(timeout, what=f"step.run({name!r}) timeout")
    return RunStep(name, fn, args, limit)


def sleep(name: str, duration: Duration) -> SleepStep:
    """Sleep for ``duration``: "5m", "2 hours", "3 years", "500ms", seconds or a timedelta."""
    return SleepStep(name, delay=parse_duration(duration, what=f"step.sleep({name!r}) duration"))


def sleep_until(name: str, when: datetime | str) -> SleepStep:
    """Sleep until ``when``: an aware datetime or an ISO-8601 string with an offset."""
    return SleepStep(name, until=parse_instant(when, what=f"step.sleep_until({name!r}) time"))


def wait_for_event(name: str, event: str, timeout: Duration, match: str | None = None) -> WaitStep:
    """Wait for ``event`` whose ``data[match]`` equals this run's; ``None`` on timeout.

    ``match`` may be left out when the function's ``waits_on`` declares one field for the
    event. Events sent since the run started (or since its previous wait was answered)
    count, so an event sent a moment before the wait begins is not missed.
    """
    delay = parse_duration(timeout, what=f"step.wait_for_event({name!r}) timeout")
    return WaitStep(name, event, delay, match)


def invoke(name: str, event: str, data: object, timeout: Duration = "15m") -> InvokeStep:
    """Start the function for ``event`` and answer its result (``None`` on timeout)."""
    return InvokeStep(
        name, event, data, parse_duration(timeout, what=f"step.invoke({name!r}) timeout")
    )


def send_event(name: str, event: str, data: object) -> SendStep:
    """Send one event, exactly once per run even across retries."""
    return SendStep(name, [(event, data)])


def send_events(name: str, events: Sequence[tuple[str, object]]) -> SendStep:
    """Send several events at once, exactly once per run even across retries."""
    checked: list[tuple[str, object]] = []
    for item in events:
        if not (isinstance(item, tuple) and len(item) == 2 and isinstance(item[0], str)):
            raise StepDefinitionError(
                f"step.send_events({name!r}): each event is an (event, data) tuple, got {item!r}"
            )
        checked.append(item)
    return SendStep(name, checked)


def parallel(*commands: StepCommand) -> Parallel:
    """Run several steps concurrently; answers a tuple of their results, in order."""
    return Parallel(commands)


def finish(value: Any = None) -> Finish:
    return Finish(value)
