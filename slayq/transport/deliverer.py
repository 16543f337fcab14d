"""The server's side of delivery: POST a signed Claim to the app, get its Transition back.

Whatever goes wrong (the app is down, slow, answers 500 or garbage, refuses the
signature) becomes a ``DeliveryError``; the server keeps the run and retries it later.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import httpx

from slayq.runtime.limits import describe
from slayq.transport.errors import BodyTooLargeError, DeliveryError, WireError
from slayq.transport.signing import DELIVERY_HEADER, check_secrets, sign
from slayq.transport.wire import (
    DEFAULT_LIMITS,
    RAISE_LIMITS,
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

        def error(
            message: str, status: int | None = None, *, ran: bool = False, permanent: bool = False
        ) -> DeliveryError:
            return DeliveryError(
                f"delivery {delivery_id} of run {claim.lease.run_id} to {endpoint}: {message}",
                endpoint=endpoint,
                delivery_id=delivery_id,
                status=status,
                may_have_run=ran,
                permanent=permanent,
            )

        try:
            check_size(len(body), self.limits, what="delivery")
        except BodyTooLargeError as exc:
            raise error(
                f"not sent: {_server_side(exc)} The run's memo (the outputs of its finished "
                f"steps) no longer fits, so the run cannot go on. {RAISE_LIMITS}",
                permanent=True,
            ) from exc
        headers["Content-Type"] = "application/json"
        sent = False  # once the request is out, the app may run a handler
        try:
            async with self._client.stream(
                "POST", endpoint, content=body, headers=headers, timeout=self.timeout
            ) as response:
                sent = True
                if response.status_code == 413:
                    text = await _start_of(response)
                    raise error(
                        f"the app (or a proxy in front of it) refused the delivery of "
                        f"{describe(len(body))} ({len(body)} bytes) as too large (413): "
                        f"{text}. Raise the app's limit, Client(body_limits=Limits(body_bytes="
                        f"...)), and any proxy's, above that.",
                        413,
                        permanent=True,
                    )
                if response.status_code != 200:
                    text = await _start_of(response)
                    raise error(
                        f"the app answered {response.status_code} {response.reason_phrase}: {text}",
                        response.status_code,
                    )
                content = await _read(response, self.limits)
        except httpx.TimeoutException as exc:
            raise error(
                f"timed out after {self.timeout:g} s ({type(exc).__name__})",
                ran=sent or isinstance(exc, httpx.ReadTimeout),
            ) from exc
        except httpx.ConnectError as exc:
            raise error(f"could not connect: {exc}") from exc
        except (httpx.UnsupportedProtocol, httpx.InvalidURL) as exc:
            raise error(f"the request failed: {type(exc).__name__}: {exc}", permanent=True) from exc
        except httpx.HTTPError as exc:
            ran = sent or isinstance(exc, httpx.ReadError | httpx.RemoteProtocolError)
            raise error(f"the request failed: {type(exc).__name__}: {exc}", ran=ran) from exc
        except BodyTooLargeError as exc:
            raise error(
                f"the app answered 200 with a body too large: {_server_side(exc)} The run "
                f"cannot go on. {RAISE_LIMITS}",
                200,
                ran=True,
                permanent=True,
            ) from exc
        try:
            return decode_transition(content, limits=self.limits)
        except WireError as exc:
            raise error(f"the app answered 200 with a bad body: {exc}", 200, ran=True) from exc

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


def _server_side(exc: BodyTooLargeError) -> str:
    """The size message, naming the server's limit as the operator sets it."""
    text = str(exc).replace("Limits.body_bytes", "SLAY_Q_BODY_LIMIT")
    return text.replace("over the limit of", "over the server's limit of") + "."
