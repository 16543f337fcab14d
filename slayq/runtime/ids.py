"""Run ids: UUIDv7-shaped, so ids sort by creation time and index pages stay hot."""

from __future__ import annotations

import os
import time
import uuid

from slayq.model import RunId


def new_run_id() -> RunId:
    millis = time.time_ns() // 1_000_000
    rand = int.from_bytes(os.urandom(10), "big")
    value = (millis & ((1 << 48) - 1)) << 80 | rand & ((1 << 80) - 1)
    value = (value & ~(0xF << 76)) | (0x7 << 76)  # version 7
    value = (value & ~(0x3 << 62)) | (0x2 << 62)  # RFC 4122 variant
    return RunId(str(uuid.UUID(int=value)))
