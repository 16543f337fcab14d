"""Reading what a page sends: a form body (urlencoded; parsed here rather than by
python-multipart, which Starlette would need for ``request.form()``) and query strings."""

from __future__ import annotations

from typing import TYPE_CHECKING
from urllib.parse import parse_qsl

if TYPE_CHECKING:
    from starlette.requests import Request

# A dashboard form is a few fields; anything larger is not one of ours.
MAX_FORM_BYTES = 1 << 20


class Fields:
    """Submitted fields, in order; a name may repeat (``status``)."""

    def __init__(self, pairs: list[tuple[str, str]]) -> None:
        self.pairs = pairs

    def get(self, name: str) -> str | None:
        """The first value of ``name``, stripped; None if absent or blank."""
        for key, value in self.pairs:
            if key == name and value.strip():
                return value.strip()
        return None

    def all(self, name: str) -> list[str]:
        return [v.strip() for k, v in self.pairs if k == name and v.strip()]


async def read_form(request: Request) -> Fields:
    body = b""
    async for chunk in request.stream():
        body += chunk
        if len(body) > MAX_FORM_BYTES:
            raise ValueError("the form is larger than 1 MiB")
    return Fields(parse_qsl(body.decode("utf-8", "replace"), keep_blank_values=True))


def query_fields(request: Request) -> Fields:
    return Fields(list(request.query_params.multi_items()))
