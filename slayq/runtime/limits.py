"""Size limits on what users store: going over one is a clear error, never a truncated write."""

from __future__ import annotations

import msgspec

KIB = 1024
MIB = 1024 * KIB


class SizeLimits(msgspec.Struct, frozen=True):
    """Bytes of JSON allowed for one event's data and for one step's output or a result."""

    event_data_bytes: int = 512 * KIB
    step_output_bytes: int = 4 * MIB


def describe(size: int) -> str:
    return f"{size / MIB:.1f} MiB" if size >= MIB else f"{size / KIB:.1f} KiB"


DEFAULT_LIMITS = SizeLimits()
