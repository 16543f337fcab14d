"""Run ids: UUIDv7-shaped, so ids sort by creation time and index pages stay hot.

An id is 48 bits of Unix milliseconds (the clock of the process that made it), the
version and variant bits, and 74 bits that are random for the first id of a millisecond
and count up by a random step after it (RFC 9562's monotonic random method): the ids one
process makes sort in the order it made them, even within a millisecond, and ``list_runs``
lists runs newest first by id alone. Ids of different processes sort by their clocks.
"""

from __future__ import annotations

import os
import struct
import threading
import time
from datetime import UTC, datetime, timedelta

from slayq.model import RunId

_MS_MASK = (1 << 48) - 1
_COUNTER_BITS = 74
_STEP_BITS = 32  # a random step of up to 2**32 leaves room for 2**42 ids a millisecond
_LOW_62 = (1 << 62) - 1
_VARIANT = 0x2 << 62

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_ONE_MS = timedelta(milliseconds=1)

_lock = threading.Lock()
_last = (-1, 0)  # (millisecond, counter) of the last id this process made
_prefix = (-1, "")  # (millisecond, its text) of the last id
# The random steps of the counter are read from the OS 1,024 at a time: a read per id
# (a system call) was a fifth of what an id cost, and a batch of 1,000 events makes
# 1,000 ids, most of them in a millisecond some other id already started.
_steps: list[int] = []


def new_run_id() -> RunId:
    global _last, _prefix
    millis = time.time_ns() // 1_000_000 & _MS_MASK
    with _lock:
        last_ms, last_counter = _last
        if millis > last_ms:
            counter = int.from_bytes(os.urandom(10), "big") >> (80 - _COUNTER_BITS)
        else:  # the same millisecond, or the clock stepped back: count on from the last id
            millis = last_ms
            if not _steps:
                _steps.extend(struct.unpack(">1024I", os.urandom(4096)))
            counter = last_counter + 1 + (_steps.pop() >> (32 - _STEP_BITS))
            if counter >> _COUNTER_BITS:  # never in practice: borrow the next millisecond
                millis, counter = millis + 1, int.from_bytes(os.urandom(8), "big") >> 2
        _last = (millis, counter)
        prefix_ms, prefix = _prefix
        if prefix_ms != millis:  # the text of the milliseconds, shared by their ids
            prefix = _millis_text(millis)
            _prefix = (millis, prefix)
    return RunId(prefix + _counter_text(counter))


def first_id_at(at: datetime) -> RunId:
    """The smallest run id of the millisecond ``at`` falls in (clamped to the 48 bits of
    milliseconds an id has): every id made at that millisecond or later sorts at or after
    it, every id made before it sorts before it."""
    millis = (at - _EPOCH) // _ONE_MS
    return _compose(min(max(millis, 0), _MS_MASK), 0)


def _compose(millis: int, counter: int) -> RunId:
    return RunId(_millis_text(millis) + _counter_text(counter))


# The canonical text of the UUID, written directly rather than by uuid.UUID (which took
# most of an id's cost): 8-4- hex digits of milliseconds, then version 7 and the 12 high
# bits of the counter, the variant (binary 10) and its 62 low bits as 4-12 hex digits.
def _millis_text(millis: int) -> str:
    return f"{millis >> 16:08x}-{millis & 0xFFFF:04x}-"


def _counter_text(counter: int) -> str:
    tail = ((0x7000 | counter >> 62) << 64 | _VARIANT | counter & _LOW_62).to_bytes(10).hex()
    return f"{tail[:4]}-{tail[4:8]}-{tail[8:]}"


def _forget_last() -> None:
    """A forked child starts its own sequence (two processes counting on from the same
    last id could make the same one) and reads its own random bytes (it would otherwise
    use the parent's unread ones, the very bytes the parent uses next)."""
    global _last
    _last = (-1, 0)
    _steps.clear()


os.register_at_fork(after_in_child=_forget_last)
