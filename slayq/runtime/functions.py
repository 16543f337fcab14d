"""What users write: ``@slayq.function``, its ``Context``, ``Match`` and ``EmptyEvent``."""

from __future__ import annotations

import inspect
from collections.abc import AsyncGenerator, AsyncIterator, Awaitable, Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any, Generic, TypeVar

import msgspec

from slayq.errors import EventDataError, FunctionDefinitionError
from slayq.runtime.cron import CronSpec
from slayq.runtime.durations import Duration, parse_timeout
from slayq.runtime.flow import (
    Batch,
    Concurrency,
    Debounce,
    FlowSpec,
    Idempotency,
    RateLimit,
    Singleton,
    Throttle,
)
from slayq.runtime.names import name_problem

if TYPE_CHECKING:
    from datetime import timedelta

    from slayq.model import RunId


class EmptyEvent(msgspec.Struct):
    """The schema of functions that take no data (cron functions, for instance)."""


class Match(msgspec.Struct, frozen=True):
    """Pairs an event with a field of the data: matching events carry the run's value of it."""

    event: str
    field: str


T = TypeVar("T")


class Context(Generic[T]):
    """What a function run gets: its event, decoded data, run id and attempt number.

    A function with ``batch=`` gets the events of its batch as ``events``, in the order
    they were sent (``data`` is the first of them); any other function gets ``[data]``.

    ``attempt`` is 1 on the first run of the function and grows by one with every retry.
    ``retry`` is the same number under Slay Q's name, so ported code such as
    ``if ctx.retry == 1: raise ...`` fails on the first run only, as it did there.
    """

    __slots__ = ("attempt", "data", "event", "events", "max_attempts", "run_id")

    def __init__(
        self,
        *,
        event: str,
        data: T,
        run_id: RunId,
        attempt: int,
        max_attempts: int,
        events: list[T] | None = None,
    ):
        self.event = event
        self.data = data
        self.events: list[T] = [data] if events is None else events
        self.run_id = run_id
        self.attempt = attempt
        self.max_attempts = max_attempts

    @property
    def retry(self) -> int:
        return self.attempt

    def __repr__(self) -> str:
        return f"Context(event={self.event!r}, run_id={self.run_id!r}, attempt={self.attempt})"


Workflow = AsyncGenerator[Any, Any]
"""The return annotation of a workflow function: ``async def f(ctx) -> slayq.Workflow``.

(``AsyncIterator`` would type every ``yield`` expression as None.)"""

Handler = Callable[[Context[Any]], AsyncIterator[Any] | Awaitable[Any]]


class Function:
    """A workflow function registered for an event. Made by ``@slayq.function``."""

    def __init__(
        self,
        handler: Handler,
        *,
        event: str,
        schema: type[msgspec.Struct],
        queue: str,
        retries: int,
        priority: int,
        cron: str | None,
        cancel_on: Sequence[Match],
        waits_on: Sequence[Match],
        invokes: Sequence[str],
        step_timeout: Duration | None = None,
        concurrency: Sequence[Concurrency] | Concurrency | None = None,
        throttle: Throttle | None = None,
        rate_limit: RateLimit | None = None,
        debounce: Debounce | None = None,
        batch: Batch | None = None,
        singleton: Singleton | None = None,
        idempotency: Idempotency | None = None,
    ) -> None:
        where = f"@slayq.function(event={event!r})"
        if not isinstance(event, str) or not event.strip():
            raise FunctionDefinitionError(f"{where}: event must be a non-empty string")
        where = f"@slayq.function(event={event[:60]!r})"
        if not (isinstance(schema, type) and issubclass(schema, msgspec.Struct)):
            raise FunctionDefinitionError(
                f"{where}: schema must be a msgspec.Struct class (slayq.EmptyEvent for none), "
                f"got {schema!r}"
            )
        if not isinstance(queue, str) or not queue.strip():
            raise FunctionDefinitionError(f"{where}: queue must be a non-empty string")
        for label, name in (("event", event), ("queue", queue)):
            problem = name_problem(name)
            if problem is not None:
                raise FunctionDefinitionError(f"{where}: {label} {problem}")
        if isinstance(retries, bool) or not isinstance(retries, int) or retries < 0:
            raise FunctionDefinitionError(f"{where}: retries must be an int >= 0, got {retries!r}")
        if isinstance(priority, bool) or not isinstance(priority, int):
            raise FunctionDefinitionError(f"{where}: priority must be an int, got {priority!r}")
        if not (inspect.isasyncgenfunction(handler) or inspect.iscoroutinefunction(handler)):
            raise FunctionDefinitionError(
                f"{where}: {getattr(handler, '__name__', handler)!r} must be an async generator "
                "function (async def with yield) or an async def function"
            )
        field_names = {f.name for f in msgspec.structs.fields(schema)}
        for label, matches in (("cancel_on", cancel_on), ("waits_on", waits_on)):
            for match in matches:
                if not isinstance(match, Match):
                    raise FunctionDefinitionError(
                        f"{where}: {label} takes slayq.Match(event, field) items, got {match!r}"
                    )
                if match.field not in field_names:
                    raise FunctionDefinitionError(
                        f"{where}: {label} matches on field {match.field!r}, which "
                        f"{schema.__name__} does not have (fields: {sorted(field_names)})"
                    )
                if not isinstance(match.event, str) or not match.event:
                    raise FunctionDefinitionError(
                        f"{where}: {label} event must be a non-empty string, got {match.event!r}"
                    )
                problem = name_problem(match.event)
                if problem is not None:
                    raise FunctionDefinitionError(f"{where}: {label} event {problem}")
        self.cron = CronSpec(cron) if cron is not None else None
        if self.cron is not None and any(f.required for f in msgspec.structs.fields(schema)):
            raise FunctionDefinitionError(
                f"{where}: cron functions get no data, so their schema must have no required "
                f"fields (use slayq.EmptyEvent), but {schema.__name__} has some"
            )
        self.flow = FlowSpec(
            where=where,
            schema=schema,
            has_cancel_on=bool(cancel_on),
            has_waits_on=bool(waits_on),
            concurrency=concurrency,
            throttle=throttle,
            rate_limit=rate_limit,
            debounce=debounce,
            batch=batch,
            singleton=singleton,
            idempotency=idempotency,
        )
        if self.flow.is_batch and self.cron is not None:
            raise FunctionDefinitionError(
                f"{where}: batch cannot be combined with cron: a tick is one run of no events"
            )
        self.handler = handler
        self.name: str = getattr(handler, "__qualname__", event)
        self.event = event
        self.schema = schema
        self.queue = queue
        self.retries = retries
        self.priority = priority
        # Stored data uses a Struct's encoded names (``rename=``); match on those.
        self.data_keys = {f.name: f.encode_name for f in msgspec.structs.fields(schema)}
        self.cancel_on = list(cancel_on)
        self.waits_on = list(waits_on)
        self.invokes = list(invokes)
        self.is_workflow = inspect.isasyncgenfunction(handler)
        self.step_timeout: timedelta | None = parse_timeout(
            step_timeout, what=f"{where}: step_timeout"
        )

    @property
    def max_attempts(self) -> int:
        return self.retries + 1

    def validate(self, data: object) -> dict[str, Any]:
        """Check ``data`` against the schema; return it as JSON-shaped builtins.

        Defaults are filled in, so what is stored is what the function will see.
        """
        decoded = self.decode(data)
        builtins = msgspec.to_builtins(decoded)
        assert isinstance(builtins, dict)
        return builtins

    def decode(self, data: object) -> msgspec.Struct:
        if isinstance(data, self.schema):
            return data
        if not isinstance(data, dict | Mapping):  # a dict is asked about first: cheaper
            raise EventDataError(
                f"event {self.event!r}: data must be a mapping or a {self.schema.__name__}, "
                f"got {type(data).__name__}"
            )
        try:
            return msgspec.convert(msgspec.to_builtins(data), type=self.schema)
        except (msgspec.ValidationError, TypeError) as exc:
            raise EventDataError(
                f"event {self.event!r}: data does not match {self.schema.__name__}: {exc}"
            ) from None

    def __repr__(self) -> str:
        return f"<slayq.Function {self.name} event={self.event!r} queue={self.queue!r}>"


def function(
    *,
    event: str,
    schema: type[msgspec.Struct] = EmptyEvent,
    queue: str = "general",
    retries: int = 25,
    priority: int = 0,
    cron: str | None = None,
    cancel_on: Sequence[Match] = (),
    waits_on: Sequence[Match] = (),
    invokes: Sequence[str] = (),
    step_timeout: Duration | None = None,
    concurrency: Sequence[Concurrency] | Concurrency | None = None,
    throttle: Throttle | None = None,
    rate_limit: RateLimit | None = None,
    debounce: Debounce | None = None,
    batch: Batch | None = None,
    singleton: Singleton | None = None,
    idempotency: Idempotency | None = None,
) -> Callable[[Handler], Function]:
    """Declare a workflow function that runs when ``event`` is sent.

    Lower ``priority`` runs first. ``retries`` is how many times a failed run is tried
    again (so it runs at most ``retries + 1`` times). ``step_timeout`` bounds each
    ``step.run`` handler (and the whole body of a function without steps); the default
    ``None`` sets no limit. A step over it fails the attempt with ``StepTimeoutError``.

    ``concurrency``, ``throttle``, ``rate_limit``, ``debounce``, ``batch``, ``singleton``
    and ``idempotency`` are flow controls (docs/flow-control.md); each ``key`` is a field
    path into the event data, checked against ``schema`` here.
    """
    # Checked here, so a bad timeout is raised at the decorator line.
    parse_timeout(step_timeout, what=f"@slayq.function(event={event!r}): step_timeout")

    def register(handler: Handler) -> Function:
        return Function(
            handler,
            event=event,
            schema=schema,
            queue=queue,
            retries=retries,
            priority=priority,
            cron=cron,
            cancel_on=cancel_on,
            waits_on=waits_on,
            invokes=invokes,
            step_timeout=step_timeout,
            concurrency=concurrency,
            throttle=throttle,
            rate_limit=rate_limit,
            debounce=debounce,
            batch=batch,
            singleton=singleton,
            idempotency=idempotency,
        )

    return register
