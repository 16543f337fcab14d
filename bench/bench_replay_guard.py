"""How long ``ReplayGuard.first_sight`` takes with many delivery ids held.

    python -m bench.bench_replay_guard

Prints one JSON line: microseconds per call with 1k and with 50k ids held (a receiver at
~33 and ~1,700 requests/s keeps that many within its 30 s window).
"""

from __future__ import annotations

import json
import time

from slayq.transport.signing import DELIVERY_HEADER, ReplayGuard


def per_call_us(held: int, calls: int = 2_000) -> float:
    """Steady state: ``held`` ids in the window, one expiring for each one added."""
    guard = ReplayGuard(tolerance=15.0)
    window = 2 * guard.tolerance
    step = window / held
    now = 1_000_000.0
    for i in range(held):
        guard.first_sight({DELIVERY_HEADER: f"warm-{i}"}, now)
        now += step
    headers = [{DELIVERY_HEADER: f"id-{i}"} for i in range(calls)]
    started = time.perf_counter()
    for h in headers:
        guard.first_sight(h, now)
        now += step
    return (time.perf_counter() - started) / calls * 1e6


def main() -> None:
    figures = {f"us_per_call_{n // 1000}k_ids": round(per_call_us(n), 2) for n in (1_000, 50_000)}
    print(json.dumps({"bench": "replay_guard", **figures}))


if __name__ == "__main__":
    main()
