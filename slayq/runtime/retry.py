"""How long a failed attempt waits before the next one.

Exponential backoff with jitter: attempt 1 failing waits about 2 s, attempt 2 about 4 s,
doubling up to an hour. The jitter (each delay is drawn between half and all of its
nominal value) spreads out runs that failed together, so a dependency that was down is
not hit by all of them at the same instant when it returns.
"""

from __future__ import annotations

import random
from datetime import timedelta

from msgspec import Struct


class RetryPolicy(Struct, frozen=True):
    base: timedelta = timedelta(seconds=2)
    cap: timedelta = timedelta(hours=1)

    def delay(self, failed_attempt: int, rng: random.Random | None = None) -> timedelta:
        """The wait after attempt number ``failed_attempt`` (1 = the first) failed."""
        exponent = min(max(failed_attempt - 1, 0), 40)  # 2**40 s is past any cap
        nominal: timedelta = min(self.cap, self.base * (2**exponent))
        fraction = (rng or _rng).uniform(0.5, 1.0)
        return nominal * fraction


_rng = random.Random()
DEFAULT_RETRY_POLICY = RetryPolicy()
