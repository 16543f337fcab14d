"""The server's side of delivery: POST a signed Claim to the app, get its Transition back.

Whatever goes wrong (the app is down, slow, answers 500 or garbage, refuses the
signature) becomes a ``DeliveryError``; the server keeps the run and retries it later.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import httpx

from slayq.transport.errors import BodyTooLargeError, DeliveryError, WireError
from slayq.transport.signing import DELIVERY_HEADER, check_secrets, sign
from slayq.transport.wire import (
    DEFAULT_LIMITS,
    Limits,
    check_size,
    decode_transition,
    encode_delivery,
)

if TYPE_CHECKING:
    from types import TracebackType

    from slayq.model import Claim, Transition

ERROR_TEXT_CHARS = 500


class Deliverer:
    """Delivers claims over HTTP, signed with ``secret``, through one pooled client.

    ``timeout`` bounds each phase of a request (connect, write, each read), in seconds.
    A ``client`` passed in is used as is and left open by ``aclose()``.
    """

    def __init__(
        self,
        secret: str,
        *,
        timeout: float = 30,
        limits: Limits = DEFAULT_LIMITS,
        client: httpx.AsyncClient | None = None,
    ) -> None:
        (self._secret,) = check_secrets([secret])
        self.timeout = timeout
        self.limits = limits
        self._owns_client = client is None
        self._client = client if client is not None else httpx.AsyncClient(timeout=timeout)

    async def deliver(self, endpoint: str, claim: Claim) -> Transition:
        """POST ``claim`` to ``endpoint``; return the app's Transition or raise DeliveryError."""
        body = encode_delivery(claim)
        headers = sign(body, self._secret)
        delivery_id = headers[DELIVERY_HEADER]

        def error(message: str, status: int | None = None) -> DeliveryError:
            return DeliveryError(
                f"delivery {delivery_id} of run {claim.lease.run_id} to {endpoint}: {message}",
                endpoint=endpoint,
                delivery_id=delivery_id,
                status=status,
            )

        try:
            check_size(len(body), self.limits, what="delivery")
        except BodyTooLargeError as exc:
            raise error(f"not sent: {exc}") from exc
        headers["Content-Type"] = "application/json"
        try:
            async with self._client.stream(
                "POST", endpoint, content=body, headers=headers, timeout=self.timeout
            ) as response:
                if response.status_code != 200:
                    text = await _start_of(response)
                    raise error(
                        f"the app answered {response.status_code} {response.reason_phrase}: {text}",
                        response.status_code,
                    )
                content = await _read(response, self.limits)
        except httpx.TimeoutException as exc:
            raise error(f"timed out after {self.timeout:g} s ({type(exc).__name__})") from exc
        except httpx.ConnectError as exc:
            raise error(f"could not connect: {exc}") from exc
        except (httpx.HTTPError, httpx.InvalidURL) as exc:
            raise error(f"the request failed: {type(exc).__name__}: {exc}") from exc
        except BodyTooLargeError as exc:
            raise error(f"the app answered 200 with a body too large: {exc}", 200) from exc
        try:
            return decode_transition(content, limits=self.limits)
        except WireError as exc:
            raise error(f"the app answered 200 with a bad body: {exc}", 200) from exc

    async def aclose(self) -> None:
        if self._owns_client:
            await self._client.aclose()

    async def __aenter__(self) -> Deliverer:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()


async def _read(response: httpx.Response, limits: Limits) -> bytes:
    """The response body; one over the limit raises WireError before it is read in full."""
    declared = response.headers.get("content-length", "")
    if declared.isdigit():
        check_size(int(declared), limits, what="response")
    chunks: list[bytes] = []
    size = 0
    async for chunk in response.aiter_bytes():
        size += len(chunk)
        check_size(size, limits, what="response", at_least=True)
        chunks.append(chunk)
    return b"".join(chunks)


async def _start_of(response: httpx.Response) -> str:
    """The first ``ERROR_TEXT_CHARS`` characters of an error response, for the message."""
    head = b""
    async for chunk in response.aiter_bytes():
        head += chunk
        if len(head) > 4 * ERROR_TEXT_CHARS:
            break
    text = head.decode("utf-8", "replace")
    return text[:ERROR_TEXT_CHARS] + "..." if len(text) > ERROR_TEXT_CHARS else text
