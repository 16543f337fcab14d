"""The arithmetic of the send-time flow controls, the same in every store.

Both stores decide in Python, on the store's clock (the PostgreSQL store reads it from
the database when no test clock is given), so they agree to the microsecond.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from slayq.errors import StoreInputError

if TYPE_CHECKING:
    from datetime import datetime, timedelta

    from slayq.model import FlowRate


def gcra(tat: datetime | None, now: datetime, rate: FlowRate) -> datetime | None:
    """The generic cell rate algorithm: an event at ``now`` is allowed when the bucket's
    theoretical arrival time ``tat`` (None: the bucket is unused) is at most ``burst``
    intervals ahead of ``now``. Returns the bucket's next ``tat`` if it is allowed, None
    if it is not (the bucket is then left as it was).

    So ``burst + 1`` events are allowed at once, then one every ``interval``: with
    ``burst = limit - 1`` and ``interval = period / limit``, at most ``limit`` per period.
    """
    start = now if tat is None or tat < now else tat
    if start - now > rate.interval * rate.burst:
        return None
    return later(start, rate.interval, what=f"rate_limit bucket {rate.bucket!r}")


def later(at: datetime, by: timedelta, *, what: str) -> datetime:
    """``at + by``, or a ``StoreInputError`` naming ``what`` past the last time stored."""
    try:
        return at + by
    except OverflowError:
        raise StoreInputError(
            f"{what}: {at} + {by} is past the latest time a store holds"
        ) from None
