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
from slayq.runtime.functions import Context, EmptyEvent, Function, Match, Workflow, function
from slayq.runtime.limits import SizeLimits
from slayq.telemetry.logs import log_context

__all__ = [
    "AttemptInfo",
    "Client",
    "ConfigError",
    "Context",
    "DurationError",
    "EmptyEvent",
    "ErrorInfo",
    "EventDataError",
    "Function",
    "FunctionDefinitionError",
    "InputError",
    "InvokeError",
    "LeaseLostError",
    "Match",
    "NoRetryError",
    "NondeterminismError",
    "RunId",
    "RunInfo",
    "RunNotFoundError",
    "SizeLimits",
    "SlayqError",
    "StepDefinitionError",
    "StepOutputError",
    "StepRecord",
    "StepTimeoutError",
    "StoreError",
    "StoreInputError",
    "StoreUnavailableError",
    "UnknownEventError",
    "Workflow",
    "finish",
    "function",
    "log_context",
    "step",
]
