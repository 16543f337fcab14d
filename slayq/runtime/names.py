"""Bounds on the names and values that PostgreSQL indexes, checked where users write them.

A value the database refuses at commit time leaves a run stuck until its lease expires,
so the engine refuses it first, with the name of the step, event or field.

Names (steps, events, queues, idempotency keys) and the values of matched fields are held
in btree indexes, whose entries may not pass about 2,700 bytes (a third of an 8 KiB page).
The widest entries hold two such values ((event, key), (event, field, value)), so 500
bytes each keeps every entry far below the limit, and is far above any name a person
would write. ``text`` and ``jsonb`` cannot hold the NUL character at all.
"""

from __future__ import annotations

from typing import Any

MAX_NAME_BYTES = 500


def name_problem(value: str) -> str | None:
    """Why ``value`` cannot be stored as a name, or ``None`` if it can."""
    if "\x00" in value:
        return f"{_shown(value)} contains a NUL character (\\x00), which PostgreSQL cannot store"
    size = len(value.encode("utf-8", "surrogatepass"))
    if size > MAX_NAME_BYTES:
        return (
            f"{_shown(value)} is {size} bytes of UTF-8, over {MAX_NAME_BYTES} bytes "
            "(names are indexed; use a shorter name or a hash of a long one)"
        )
    return None


def nul_in(value: Any, path: str) -> str | None:
    """Where in JSON-shaped ``value`` a NUL character is, like ``data.items[2].name``."""
    if isinstance(value, str):
        return f"{path} contains a NUL character (\\x00)" if "\x00" in value else None
    if isinstance(value, dict):
        for key, item in value.items():
            if isinstance(key, str) and "\x00" in key:
                return f"{path} has a key {key!r} that contains a NUL character (\\x00)"
            found = nul_in(item, f"{path}.{key}")
            if found is not None:
                return found
    elif isinstance(value, list | tuple):
        for i, item in enumerate(value):
            found = nul_in(item, f"{path}[{i}]")
            if found is not None:
                return found
    return None


def _shown(value: str) -> str:
    """The start of a name, enough to find it by, without repeating kilobytes of it."""
    return repr(value) if len(value) <= 60 else f"{value[:40]!r}... ({len(value)} characters)"
