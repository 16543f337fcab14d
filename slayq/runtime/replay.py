"""The replayer: drives a workflow function and turns what it yields into a Transition.

This is the only place replay logic lives. An ``Execution`` wraps one run's generator:

* Steps already in the memo are answered from it, in order, without running anything.
  Meeting a different step (name or kind) than the memo recorded at that position is a
  ``NondeterminismError``; the run fails for good instead of looping.
* The first new ``step.run`` is executed, and the function is driven on until it would
  run another handler: then ``advance()`` returns a ``Continue`` transition, holding that
  command for the next ``advance()``, so the driver commits before any further handler
  runs. A crash re-runs at most the one handler whose result was not yet durable. A
  sleep, send or finish right after a step rides in the same transition (one commit).
* Sleeps, waits and invocations become pending steps in a ``Suspend`` transition; the
  generator is closed and the run is replayed from its memo when they resolve.
* ``step.send_event(s)`` is recorded as a step, and its events ride in the same
  transition, so they are sent exactly once per run.
* A bad step command (a duplicate name, something that is not a step) is thrown into the
  function at its ``yield``. A function that catches those errors and yields again without
  ever making progress fails for good after ``ERRORS_IN_A_ROW`` of them, instead of
  spinning forever; the loop checkpoints meanwhile, so other tasks keep running.
* A ``step.run`` handler runs under its timeout (``step.run(..., timeout=)``, else the
  function's ``step_timeout``); past it the attempt fails with ``StepTimeoutError``.

``advance()`` never raises for anything the user's code does: failures become a
``Failed`` outcome (with ``retry_after`` set while attempts remain), like Temporal's
activation boundary. Its decisions read no clock (durations are left for the store to
anchor); the injected ``clock`` only times ``step.run`` handlers for the record.
"""

from __future__ import annotations

import contextlib
import inspect
import traceback
from datetime import timedelta
from functools import partial
from typing import TYPE_CHECKING, Any

import anyio
import msgspec

from slayq.errors import (
    InputError,
    InvokeError,
    NondeterminismError,
    NoRetryError,
    StepDefinitionError,
    StepOutputError,
    StepTimeoutError,
)
from slayq.model import (
    Claim,
    Completed,
    Continue,
    ErrorInfo,
    Failed,
    Outcome,
    OutgoingEvent,
    ParentLink,
    PendingStep,
    RunId,
    StepRecord,
    Suspend,
    Transition,
)
from slayq.runtime.clock import Clock, SystemClock
from slayq.runtime.commands import (
    Finish,
    InvokeStep,
    Parallel,
    RunStep,
    SendStep,
    SleepStep,
    StepCommand,
    WaitStep,
)
from slayq.runtime.durations import describe_duration
from slayq.runtime.functions import Context, Function
from slayq.runtime.limits import describe
from slayq.runtime.retry import DEFAULT_RETRY_POLICY, RetryPolicy
from slayq.telemetry import tracing
from slayq.telemetry.logs import current_event, enter_step, leave_step
from slayq.telemetry.metrics import observe_step

if TYPE_CHECKING:
    import random
    from collections.abc import AsyncGenerator, Awaitable, Callable, Sequence

    from slayq.runtime.registry import Registry

# Errors that will happen again on every attempt: retrying them only burns time.
# An InvokeError that the function does not catch replays the same stored failure every time.
_PERMANENT = (NoRetryError, NondeterminismError, InputError, StepOutputError, InvokeError)

# How many errors may be thrown into a function in a row, with no step answered between
# them, before the run fails for good. A function that catches a bad step and tries
# another way needs a few; a loop that swallows every error needs them all, and 100
# takes a millisecond or so to spend while being far above any deliberate recovery.
ERRORS_IN_A_ROW = 100

# The most new steps one transition carries. Steps without a handler (sends) ride along
# with the one handler a transition may run; a function sending in an endless loop would
# otherwise never return from advance(), holding the event loop and growing without end.
STEPS_PER_COMMIT = 1000

_SYSTEM_CLOCK = SystemClock()
_ZERO = timedelta(0)


class _HandlerFailed(Exception):
    """A step handler raised; carries the step's name to the run's error."""

    def __init__(self, step: str, error: BaseException) -> None:
        super().__init__(step)
        self.step = step
        self.error = error


class Execution:
    """One run of one function, driven step by step. Make it with ``Execution.start``."""

    def __init__(
        self,
        function: Function,
        registry: Registry,
        *,
        run_id: RunId,
        data: dict[str, Any],
        attempt: int,
        max_attempts: int,
        memo: Sequence[StepRecord],
        retry_policy: RetryPolicy = DEFAULT_RETRY_POLICY,
        rng: random.Random | None = None,
        max_new_steps: int = 1,
        clock: Clock | None = None,
        traced: bool | None = None,
    ) -> None:
        """``traced``: whether step spans are recorded (by default, whether an OpenTelemetry
        SDK is set now)."""
        self.function = function
        self.run_id = run_id
        self.attempt = attempt
        self._registry = registry
        self._data = data
        self._max_attempts = max_attempts
        self._memo = list(memo)
        self._cursor = 0
        self._seen: set[str] = set()
        self._retry_policy = retry_policy
        self._rng = rng
        self._max_new_steps = max(1, max_new_steps)
        self._clock = clock if clock is not None else _SYSTEM_CLOCK
        self._traced = tracing.enabled() if traced is None else traced
        self._gen: AsyncGenerator[Any, Any] | None = None
        self._send: Any = None
        self._throw: BaseException | None = None
        self._held: object = None  # a yielded command waiting for the next advance()
        self._errors_in_a_row = 0
        self.finished = False

    @classmethod
    def start(cls, registry: Registry, claim: Claim, **options: Any) -> Execution:
        return cls(
            registry.get(claim.event),
            registry,
            run_id=claim.lease.run_id,
            data=claim.data,
            attempt=claim.attempt,
            max_attempts=claim.max_attempts,
            memo=claim.memo,
            **options,
        )

    @property
    def replaying(self) -> bool:
        """True while memo records remain to be met."""
        return self._cursor < len(self._memo)

    async def advance(self) -> Transition:
        """Drive the function to its next commit point and say what happened."""
        if self.finished:
            raise RuntimeError("this execution has finished; start a new one to drive the run")
        steps: list[StepRecord] = []
        sent: list[OutgoingEvent] = []
        cursor = self._cursor
        try:
            outcome = await self._drive(steps, sent)
        except _HandlerFailed as failure:
            outcome = self._failed(failure.error, step=failure.step)
        except Exception as exc:
            outcome = self._failed(exc)
        if not isinstance(outcome, Continue):
            await self.aclose()
        replayed = self._cursor - cursor
        return Transition(steps=steps, outcome=outcome, sent=sent, replayed=replayed)

    async def aclose(self) -> None:
        self.finished = True
        gen, self._gen = self._gen, None
        if gen is not None:
            with contextlib.suppress(Exception):
                await gen.aclose()

    # -- driving -----------------------------------------------------------------------

    async def _drive(self, steps: list[StepRecord], sent: list[OutgoingEvent]) -> Outcome:
        new_runs = 0
        if not self.function.is_workflow:
            if self._memo:
                raise NondeterminismError(
                    f"{self.function.name} has no steps, but the memo of run {self.run_id} "
                    f"records step {self._memo[0].name!r}"
                )
            body: Awaitable[Any] = self.function.handler(self._context())  # type: ignore[assignment]
            result = await _timed(body, self.function.step_timeout, what=self.function.name)
            return Completed(self._as_json(result, what="the run's result"))
        while True:
            yielded, self._held = self._held or await self._resume(), None
            if not self.replaying and (
                (new_runs >= self._max_new_steps and _runs_handler(yielded))
                or len(steps) >= STEPS_PER_COMMIT
            ):
                # Commit what ran before running another handler; keep this command for
                # the next advance(). Sleeps, sends and the finish ride along instead, up
                # to a bound: a loop of sends alone must be committed (and yield) too.
                self._held = yielded
                return Continue()
            if isinstance(yielded, Finish):
                self._check_memo_consumed()
                return Completed(self._as_json(yielded.value, what="the run's result"))
            try:
                commands = self._commands_of(yielded)
            except StepDefinitionError as exc:
                await self._throw_in(exc)
                continue
            records = self._replayed(commands)
            if len(records) == len(commands):
                self._answer(yielded, [records[cmd.name] for cmd in commands])
                continue
            todo = [cmd for cmd in commands if cmd.name not in records]
            if self.replaying:
                raise self._diverged(todo[0])
            first_new = len(steps)
            try:
                pending = await self._start_new(todo, steps, sent)
            except (StepDefinitionError, InputError) as exc:
                await self._throw_in(exc)
                continue
            if pending:
                return Suspend(pending)
            records.update((r.name, r) for r in steps[first_new:])
            self._answer(yielded, [records[cmd.name] for cmd in commands])
            new_runs += sum(1 for cmd in todo if isinstance(cmd, RunStep))

    async def _resume(self) -> Any:
        """Send the last answer (or throw the last error) in; return what is yielded next."""
        if self._gen is None:
            self._gen = self.function.handler(self._context())  # type: ignore[assignment]
        assert self._gen is not None
        send, throw = self._send, self._throw
        self._send, self._throw = None, None
        try:
            if throw is not None:
                return await self._gen.athrow(throw)
            return await self._gen.asend(send)
        except StopAsyncIteration:
            return Finish(None)

    async def _throw_in(self, exc: InputError) -> None:
        """Throw ``exc`` into the function at its ``yield``, unless it keeps catching them."""
        self._errors_in_a_row += 1
        if self._errors_in_a_row >= ERRORS_IN_A_ROW:
            raise StepDefinitionError(
                f"{self.function.name} caught the error thrown into it {ERRORS_IN_A_ROW} "
                "times in a row without completing a step, so it would never stop; the "
                f"last error was: {exc}"
            ) from exc
        self._throw = exc
        await anyio.lowlevel.checkpoint()  # a loop of these must not starve other runs

    def _context(self) -> Context[Any]:
        events = None
        if self.function.flow.is_batch:
            # A batch run's data is {"events": [...]}, as the store collected them.
            events = [self.function.decode(item) for item in self._data.get("events", [])]
        return Context(
            event=self.function.event,
            data=events[0] if events else self.function.decode(self._data),
            run_id=self.run_id,
            attempt=self.attempt,
            max_attempts=self._max_attempts,
            events=events,
        )

    def _commands_of(self, yielded: object) -> list[StepCommand]:
        if isinstance(yielded, Parallel):
            commands = yielded.commands
        elif isinstance(yielded, StepCommand):
            commands = [yielded]
        else:
            raise StepDefinitionError(
                f"{self.function.name} yielded {yielded!r}; a function may yield only step "
                "commands (step.run, step.sleep, ...) and slayq.finish(value)"
            )
        for cmd in commands:
            if cmd.name in self._seen:
                raise StepDefinitionError(
                    f"step name {cmd.name!r} is used twice in run {self.run_id}: step names "
                    "must be unique within a run. In a loop, put the index or item id in "
                    f'the name, like step.run(f"{cmd.name}-{{i}}", ...)'
                )
            self._seen.add(cmd.name)
        return commands

    # -- replay ------------------------------------------------------------------------

    def _replayed(self, commands: list[StepCommand]) -> dict[str, StepRecord]:
        """The memo's records for ``commands``, checked against the memo's order.

        A single step must be the memo's next record. The members of a parallel group
        finish in any order, so the group takes the run of next records whose names are
        in the group, whatever their order.
        """
        names = {cmd.name: cmd for cmd in commands}
        found: dict[str, StepRecord] = {}
        while self._cursor < len(self._memo) and len(found) < len(commands):
            record = self._memo[self._cursor]
            cmd = names.get(record.name)
            if cmd is None:
                break
            if record.kind != cmd.kind:
                raise NondeterminismError(
                    f"run {self.run_id} replayed step {cmd.name!r} as a {cmd.kind} step, but "
                    f"the memo recorded it as a {record.kind} step. The function's code "
                    "changed while this run was in flight, or depends on more than its data "
                    "and step results"
                )
            found[record.name] = record
            self._cursor += 1
        return found

    def _diverged(self, cmd: StepCommand) -> NondeterminismError:
        expected = self._memo[self._cursor]
        return NondeterminismError(
            f"run {self.run_id} of {self.function.name} met step {cmd.name!r} ({cmd.kind}) "
            f"where the memo recorded step {expected.name!r} ({expected.kind}) at position "
            f"{self._cursor + 1}. The function's code changed while this run was in flight, "
            "or its steps depend on more than its data and step results (the clock, "
            "randomness, a read outside a step)"
        )

    def _check_memo_consumed(self) -> None:
        if self.replaying:
            extra = self._memo[self._cursor]
            raise NondeterminismError(
                f"run {self.run_id} of {self.function.name} finished, but the memo records "
                f"step {extra.name!r} ({extra.kind}) that this replay never reached"
            )

    def _answer(self, yielded: object, records: list[StepRecord]) -> None:
        for record in records:
            if record.error is not None:
                self._throw = InvokeError(
                    f"step {record.name!r}: {record.error.type}: {record.error.message}"
                )
                return
        self._errors_in_a_row = 0
        outputs = [record.output for record in records]
        self._send = tuple(outputs) if isinstance(yielded, Parallel) else outputs[0]

    # -- new work ----------------------------------------------------------------------

    async def _start_new(
        self, commands: list[StepCommand], steps: list[StepRecord], sent: list[OutgoingEvent]
    ) -> list[PendingStep]:
        """Start new steps: run handlers and sends into ``steps``; return what to wait on."""
        pending = [
            self._pending(cmd) for cmd in commands if not isinstance(cmd, RunStep | SendStep)
        ]
        for cmd in commands:
            if isinstance(cmd, SendStep):
                # All events are checked before any is kept: a bad one sends none of them.
                batch = [self._registry.outgoing(event, data) for event, data in cmd.events]
                sent.extend(batch)
                steps.append(StepRecord(name=cmd.name, kind="send"))
        runs = [cmd for cmd in commands if isinstance(cmd, RunStep)]
        if len(runs) == 1:
            steps.append(await self._run(runs[0]))
        elif runs:
            await self._run_concurrently(runs, steps)
        return pending

    def _pending(self, cmd: StepCommand) -> PendingStep:
        if isinstance(cmd, SleepStep):
            return PendingStep(name=cmd.name, kind="sleep", until=cmd.until, delay=cmd.delay)
        if isinstance(cmd, WaitStep):
            # waits_on names schema fields (checked by @slayq.function); data uses their
            # encoded names.
            key = self.function.data_keys[self._wait_field(cmd)]
            return PendingStep(
                name=cmd.name,
                kind="wait",
                delay=cmd.timeout,
                event=cmd.event,
                match_field=key,
                match_value=self._data.get(key),
            )
        if isinstance(cmd, InvokeStep):
            if cmd.event not in self.function.invokes:
                raise StepDefinitionError(
                    f"step.invoke({cmd.name!r}): {self.function.name} must declare the events "
                    f"it invokes; add invokes=[{cmd.event!r}] to its @slayq.function"
                )
            callee = self._registry.get(cmd.event)
            child = self._registry.new_run(
                callee,
                self._registry.payload(callee, cmd.data),
                parent=ParentLink(self.run_id, cmd.name),
            )
            return PendingStep(name=cmd.name, kind="invoke", delay=cmd.timeout, child=child)
        raise StepDefinitionError(f"{cmd!r} cannot be suspended on")

    def _wait_field(self, cmd: WaitStep) -> str:
        declared = [m.field for m in self.function.waits_on if m.event == cmd.event]
        if cmd.match is None and len(declared) == 1:
            return declared[0]
        if cmd.match is not None and cmd.match in declared:
            return cmd.match
        wanted = cmd.match or "<field>"
        raise StepDefinitionError(
            f"step.wait_for_event({cmd.name!r}, {cmd.event!r}): {self.function.name} must "
            f"declare what it waits for; add waits_on=[slayq.Match({cmd.event!r}, "
            f"{wanted!r})] to its @slayq.function"
            + (" and pass match=... to choose one field" if len(declared) > 1 else "")
        )

    async def _run(self, cmd: RunStep) -> StepRecord:
        """Run a step's handler under its timeout, span and log context, timed once: the
        duration goes to the step's record and to the step-duration metric."""
        timeout = cmd.timeout if cmd.timeout is not None else self.function.step_timeout
        token = enter_step(cmd.name)
        started_at = self._clock.now()
        try:
            call = _traced(cmd) if self._traced else _call(cmd)
            output = await _timed(call, timeout, what=f"step {cmd.name!r}")
        except BaseException as exc:
            if not isinstance(exc, Exception):
                raise
            raise _HandlerFailed(cmd.name, exc) from exc
        finally:
            # A wall clock may step back: a duration is never negative.
            duration = max(self._clock.now() - started_at, _ZERO)
            observe_step(current_event(), duration.total_seconds())
            leave_step(token)
        try:
            stored = self._as_json(output, what=f"step {cmd.name!r}")
        except StepOutputError as exc:
            raise _HandlerFailed(cmd.name, exc) from None
        return StepRecord(
            name=cmd.name, kind="run", output=stored, started_at=started_at, duration=duration
        )

    async def _run_concurrently(self, commands: list[RunStep], steps: list[StepRecord]) -> None:
        """Run handlers side by side. Finished ones are recorded even if another failed."""
        results: dict[str, StepRecord | _HandlerFailed] = {}

        async def one(cmd: RunStep) -> None:
            try:
                results[cmd.name] = await self._run(cmd)
            except _HandlerFailed as failure:
                results[cmd.name] = failure

        async with anyio.create_task_group() as group:
            for cmd in commands:
                group.start_soon(one, cmd)
        outcomes = [results[cmd.name] for cmd in commands]
        steps.extend(r for r in outcomes if isinstance(r, StepRecord))
        for r in outcomes:
            if isinstance(r, _HandlerFailed):
                raise r

    def _as_json(self, value: Any, *, what: str) -> Any:
        return _as_json(value, what=what, limit=self._registry.limits.step_output_bytes)

    # -- failure -----------------------------------------------------------------------

    def _failed(self, exc: BaseException, *, step: str | None = None) -> Failed:
        error = ErrorInfo(
            type=type(exc).__qualname__,
            message=_safely(str, exc),
            traceback=_safely(lambda e: "".join(traceback.format_exception(e)), exc),
            step=step,
        )
        retryable = not isinstance(exc, _PERMANENT) and self.attempt < self._max_attempts
        delay = self._retry_policy.delay(self.attempt, self._rng) if retryable else None
        return Failed(error=error, retry_after=delay)


def _runs_handler(yielded: object) -> bool:
    if isinstance(yielded, Parallel):
        return any(isinstance(cmd, RunStep) for cmd in yielded.commands)
    return isinstance(yielded, RunStep)


async def _timed(work: Awaitable[Any], limit: timedelta | None, *, what: str) -> Any:
    """Await ``work``, or raise ``StepTimeoutError`` when ``limit`` passes first."""
    if limit is None:
        return await work
    with anyio.move_on_after(limit.total_seconds()):
        return await work
    # Only our own deadline lands here: a TimeoutError the handler raises passes through.
    raise StepTimeoutError(
        f"{what} ran past its timeout of {describe_duration(limit)}; the attempt failed "
        "(it is retried like any failure)"
    )


async def _traced(cmd: RunStep) -> Any:
    """The handler's call, in a span of its own."""
    with tracing.step_span(cmd.name):
        return await _call(cmd)


async def _call(cmd: RunStep) -> Any:
    fn = cmd.fn
    # An async def, or an object whose __call__ is one.
    if inspect.iscoroutinefunction(fn) or inspect.iscoroutinefunction(type(fn).__call__):
        return await fn(*cmd.args)
    # A thread cannot be stopped: on a timeout or a worker's shutdown the attempt stops
    # waiting for it. It runs on to its end in the background, and its result is dropped.
    result = await anyio.to_thread.run_sync(partial(fn, *cmd.args), abandon_on_cancel=True)
    if inspect.isawaitable(result):
        result = await result
    return result


def _as_json(value: Any, *, what: str, limit: int) -> Any:
    """``value`` as it will come back from storage, so a first run and a replay see the same.

    Structs, dataclasses and datetimes become dicts and ISO strings; tuples become lists.
    """
    try:
        encoded = msgspec.json.encode(value)
    except (TypeError, msgspec.EncodeError) as exc:
        raise StepOutputError(
            f"{what} is a {type(value).__name__}, which cannot be stored as JSON ({exc}); "
            "return dicts, lists, strings, numbers, msgspec Structs or dataclasses"
        ) from None
    if len(encoded) > limit:
        raise StepOutputError(
            f"{what} is {describe(len(encoded))} of JSON, over the limit of {describe(limit)} "
            "(SizeLimits.step_output_bytes); store large values elsewhere and return a reference"
        )
    return msgspec.json.decode(encoded)


def _safely(describe_error: Callable[[BaseException], str], exc: BaseException) -> str:
    """User exceptions may break ``__str__``; the run's outcome must not break with them."""
    try:
        return describe_error(exc)
    except Exception as broken:
        return f"<{type(exc).__qualname__}: describing it raised {type(broken).__name__}>"
