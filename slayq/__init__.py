"""slayq: durable workflow functions and background jobs on PostgreSQL."""

from slayq import step
from slayq.client import Client
from slayq.errors import (
    ConfigError,
    DurationError,
    EventDataError,
    FunctionDefinitionError,
    InputError,
    InvokeError,
    LeaseLostError,
    NondeterminismError,
    NoRetryError,
    RunNotFoundError,
    SlayqError,
    StepDefinitionError,
    StepOutputError,
    StepTimeoutError,
    StoreError,
    StoreInputError,
    StoreUnavailableError,
    UnknownEventError,
)
from slayq.model import AttemptInfo, ErrorInfo, RunId, RunInfo, StepRecord
from slayq.runtime.commands import finish
from slayq.runtime.flow import (
    Batch,
    Concurrency,
    Debounce,
    Idempotency,
    RateLimit,
    Singleton,
    Throttle,
)
from slayq.runtime.functions import Context, EmptyEvent, Function, Match, Workflow, function
from slayq.runtime.limits import SizeLimits
from slayq.telemetry.logs import log_context

__all__ = [
    "AttemptInfo",
    "Batch",
    "Client",
    "Concurrency",
    "ConfigError",
    "Context",
    "Debounce",
    "DurationError",
    "EmptyEvent",
    "ErrorInfo",
    "EventDataError",
    "Function",
    "FunctionDefinitionError",
    "Idempotency",
    "InputError",
    "InvokeError",
    "LeaseLostError",
    "Match",
    "NoRetryError",
    "NondeterminismError",
    "RateLimit",
    "RunId",
    "RunInfo",
    "RunNotFoundError",
    "Singleton",
    "SizeLimits",
    "SlayqError",
    "StepDefinitionError",
    "StepOutputError",
    "StepRecord",
    "StepTimeoutError",
    "StoreError",
    "StoreInputError",
    "StoreUnavailableError",
    "Throttle",
    "UnknownEventError",
    "Workflow",
    "finish",
    "function",
    "log_context",
    "step",
]
