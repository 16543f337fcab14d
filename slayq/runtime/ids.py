"""Run ids: UUIDv7-shaped, so ids sort by creation time and index pages stay hot.

An id is 48 bits of Unix milliseconds (the clock of the process that made it), the
version and variant bits, and 74 bits that are random for the first id of a millisecond
and count up by a random step after it (RFC 9562's monotonic random method): the ids one
process makes sort in the order it made them, even within a millisecond, and ``list_runs``
lists runs newest first by id alone. Ids of different processes sort by their clocks.
"""

from __future__ import annotations

import os
import threading
import time
import uuid
from datetime import UTC, datetime, timedelta

from slayq.model import RunId

_MS_MASK = (1 << 48) - 1
_COUNTER_BITS = 74
_STEP_BITS = 32  # a random step of up to 2**32 leaves room for 2**42 ids a millisecond

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_ONE_MS = timedelta(milliseconds=1)

_lock = threading.Lock()
_last = (-1, 0)  # (millisecond, counter) of the last id this process made


def new_run_id() -> RunId:
    global _last
    millis = time.time_ns() // 1_000_000 & _MS_MASK
    with _lock:
        last_ms, last_counter = _last
        if millis > last_ms:
            counter = int.from_bytes(os.urandom(10), "big") >> (80 - _COUNTER_BITS)
        else:  # the same millisecond, or the clock stepped back: count on from the last id
            millis = last_ms
            counter = last_counter + 1 + (int.from_bytes(os.urandom(4), "big") >> (32 - _STEP_BITS))
            if counter >> _COUNTER_BITS:  # never in practice: borrow the next millisecond
                millis, counter = millis + 1, int.from_bytes(os.urandom(8), "big") >> 2
        _last = (millis, counter)
    return _compose(millis, counter)


def first_id_at(at: datetime) -> RunId:
    """The smallest run id of the millisecond ``at`` falls in (clamped to the 48 bits of
    milliseconds an id has): every id made at that millisecond or later sorts at or after
    it, every id made before it sorts before it."""
    millis = (at - _EPOCH) // _ONE_MS
    return _compose(min(max(millis, 0), _MS_MASK), 0)


def _compose(millis: int, counter: int) -> RunId:
    value = millis << 80 | 0x7 << 76 | (counter >> 62) << 64 | 0x2 << 62 | counter & ((1 << 62) - 1)
    return RunId(str(uuid.UUID(int=value)))


def _forget_last() -> None:
    """A forked child starts its own sequence (two processes counting on from the same
    last id could make the same one)."""
    global _last
    _last = (-1, 0)


os.register_at_fork(after_in_child=_forget_last)
