"""Templates and how values look in them: times, durations, JSON previews."""

from __future__ import annotations

import hashlib
from datetime import UTC, datetime
from typing import Any

import jinja2
import msgspec

from slayq.runtime.durations import short_duration

PREVIEW = 80  # characters of a step's output shown in the timeline

environment = jinja2.Environment(
    loader=jinja2.PackageLoader("slayq.ui", "templates"),
    autoescape=True,
    undefined=jinja2.StrictUndefined,
    trim_blocks=True,
    lstrip_blocks=True,
)


span = short_duration  # the templates' name for it


def when(at: datetime | None) -> str:
    """A time in UTC to the second, ``2025-03-01 12:00:05Z``; empty for None."""
    return "" if at is None else at.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%SZ")


def iso(at: datetime | None) -> str:
    """The machine form of a time, for ``<time datetime>`` (the page's script counts)."""
    return "" if at is None else at.astimezone(UTC).isoformat()


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
