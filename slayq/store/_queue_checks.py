"""Checking the arguments of the queue operations, the same way in every store."""

from __future__ import annotations

from slayq.errors import InputError

# A queue name is stored and compared as text; one this long is a mistake, not a queue.
_MAX_NAME = 200


def checked_queue(method: str, name: object, actor: object) -> str:
    """``name`` if it can name a queue; raises ``InputError`` naming the bad value."""
    if not isinstance(name, str) or not name.strip() or len(name) > _MAX_NAME:
        raise InputError(
            f"{method}: the queue name must be a non-empty string of at most {_MAX_NAME} "
            f"characters, got {name!r}"
        )
    if not isinstance(actor, str) or not actor.strip():
        raise InputError(f"{method}: actor must be a non-empty string, got {actor!r}")
    return name


def checked_limit(method: str, limit: object) -> int:
    if not isinstance(limit, int) or isinstance(limit, bool) or not 1 <= limit <= 10_000:
        raise InputError(f"{method}: limit must be an integer from 1 to 10000, got {limit!r}")
    return limit
