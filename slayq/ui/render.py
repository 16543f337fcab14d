"""Templates and how values look in them: times, durations, JSON previews."""

from __future__ import annotations

import hashlib
from datetime import UTC, datetime, timedelta
from typing import Any

import jinja2
import msgspec

PREVIEW = 80  # characters of a step's output shown in the timeline

environment = jinja2.Environment(
    loader=jinja2.PackageLoader("slayq.ui", "templates"),
    autoescape=True,
    undefined=jinja2.StrictUndefined,
    trim_blocks=True,
    lstrip_blocks=True,
)


def when(at: datetime | None) -> str:
    """A time in UTC to the second, ``2025-03-01 12:00:05Z``; empty for None."""
    return "" if at is None else at.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%SZ")


def iso(at: datetime | None) -> str:
    """The machine form of a time, for ``<time datetime>`` (the page's script counts)."""
    return "" if at is None else at.astimezone(UTC).isoformat()


def span(delta: timedelta | None) -> str:
    """A duration, short: ``120ms``, ``4.2s``, ``3m12s``, ``2h05m``, ``3d4h``."""
    if delta is None:
        return ""
    seconds = delta.total_seconds()
    if seconds < 1:
        return f"{seconds * 1000:.0f}ms"
    if seconds < 60:
        return f"{seconds:.1f}s".replace(".0s", "s")
    whole = int(seconds)
    for unit, size, small, small_size in (("d", 86400, "h", 3600), ("h", 3600, "m", 60)):
        if whole >= size:
            rest = whole % size // small_size
            return f"{whole // size}{unit}" + (f"{rest:02d}{small}" if rest else "")
    return f"{whole // 60}m" + (f"{whole % 60:02d}s" if whole % 60 else "")


def as_json(value: Any, *, pretty: bool = False) -> str:
    text = msgspec.json.encode(value)
    return (msgspec.json.format(text, indent=2) if pretty else text).decode()


def preview(value: Any) -> str:
    text = as_json(value)
    return text if len(text) <= PREVIEW else text[: PREVIEW - 1] + "…"


def fingerprint(html: str) -> str:
    """What the page's live region shows, in a few characters: pushed only on change."""
    return hashlib.blake2s(html.encode(), digest_size=8).hexdigest()


environment.filters.update(when=when, iso=iso, span=span, json=as_json, preview=preview)
environment.globals.update(
    STATUSES=("queued", "running", "sleeping", "waiting", "completed", "failed", "cancelled")
)


def render(name: str, context: dict[str, Any]) -> str:
    return environment.get_template(name).render(context)
