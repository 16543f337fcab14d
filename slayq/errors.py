"""Every error slayq raises.

The tree::

    SlayqError
    ├── InputError (also ValueError)       bad input, named; nothing was changed
    │   ├── EventDataError                 event data does not fit the function's schema
    │   ├── UnknownEventError              no function runs, waits for or cancels on it
    │   ├── DurationError                  "5 parsecs", a naive datetime, ...
    │   ├── StepDefinitionError            empty or duplicate step name, undeclared wait/invoke
    │   ├── FunctionDefinitionError        bad ``@slayq.function`` arguments
    │   └── ConfigError                    a bad slay-config.json or setting
    ├── NondeterminismError                a replay met a different step than the memo recorded
    ├── NoRetryError                       raised by user code: fail the run for good, now
    ├── InvokeError                        an invoked function failed for good or was cancelled
    ├── StepOutputError                    a step's result cannot be stored as JSON
    ├── StepTimeoutError                   a step handler ran past its timeout (retried)
    ├── StoreError                         the store could not do what was asked
    │   ├── LeaseLostError                 a commit from a holder whose claim was taken over
    │   ├── RunNotFoundError
    │   ├── StoreInputError (also InputError)  the database refused a value (too long, ...)
    │   └── StoreUnavailableError          the database cannot be reached
    └── (in slayq.transport.errors) SignatureError, DeliveryError; WireError is an InputError
"""

from __future__ import annotations


class SlayqError(Exception):
    """Root of every error slayq raises."""


class InputError(SlayqError, ValueError):
    """Bad input: the message names what was wrong. Nothing was stored or changed."""


class EventDataError(InputError):
    """Event data that does not fit the schema of the function it is for."""


class UnknownEventError(InputError):
    """An event that no registered function runs on, waits for, cancels on or invokes."""


class DurationError(InputError):
    """A duration or point in time that cannot be understood."""


class StepDefinitionError(InputError):
    """A step command that cannot run: empty or duplicate name, undeclared event, bad shape."""


class FunctionDefinitionError(InputError):
    """Bad arguments to ``@slayq.function`` or a bad set of functions for one client."""


class ConfigError(InputError):
    """A configuration file or setting that cannot be used; the message shows a fix."""


class NondeterminismError(SlayqError):
    """The function yielded a different step than the memo recorded at that point.

    This happens when a function's code changed while runs of it were in flight, or when
    step names or order depend on something other than the event data and step results
    (the clock, randomness, a database read outside a step). The run fails for good.
    """


class NoRetryError(SlayqError):
    """Raise from a function or a step handler to fail the run at once, without retries."""


class InvokeError(SlayqError):
    """Raised at ``yield step.invoke(...)`` when the invoked run failed for good or was
    cancelled. The caller may catch it."""


class StepOutputError(SlayqError):
    """A step handler returned a value that cannot be stored as JSON."""


class StepTimeoutError(SlayqError):
    """A step handler ran longer than its timeout; the attempt fails and is retried."""


class StoreError(SlayqError):
    """The store failed to do what was asked."""


class LeaseLostError(StoreError):
    """A commit or lease extension from a holder whose claim expired and was taken over,
    or whose run was cancelled. Nothing of it was applied."""


class RunNotFoundError(StoreError, LookupError):
    """No run has that id."""


class StoreInputError(StoreError, InputError):
    """The database refused a value it was given (a string too long to index, a time out
    of range, ...). Sending the same input again fails again; nothing was applied."""


class StoreUnavailableError(StoreError):
    """The database could not be reached; the operation was not applied."""
