"""The functions one client knows, and how an event becomes work for a store.

Stores know no functions: the registry resolves each event into an ``OutgoingEvent``
(the run it starts, with queue, priority, attempts and cancel rules filled in), so the
Postgres store, the memory store and the HTTP ingest all receive the same plain data.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from typing import TYPE_CHECKING, Any

import msgspec

from slayq.errors import EventDataError, FunctionDefinitionError, UnknownEventError
from slayq.model import CancelRule, NewRun, OutgoingEvent, ParentLink, RunId, Schedule
from slayq.runtime.functions import Function
from slayq.runtime.ids import new_run_id
from slayq.runtime.limits import DEFAULT_LIMITS, SizeLimits, describe
from slayq.runtime.names import MAX_NAME_BYTES, name_problem, nul_in
from slayq.telemetry.tracing import inject

if TYPE_CHECKING:
    from datetime import datetime, timedelta


class Registry:
    def __init__(
        self,
        functions: Iterable[Function],
        *,
        limits: SizeLimits = DEFAULT_LIMITS,
        endpoint: str | None = None,
        new_id: Callable[[], RunId] = new_run_id,
    ) -> None:
        self.limits = limits
        self.endpoint = endpoint
        self.functions: dict[str, Function] = {}
        for fn in functions:
            if not isinstance(fn, Function):
                raise FunctionDefinitionError(
                    f"{fn!r} is not a slayq function: decorate it with @slayq.function(...)"
                )
            other = self.functions.get(fn.event)
            if other is not None and other is not fn:
                raise FunctionDefinitionError(
                    f"event {fn.event!r} is claimed by both {other.name} and {fn.name}: "
                    "event names are unique per client"
                )
            self.functions[fn.event] = fn
        for fn in self.functions.values():
            for target in fn.invokes:
                if target not in self.functions:
                    raise FunctionDefinitionError(
                        f"{fn.name} invokes {target!r}, but no function of this client "
                        "runs on that event"
                    )
        self.waited_events = {m.event for fn in self.functions.values() for m in fn.waits_on}
        self.cancel_events = {m.event for fn in self.functions.values() for m in fn.cancel_on}
        self._new_id = new_id
        # Per function, what each of its sends needs that its definition already decides.
        self._plans = {event: _Plan(fn) for event, fn in self.functions.items()}
        for event, plan in self._plans.items():
            plan.logged = event in self.waited_events

    def get(self, event: str) -> Function:
        fn = self.functions.get(event)
        if fn is None:
            raise UnknownEventError(
                f"no function runs on event {event!r} (known: {sorted(self.functions)})"
            )
        return fn

    def outgoing(
        self,
        event: str,
        data: object,
        *,
        key: str | None = None,
        delay: timedelta | None = None,
        run_at: datetime | None = None,
        traced: bool = True,
    ) -> OutgoingEvent:
        """Validate an event and resolve what it does. Raises before anything is stored.
        ``traced=False``: the caller knows no spans are recorded (see ``new_run``)."""
        plan = self._plans.get(event) if isinstance(event, str) else None
        if plan is not None:  # a function's event: its name was checked when defined
            payload = self._payload(plan, data)
            run = self._new_run(
                plan, payload, key=key, delay=delay, run_at=run_at, parent=None, traced=traced
            )
            return OutgoingEvent(name=event, data=payload, run=run, logged=plan.logged)
        if not isinstance(event, str) or not event:
            raise UnknownEventError(f"an event name must be a non-empty string, got {event!r}")
        problem = name_problem(event)
        if problem is not None:
            raise UnknownEventError(f"event name {problem}")
        if event in self.waited_events or event in self.cancel_events:
            payload = self._within_limit(event, _plain_data(event, data))
            self._check_matched_fields(event, payload)
        else:
            raise UnknownEventError(
                f"event {event!r} is not handled: no function runs on it, waits for it "
                f"(waits_on) or cancels on it (cancel_on). Known events: "
                f"{sorted(self.functions.keys() | self.waited_events | self.cancel_events)}"
            )
        return OutgoingEvent(name=event, data=payload, run=None, logged=event in self.waited_events)

    def payload(self, fn: Function, data: object) -> dict[str, Any]:
        """``data`` validated against ``fn``'s schema, as stored builtins, within the limit."""
        return self._payload(self._plan(fn), data)

    def _payload(self, plan: _Plan, data: object) -> dict[str, Any]:
        fn = plan.fn
        payload = self._within_limit(fn.event, fn.validate(data))
        # A run's values of its matched fields are indexed with its waits and cancel rules.
        for key, event in plan.matched:
            size = len(msgspec.json.encode(payload.get(key)))
            if size > MAX_NAME_BYTES:
                raise EventDataError(
                    f"event {fn.event!r}: data.{key} is {size} bytes of JSON, over "
                    f"{MAX_NAME_BYTES} bytes: it is matched on ({event!r}) and so "
                    "indexed; match on a shorter id"
                )
        return payload

    def _check_matched_fields(self, event: str, payload: dict[str, Any]) -> None:
        """Data of an event that only answers waits or cancels runs must be able to match.

        It needs at least one field that some function matches this event on, and each
        such field must fit that field's type in the matching function's schema: an
        event that can never match is refused rather than logged and ignored.
        """
        fields: dict[str, list[tuple[Function, Any]]] = {}
        for fn in self.functions.values():
            types = {f.name: f.type for f in msgspec.structs.fields(fn.schema)}
            for match in (*fn.waits_on, *fn.cancel_on):
                if match.event == event:
                    key = fn.data_keys.get(match.field, match.field)
                    fields.setdefault(key, []).append((fn, types[match.field]))
        present = [key for key in fields if key in payload]
        if not present:
            raise EventDataError(
                f"event {event!r}: data has none of the fields that functions match it on "
                f"({', '.join(sorted(fields))}), so it could never answer a wait or cancel a "
                f"run; got fields {sorted(payload)}"
            )
        for key in present:
            for fn, annotation in fields[key]:
                try:
                    msgspec.convert(payload[key], type=annotation)
                except (msgspec.ValidationError, TypeError) as exc:
                    raise EventDataError(
                        f"event {event!r}: data.{key} does not fit {fn.name}, which matches "
                        f"on it ({fn.schema.__name__}.{key}): {exc}"
                    ) from None

    def _within_limit(self, event: str, payload: dict[str, Any]) -> dict[str, Any]:
        encoded = msgspec.json.encode(payload)
        # JSON writes NUL as \u0000: only data whose encoding has that text (rare) is
        # walked to find and name it, so sending pays one scan in C, not a Python walk.
        nul = nul_in(payload, "data") if b"\\u0000" in encoded else None
        if nul is not None:
            raise EventDataError(
                f"event {event!r}: {nul}; event data is matched as jsonb, which cannot hold it"
            )
        size = len(encoded)
        if size > self.limits.event_data_bytes:
            raise EventDataError(
                f"event {event!r}: data is {describe(size)} of JSON, over the limit of "
                f"{describe(self.limits.event_data_bytes)} (SizeLimits.event_data_bytes); "
                "store large payloads elsewhere and send a reference"
            )
        return payload

    def new_run(
        self,
        fn: Function,
        payload: dict[str, Any],
        *,
        key: str | None = None,
        delay: timedelta | None = None,
        run_at: datetime | None = None,
        parent: ParentLink | None = None,
        traced: bool = True,
    ) -> NewRun:
        return self._new_run(
            self._plan(fn),
            payload,
            key=key,
            delay=delay,
            run_at=run_at,
            parent=parent,
            traced=traced,
        )

    def _new_run(
        self,
        plan: _Plan,
        payload: dict[str, Any],
        *,
        key: str | None,
        delay: timedelta | None,
        run_at: datetime | None,
        parent: ParentLink | None,
        traced: bool,
    ) -> NewRun:
        fn = plan.fn
        return NewRun(
            id=self._new_id(),
            event=fn.event,
            data=payload,
            queue=fn.queue,
            priority=fn.priority,
            max_attempts=fn.max_attempts,
            cancel_on=[
                CancelRule(event=event, field=field, value=payload.get(field))
                for event, field in plan.cancel_on
            ]
            if plan.cancel_on
            else [],
            key=key,
            delay=delay,
            run_at=run_at,
            parent=parent,
            endpoint=self.endpoint,
            may_wait=plan.may_wait,
            trace=inject(fn.event) if traced else None,
            flow=None
            if plan.no_flow
            else fn.flow.resolve(fn.event, payload, batch_bytes=self.limits.event_data_bytes),
        )

    def _plan(self, fn: Function) -> _Plan:
        plan = self._plans.get(fn.event)
        return plan if plan is not None and plan.fn is fn else _Plan(fn)

    def schedules(self) -> list[Schedule]:
        # A tick starts its own trace, not one of the code that registered the schedule.
        return [
            Schedule(
                event=fn.event,
                cron=fn.cron.text,
                template=self.new_run(fn, fn.validate({}), traced=False),
            )
            for fn in self.functions.values()
            if fn.cron is not None
        ]


def _plain_data(event: str, data: object) -> dict[str, Any]:
    """Data of an event that no function decodes: any JSON-shaped mapping."""
    builtins = msgspec.to_builtins(data) if not isinstance(data, Mapping) else dict(data)
    if not isinstance(builtins, dict):
        raise EventDataError(f"event {event!r}: data must be a mapping, got {type(data).__name__}")
    try:
        return msgspec.json.decode(msgspec.json.encode(builtins))  # type: ignore[no-any-return]
    except (TypeError, msgspec.EncodeError) as exc:
        raise EventDataError(f"event {event!r}: data is not JSON-shaped: {exc}") from None


class _Plan:
    """What a function's definition decides about each of its runs, worked out once."""

    __slots__ = ("cancel_on", "fn", "logged", "matched", "may_wait", "no_flow")

    def __init__(self, fn: Function) -> None:
        self.fn = fn
        # (event, key in the stored data) of each cancel rule
        self.cancel_on = [(m.event, fn.data_keys.get(m.field, m.field)) for m in fn.cancel_on]
        # (key in the stored data, event) of each matched field: waits and cancel rules
        self.matched = [
            (fn.data_keys.get(m.field, m.field), m.event) for m in (*fn.waits_on, *fn.cancel_on)
        ]
        self.may_wait = bool(fn.waits_on)
        self.no_flow = fn.flow.controls_nothing
        self.logged = False  # set by the registry: whether some function waits on it
