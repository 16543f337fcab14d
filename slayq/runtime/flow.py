"""Flow control, as users declare it on ``@slayq.function`` and as stores receive it.

Users write ``slayq.Concurrency(limit=2, key="customer_id")`` and the like; when the
function is defined, ``FlowSpec`` checks each against the schema (a ``key`` is a field
path into the event data, dotted for nested fields) and refuses combinations that make
no sense. When a run is created, ``FlowSpec.resolve`` evaluates every key once, on the
validated data, into a *bucket*: the function's event, the path and the value, so that
two functions never share one. Stores see only the resolved ``model.Flow``.
"""

from __future__ import annotations

from datetime import timedelta
from typing import TYPE_CHECKING, Any, Literal

import msgspec

from slayq.errors import DurationError, EventDataError, FunctionDefinitionError
from slayq.model import (
    Flow,
    FlowBatch,
    FlowOnce,
    FlowRate,
    FlowSingleton,
    FlowSlot,
    FlowWindow,
)
from slayq.runtime.durations import Duration, parse_duration
from slayq.runtime.limits import DEFAULT_LIMITS
from slayq.runtime.names import MAX_NAME_BYTES

if TYPE_CHECKING:
    from collections.abc import Sequence


class Concurrency(msgspec.Struct, frozen=True, kw_only=True):
    """At most ``limit`` runs with the same ``key`` hold a lease at once, cluster-wide."""

    limit: int
    key: str | None = None


class Throttle(msgspec.Struct, frozen=True, kw_only=True):
    """At most ``limit`` first starts per ``period`` per key (``burst`` more at once);
    runs over it wait their turn, none is dropped."""

    limit: int
    period: Duration
    burst: int = 0
    key: str | None = None


class RateLimit(msgspec.Struct, frozen=True, kw_only=True):
    """At most ``limit`` runs per ``period`` per key; an event over it starts no run."""

    limit: int
    period: Duration
    key: str | None = None


class Debounce(msgspec.Struct, frozen=True, kw_only=True):
    """A burst of events with the same key makes one run, with the last event's data,
    due ``period`` after the last event and never later than ``timeout`` after the first."""

    period: Duration
    timeout: Duration | None = None
    key: str | None = None


class Batch(msgspec.Struct, frozen=True, kw_only=True):
    """Events with the same key collected into one run of up to ``max_size`` events,
    started when full or ``timeout`` after the first; the function reads ``ctx.events``."""

    max_size: int
    timeout: Duration
    key: str | None = None


class Singleton(msgspec.Struct, frozen=True, kw_only=True):
    """At most one unfinished run per key: a new event is skipped (answered with the
    existing run's id) or cancels the existing run and starts its own."""

    key: str | None = None
    mode: Literal["skip", "cancel"] = "skip"


class Idempotency(msgspec.Struct, frozen=True, kw_only=True):
    """The same key within ``ttl`` answers the first run's id and starts nothing."""

    key: str | None
    ttl: Duration = "24h"


class FlowSpec:
    """A function's flow controls, checked against its schema when it is defined."""

    def __init__(
        self,
        *,
        where: str,
        schema: type[msgspec.Struct],
        has_cancel_on: bool,
        has_waits_on: bool,
        concurrency: Sequence[Concurrency] | Concurrency | None,
        throttle: Throttle | None,
        rate_limit: RateLimit | None,
        debounce: Debounce | None,
        batch: Batch | None,
        singleton: Singleton | None,
        idempotency: Idempotency | None,
    ) -> None:
        self._where = where
        self._schema = schema
        if isinstance(concurrency, Concurrency):
            concurrency = [concurrency]
        self.concurrency: list[tuple[Concurrency, list[str]]] = []
        for item in concurrency or ():
            self._expect(item, Concurrency, "concurrency")
            _positive(item.limit, f"{where}: Concurrency limit")
            self.concurrency.append((item, self._path(item.key, "Concurrency")))
        self.throttle = self._rate(throttle, Throttle, "throttle")
        self.rate_limit = self._rate(rate_limit, RateLimit, "rate_limit")
        if throttle is not None:
            if isinstance(throttle.burst, bool) or not isinstance(throttle.burst, int):
                raise FunctionDefinitionError(f"{where}: Throttle burst must be an int >= 0")
            if throttle.burst < 0:
                raise FunctionDefinitionError(
                    f"{where}: Throttle burst must be >= 0, got {throttle.burst}"
                )
        self.debounce: tuple[Debounce, list[str], timedelta, timedelta | None] | None = None
        if debounce is not None:
            self._expect(debounce, Debounce, "debounce")
            period = self._period(debounce.period, "Debounce period")
            timeout = (
                self._period(debounce.timeout, "Debounce timeout")
                if debounce.timeout is not None
                else None
            )
            if timeout is not None and timeout < period:
                raise FunctionDefinitionError(
                    f"{where}: Debounce timeout ({debounce.timeout!r}) is shorter than its "
                    f"period ({debounce.period!r}): every run would start at the timeout"
                )
            self.debounce = (debounce, self._path(debounce.key, "Debounce"), period, timeout)
        self.batch: tuple[Batch, list[str], timedelta] | None = None
        if batch is not None:
            self._expect(batch, Batch, "batch")
            _positive(batch.max_size, f"{where}: Batch max_size")
            timeout = self._period(batch.timeout, "Batch timeout")
            self.batch = (batch, self._path(batch.key, "Batch"), timeout)
            refused = [
                name
                for name, given in (
                    ("debounce", debounce),
                    ("singleton", singleton),
                    ("rate_limit", rate_limit),
                    ("cancel_on", has_cancel_on or None),
                    ("waits_on", has_waits_on or None),
                )
                if given is not None
            ]
            if refused:
                raise FunctionDefinitionError(
                    f"{where}: batch cannot be combined with {', '.join(refused)}: a batch "
                    "run stands for many events, so it has no one event's data to debounce, "
                    "keep single, rate-limit or match events against"
                )
        self.singleton: tuple[Singleton, list[str]] | None = None
        if singleton is not None:
            self._expect(singleton, Singleton, "singleton")
            if singleton.mode not in ("skip", "cancel"):
                raise FunctionDefinitionError(
                    f"{where}: Singleton mode must be 'skip' or 'cancel', got {singleton.mode!r}"
                )
            self.singleton = (singleton, self._path(singleton.key, "Singleton"))
            if debounce is not None:
                # The pending debounce run would count as the key's one active run, so
                # every later event would skip it (or cancel it) instead of joining it.
                raise FunctionDefinitionError(
                    f"{where}: singleton cannot be combined with debounce: debounce keeps "
                    "one pending run per key already, and a singleton would stop later "
                    "events from joining it; to keep runs of a key from overlapping, add "
                    "concurrency=slayq.Concurrency(limit=1, key=...)"
                )
        self.idempotency: tuple[Idempotency, list[str], timedelta] | None = None
        if idempotency is not None:
            self._expect(idempotency, Idempotency, "idempotency")
            ttl = self._period(idempotency.ttl, "Idempotency ttl")
            self.idempotency = (idempotency, self._path(idempotency.key, "Idempotency"), ttl)

    @property
    def is_batch(self) -> bool:
        return self.batch is not None

    @property
    def controls_nothing(self) -> bool:
        """Whether every run's flow resolves to None (no flow control at all)."""
        return not (
            self.concurrency
            or self.throttle
            or self.rate_limit
            or self.debounce
            or self.batch
            or self.singleton
            or self.idempotency
        )

    def resolve(
        self,
        event: str,
        data: dict[str, Any],
        *,
        batch_bytes: int = DEFAULT_LIMITS.event_data_bytes,
    ) -> Flow | None:
        """The buckets of a run with ``data`` (validated, as stored); None without any
        flow control, so plain runs carry nothing. A batch run's data is held to
        ``batch_bytes``, the client's limit on one event's data."""

        def bucket(path: list[str]) -> str:
            return _bucket(event, path, data)

        slots = [FlowSlot(bucket=bucket(p), limit=c.limit) for c, p in self.concurrency]
        throttle = rate_limit = None
        if self.throttle is not None:
            spec, path, interval = self.throttle
            assert isinstance(spec, Throttle)
            throttle = FlowRate(bucket=bucket(path), interval=interval, burst=spec.burst)
        if self.rate_limit is not None:
            spec, path, interval = self.rate_limit
            # limit at once, then one every interval: at most limit per period (GCRA)
            rate_limit = FlowRate(bucket=bucket(path), interval=interval, burst=spec.limit - 1)
        debounce = batch = singleton = once = None
        if self.debounce is not None:
            _, path, period, timeout = self.debounce
            debounce = FlowWindow(bucket=bucket(path), period=period, timeout=timeout)
        if self.batch is not None:
            spec_b, path, timeout = self.batch
            batch = FlowBatch(
                bucket=bucket(path),
                max_size=spec_b.max_size,
                timeout=timeout,
                max_bytes=batch_bytes,
            )
        if self.singleton is not None:
            spec_s, path = self.singleton
            singleton = FlowSingleton(bucket=bucket(path), mode=spec_s.mode)
        if self.idempotency is not None:
            _, path, ttl = self.idempotency
            once = FlowOnce(bucket=bucket(path), ttl=ttl)
        if not (slots or throttle or rate_limit or debounce or batch or singleton or once):
            return None
        return Flow(
            concurrency=slots,
            throttle=throttle,
            rate_limit=rate_limit,
            debounce=debounce,
            batch=batch,
            singleton=singleton,
            idempotency=once,
        )

    def _rate(
        self, given: Throttle | RateLimit | None, kind: type, label: str
    ) -> tuple[Throttle | RateLimit, list[str], timedelta] | None:
        if given is None:
            return None
        self._expect(given, kind, label)
        _positive(given.limit, f"{self._where}: {kind.__name__} limit")
        period = self._period(given.period, f"{kind.__name__} period")
        return given, self._path(given.key, kind.__name__), period / given.limit

    def _period(self, value: Duration, what: str) -> timedelta:
        try:
            period = parse_duration(value, what=f"{self._where}: {what}")
        except DurationError as exc:  # a definition error, whatever part of it was wrong
            raise FunctionDefinitionError(str(exc)) from None
        if period <= timedelta(0):
            raise FunctionDefinitionError(f"{self._where}: {what} must be positive, got {value!r}")
        return period

    def _expect(self, given: object, kind: type, label: str) -> None:
        if not isinstance(given, kind):
            raise FunctionDefinitionError(
                f"{self._where}: {label} takes slayq.{kind.__name__}(...), got {given!r}"
            )

    def _path(self, key: str | None, kind: str) -> list[str]:
        """``key`` as the encoded field names to walk, checked against the schema."""
        if key is None:
            return []
        if not isinstance(key, str) or not key:
            raise FunctionDefinitionError(
                f"{self._where}: {kind} key must be a field path such as 'customer_id' "
                f"(or None for one bucket), got {key!r}"
            )
        path: list[str] = []
        struct: Any = self._schema
        walked: list[str] = []
        for part in key.split("."):
            if not (isinstance(struct, type) and issubclass(struct, msgspec.Struct)):
                raise FunctionDefinitionError(
                    f"{self._where}: {kind} key {key!r}: {'.'.join(walked)} is not a "
                    "struct, so it has no field {part!r}"
                )
            fields = {f.name: f for f in msgspec.structs.fields(struct)}
            found = fields.get(part)
            if found is None:
                raise FunctionDefinitionError(
                    f"{self._where}: {kind} key {key!r}: {struct.__name__} has no field "
                    f"{part!r} (fields: {sorted(fields)})"
                )
            path.append(found.encode_name)
            walked.append(part)
            struct = _struct_in(found.type)
        return path


def _struct_in(annotation: Any) -> Any:
    """The Struct class in a field's type (``Address`` or ``Address | None``), if any."""
    if isinstance(annotation, type) and issubclass(annotation, msgspec.Struct):
        return annotation
    for arg in getattr(annotation, "__args__", ()):
        if isinstance(arg, type) and issubclass(arg, msgspec.Struct):
            return arg
    return annotation


def _bucket(event: str, path: list[str], data: dict[str, Any]) -> str:
    """``event`` then ``path=value`` (the value as JSON), or the event alone for no key."""
    if not path:
        return event
    value: Any = data
    for part in path:
        value = value.get(part) if isinstance(value, dict) else None
    shown = msgspec.json.encode(value).decode()
    if len(shown.encode()) > MAX_NAME_BYTES:
        raise EventDataError(
            f"event {event!r}: data.{'.'.join(path)} is {len(shown.encode())} bytes of JSON, "
            f"over {MAX_NAME_BYTES} bytes: it is a flow control key, and so indexed; "
            "key on a shorter id"
        )
    return f"{event} {'.'.join(path)}={shown}"


def bucket_label(event: str, bucket: str) -> str:
    """A bucket as people read it: ``customer_id=42``, or ``(all runs)`` for no key."""
    label = bucket[len(event) + 1 :] if bucket.startswith(event + " ") else ""
    return label or "(all runs)"


def _positive(value: object, what: str) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise FunctionDefinitionError(f"{what} must be an int >= 1, got {value!r}")
