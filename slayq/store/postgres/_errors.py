"""The one place where psycopg's errors become slayq's, the original kept as ``__cause__``."""

from __future__ import annotations

from contextlib import contextmanager
from typing import TYPE_CHECKING

import psycopg
from psycopg import errors as pg_errors

from slayq.errors import StoreError, StoreInputError, StoreUnavailableError

if TYPE_CHECKING:
    from collections.abc import Iterator

# SQLSTATE classes of refusals caused by the values sent: data exceptions (a time out of
# range, a NUL in jsonb, a value too long) and program limits (a key too long to index).
# Class 54 errors are OperationalErrors to psycopg, like a server going away.
_INPUT_CLASSES = frozenset({"22", "54"})
# Check violations: every check of the schema guards a value (a time Python can read back).
_INPUT_STATES = frozenset({"23514"})
# Serialization failure and deadlock. psycopg makes neither a TransactionRollback (only
# 40000 itself is), so they are told by SQLSTATE too.
_CONFLICTS = frozenset({"40001", "40P01"})
# An unknown table or function (the schema not on the search_path) and psycopg's prepared
# statements missing or already there: session state lost, or met on a server connection
# someone else used, as behind a transaction pooler that slayq was not told about.
_SESSION_LOST = frozenset({"42P01", "42883", "26000", "42P05"})
_POOLER_HINT = (
    "; behind a pooler in transaction mode (PgBouncer, Supabase's pooler on port 6543), "
    "add ?pooler=transaction to the database URL"
)


@contextmanager
def translated(action: str) -> Iterator[None]:
    """Raise ``StoreError`` subclasses for psycopg errors inside the block.

    Connection trouble (a server that is down or restarting, a pool that hands out no
    connection in time) becomes ``StoreUnavailableError``: the operation was not applied
    and may be retried. A value the database refuses (see ``input_caused``) becomes
    ``StoreInputError``: sending it again fails again. Anything else the database
    refused becomes ``StoreError``. In every case the transaction was rolled back whole.
    """
    try:
        yield
    except psycopg.Error as exc:  # psycopg_pool.PoolTimeout is an OperationalError
        raise _translate(action, exc) from exc


def _translate(action: str, exc: psycopg.Error) -> StoreError:
    if input_caused(exc):
        # Not str(exc): its context lines can quote a whole document of the input.
        reason = exc.diag.message_primary or str(exc)
        if exc.sqlstate in _INPUT_STATES:
            # The detail would quote the whole row; every check bounds a time.
            reason = f"{reason}: a time must be before the year 10000"
        elif exc.diag.message_detail:
            reason = f"{reason} ({exc.diag.message_detail.rstrip('.')})"
        return StoreInputError(f"{action}: the database refused a value: {reason}")
    if isinstance(exc, pg_errors.UniqueViolation):
        detail = exc.diag.message_detail or exc.diag.message_primary or str(exc)
        return StoreError(f"{action}: refused, it would duplicate existing data: {detail}")
    if is_conflict(exc):
        # Deadlocks and serialization failures are OperationalErrors to psycopg, but the
        # server is fine: they reach here only after the retries ran out.
        return StoreError(f"{action}: gave up after repeated conflicts: {exc}")
    if isinstance(exc, psycopg.OperationalError | psycopg.InterfaceError):
        return StoreUnavailableError(f"{action}: the database cannot be reached: {exc}")
    hint = _POOLER_HINT if exc.sqlstate in _SESSION_LOST else ""
    return StoreError(f"{action}: the database refused: {exc}{hint}")


def input_caused(exc: psycopg.Error) -> bool:
    """Whether the error is the input's fault, by its SQLSTATE class; an error without one
    is psycopg's own refusal to send a value (a NUL character in a text parameter)."""
    if exc.sqlstate is None:
        return isinstance(exc, psycopg.DataError)
    return exc.sqlstate[:2] in _INPUT_CLASSES or exc.sqlstate in _INPUT_STATES


def is_conflict(exc: BaseException) -> bool:
    """A deadlock or serialization failure: the transaction was rolled back whole, so it
    can simply run again."""
    return isinstance(exc, psycopg.Error) and exc.sqlstate in _CONFLICTS
