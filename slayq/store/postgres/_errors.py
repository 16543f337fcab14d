"""The one place where psycopg's errors become slayq's, the original kept as ``__cause__``."""

from __future__ import annotations

from contextlib import contextmanager
from typing import TYPE_CHECKING

import psycopg
import psycopg_pool
from psycopg import errors as pg_errors

from slayq.errors import StoreError, StoreUnavailableError

if TYPE_CHECKING:
    from collections.abc import Iterator


@contextmanager
def translated(action: str) -> Iterator[None]:
    """Raise ``StoreError`` subclasses for psycopg errors inside the block.

    Connection trouble (a server that is down or restarting, a pool that hands out no
    connection in time) becomes ``StoreUnavailableError``: the operation was not applied
    and may be retried. Anything else the database refused becomes ``StoreError``.
    """
    try:
        yield
    except pg_errors.UniqueViolation as exc:
        detail = exc.diag.message_detail or exc.diag.message_primary or str(exc)
        raise StoreError(f"{action}: refused, it would duplicate existing data: {detail}") from exc
    except pg_errors.TransactionRollback as exc:
        # Deadlocks and serialization failures subclass OperationalError, but the server
        # is fine: they reach here only after the retries ran out.
        raise StoreError(f"{action}: gave up after repeated conflicts: {exc}") from exc
    except (psycopg.OperationalError, psycopg.InterfaceError, psycopg_pool.PoolTimeout) as exc:
        raise StoreUnavailableError(f"{action}: the database cannot be reached: {exc}") from exc
    except psycopg.Error as exc:
        raise StoreError(f"{action}: the database refused: {exc}") from exc


def is_conflict(exc: BaseException) -> bool:
    """A deadlock or serialization failure: the transaction was rolled back whole, so it
    can simply run again."""
    return isinstance(exc, pg_errors.TransactionRollback)
