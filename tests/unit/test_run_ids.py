"""Run ids: UUIDv7, monotonic within a process, and the id bounds of a time window."""

from __future__ import annotations

import os
import uuid
from datetime import UTC, datetime, timedelta

import pytest

from slayq.errors import InputError
from slayq.runtime.ids import first_id_at, new_run_id
from slayq.runtime.run_filters import ID_CLOCK_MARGIN, decode_cursor, encode_cursor, id_window


def millis_of(run_id: str) -> int:
    return uuid.UUID(run_id).int >> 80


def test_ids_one_process_makes_sort_in_the_order_it_made_them() -> None:
    made = [new_run_id() for _ in range(20_000)]  # many share a millisecond
    assert made == sorted(made)
    assert len(set(made)) == len(made)
    for run_id in made[:100]:
        value = uuid.UUID(run_id)
        assert (value.version, value.variant) == (7, uuid.RFC_4122)


def test_an_id_carries_the_milliseconds_of_the_clock_that_made_it() -> None:
    before = datetime.now(UTC)
    run_id = new_run_id()
    after = datetime.now(UTC)
    assert first_id_at(before - timedelta(milliseconds=1)) < run_id
    assert run_id < first_id_at(after + timedelta(milliseconds=1))


def test_first_id_at_is_the_smallest_id_of_its_millisecond() -> None:
    at = datetime(2026, 5, 1, 12, 0, 0, 123_456, tzinfo=UTC)
    first = first_id_at(at)
    assert millis_of(first) == int(at.timestamp() * 1000)
    assert uuid.UUID(first).version == 7
    assert first == first_id_at(at.replace(microsecond=123_000))  # same millisecond
    assert first_id_at(at - timedelta(milliseconds=1)) < first
    ms = millis_of(first)
    last_of_before = (ms - 1) << 80 | 0x7FFF << 64 | 0xBFFF_FFFF_FFFF_FFFF  # all random bits set
    assert str(uuid.UUID(int=last_of_before)) < first
    assert first_id_at(datetime(1900, 1, 1, tzinfo=UTC)) == "00000000-0000-7000-8000-000000000000"


def test_a_window_is_widened_by_the_clock_margin_on_both_sides() -> None:
    low, high = datetime(2026, 5, 1, tzinfo=UTC), datetime(2026, 5, 2, tzinfo=UTC)
    low_id, high_id = id_window(low, high)
    assert low_id == first_id_at(low - ID_CLOCK_MARGIN)
    # ids made during the last millisecond of high + margin are inside; later ones not
    assert high_id == first_id_at(high + ID_CLOCK_MARGIN + timedelta(milliseconds=1))
    assert id_window(None, None) == (None, None)
    assert id_window(datetime.min.replace(tzinfo=UTC), datetime.max.replace(tzinfo=UTC)) == (
        None,
        None,
    )


def test_a_cursor_names_a_run_id_and_nothing_else_is_accepted() -> None:
    run_id = new_run_id()
    cursor = encode_cursor(run_id)
    assert run_id not in cursor  # opaque
    assert decode_cursor(cursor) == run_id
    import base64

    def raw(text: str) -> str:
        return base64.urlsafe_b64encode(text.encode()).decode().rstrip("=")

    for bad in [
        raw(run_id),  # no version prefix
        raw("r1:" + run_id.upper()),  # not canonical
        raw("r1:not-an-id"),
        raw(f"2025-01-01T00:00:00+00:00|{run_id}"),  # the earlier (created_at, id) cursor
        "%%%",
        "",
    ]:
        with pytest.raises(InputError, match="cursor"):
            decode_cursor(bad)


def test_a_forked_child_does_not_continue_its_parents_sequence() -> None:
    new_run_id()
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # pragma: no cover - the child
        os.write(write, new_run_id().encode())
        os._exit(0)
    os.waitpid(pid, 0)
    child = os.read(read, 64).decode()
    os.close(read)
    os.close(write)
    assert child != new_run_id()


def test_an_id_is_the_canonical_text_of_its_uuid() -> None:
    made = [new_run_id() for _ in range(5_000)]  # first ids of a millisecond and later ones
    for run_id in made:
        assert str(uuid.UUID(run_id)) == run_id
    # every bit of the milliseconds and of the counter lands where uuid.UUID puts it
    from slayq.runtime.ids import _compose

    for millis, counter in [
        (0, 0),
        ((1 << 48) - 1, (1 << 74) - 1),
        (0x123456789ABC, 0x2A5 << 62 | 7),
    ]:
        value = millis << 80 | 0x7 << 76 | (counter >> 62) << 64 | 0x2 << 62
        value |= counter & ((1 << 62) - 1)
        assert _compose(millis, counter) == str(uuid.UUID(int=value))
