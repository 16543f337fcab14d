"""Model values to statement parameters and back.

JSON goes to the database as text cast to jsonb (msgspec encodes it) and comes back as
text that msgspec decodes straight into the model's Structs, timestamps included.
"""

from __future__ import annotations

import uuid
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

import msgspec

from slayq.model import NewRun, PendingStep, RunId, StepRecord

if TYPE_CHECKING:
    from collections.abc import Sequence

_encoder = msgspec.json.Encoder()
_memo_decoder = msgspec.json.Decoder(list[StepRecord])


def dump(value: Any) -> str:
    return _encoder.encode(value).decode()


def dump_or_none(value: Any) -> str | None:
    return None if value is None else dump(value)


def load_memo(text: str | None) -> list[StepRecord]:
    return [] if text is None else _memo_decoder.decode(text)


def valid_id(run_id: str) -> bool:
    """Run ids are UUIDs; anything else names no run (rather than failing a cast)."""
    try:
        uuid.UUID(run_id)
    except (ValueError, TypeError, AttributeError):
        return False
    return True


def run_rows(
    runs: Sequence[tuple[int, NewRun, int | None]],
    *,
    first_seq: int | None = None,
    guard: tuple[RunId, int] | None = None,
) -> dict[str, Any]:
    """Parameters of INSERT_RUNS for (index, run, event cursor or None) triples."""
    return {
        "idx": [idx for idx, _, _ in runs],
        "ids": [run.id for _, run, _ in runs],
        "events": [run.event for _, run, _ in runs],
        "datas": [dump(run.data) for _, run, _ in runs],
        "queues": [run.queue for _, run, _ in runs],
        "priorities": [run.priority for _, run, _ in runs],
        "max_attempts": [run.max_attempts for _, run, _ in runs],
        "keys": [run.key for _, run, _ in runs],
        "delays": [run.delay for _, run, _ in runs],
        "run_ats": [run.run_at for _, run, _ in runs],
        "parent_ids": [run.parent.run_id if run.parent else None for _, run, _ in runs],
        "parent_steps": [run.parent.step if run.parent else None for _, run, _ in runs],
        "cursors": [cursor for _, _, cursor in runs],
        "cancel_on": [dump(run.cancel_on) if run.cancel_on else None for _, run, _ in runs],
        "first_seq": first_seq,
        "guard_id": guard[0] if guard else None,
        "token": guard[1] if guard else None,
    }


def step_rows(run_id: RunId, token: int, steps: Sequence[StepRecord]) -> dict[str, Any]:
    return {
        "id": run_id,
        "token": token,
        "names": [s.name for s in steps],
        "kinds": [s.kind for s in steps],
        "outputs": [dump(s.output) for s in steps],
        "errors": [dump_or_none(s.error) for s in steps],
    }


def pending_rows(run_id: RunId, token: int, pending: Sequence[PendingStep]) -> dict[str, Any]:
    return {
        "id": run_id,
        "token": token,
        "names": [p.name for p in pending],
        "kinds": [p.kind for p in pending],
        "events": [p.event for p in pending],
        "fields": [p.match_field for p in pending],
        # a wait on a field compares to a JSON value, null included
        "values": [dump(p.match_value) if p.match_field is not None else None for p in pending],
        "untils": [p.until for p in pending],
        "delays": [p.delay for p in pending],
        "specs": [dump(p) for p in pending],
    }


def due_now(run: NewRun, now: datetime) -> bool:
    """Whether a new run is due at once (its queue's listeners are told)."""
    if run.run_at is not None:
        return run.run_at <= now
    return run.delay is None or run.delay <= timedelta(0)
