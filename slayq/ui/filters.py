"""The runs list's filters: from the URL (or a bulk form) to a ``RunFilter`` and back.

The names are those of ``list_runs``: ``status`` (repeatable), ``event``, ``queue``,
``since``, ``until`` (a duration back from now like ``1h``, or an ISO 8601 time with an
offset), ``data`` (a JSON object the event data must contain) and ``parent``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any
from urllib.parse import urlencode

import msgspec

from slayq.errors import InputError
from slayq.runtime.run_filters import run_filter

if TYPE_CHECKING:
    from slayq.model import RunFilter
    from slayq.ui.forms import Fields

TEXT_FIELDS = ("event", "queue", "since", "until", "data", "parent")


class Filters(msgspec.Struct, frozen=True):
    """The filters as given (text), to show them in the form and keep them in links."""

    status: list[str] = []
    event: str | None = None
    queue: str | None = None
    since: str | None = None
    until: str | None = None
    data: str | None = None
    parent: str | None = None

    @classmethod
    def read(cls, fields: Fields) -> Filters:
        return cls(status=fields.all("status"), **{name: fields.get(name) for name in TEXT_FIELDS})

    def pairs(self) -> list[tuple[str, str]]:
        given = [("status", s) for s in self.status]
        given += [(name, v) for name in TEXT_FIELDS if (v := getattr(self, name)) is not None]
        return given

    def query(self, **extra: str) -> str:
        """The query string of these filters (and ``extra``), for links."""
        return urlencode(self.pairs() + list(extra.items()))

    def empty(self) -> bool:
        return not self.pairs()

    def resolve(self) -> RunFilter:
        """The ``RunFilter``; ``InputError`` naming a bad field."""
        data: Any = None
        if self.data is not None:
            try:
                data = msgspec.json.decode(self.data)
            except msgspec.DecodeError as exc:
                raise InputError(f'data must be a JSON object, like {{"id": 7}}: {exc}') from None
            if not isinstance(data, dict):
                raise InputError(f'data must be a JSON object, like {{"id": 7}}, got {self.data}')
        return run_filter(
            status=self.status or None,
            event=self.event,
            queue=self.queue,
            since=self.since,
            until=self.until,
            data=data,
            parent=self.parent,
        )
