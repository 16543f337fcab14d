"""The server's side of delivery: POST a signed delivery to the app, get its answer back.

``deliver`` sends the whole claim; ``deliver_next`` a short continue for a run the app
kept live, and returns None when the app asks for the whole claim instead. Whatever
goes wrong (the app is down, slow, answers 500 or garbage, refuses the signature,
speaks another wire version) becomes a ``DeliveryError``; the server keeps the run and
retries it later.

All deliveries go through one aiohttp session whose pool keeps up to ``connections``
connections alive, so a delivery reuses a connection instead of opening one. aiohttp,
not httpx (which the rest of slayq uses): a delivery is the server's hot path, and httpx
took ~830 µs of CPU per small POST here against aiohttp's ~110 µs (5,000 POSTs at 10
in flight to a uvicorn app on loopback), the most of the server's CPU per run.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import aiohttp
import msgspec

from slayq.runtime.limits import describe
from slayq.transport.errors import BodyTooLargeError, DeliveryError, WireError
from slayq.transport.signing import DELIVERY_HEADER, Signer
from slayq.transport.wire import (
    DEFAULT_LIMITS,
    RAISE_LIMITS,
    WIRE_VERSION,
    Answer,
    ClaimDelivery,
    ContinueDelivery,
    Delivery,
    Limits,
    check_size,
    decode_answer,
    encode_delivery,
)

if TYPE_CHECKING:
    from types import TracebackType

    from slayq.model import Claim

ERROR_TEXT_CHARS = 500
DEFAULT_CONNECTIONS = 100


class Deliverer:
    """Delivers runs over HTTP, signed with ``secret``, through one pooled client.

    ``timeout`` bounds each phase of a request (connect, write, each read), in seconds.
    ``connections`` is how many deliveries may be in flight at once (the server's
    concurrency): the pool keeps that many connections alive between deliveries. A
    ``client`` passed in is used as is and left open by ``aclose()``.
    """

    def __init__(
        self,
        secret: str,
        *,
        timeout: float = 30,
        limits: Limits = DEFAULT_LIMITS,
        connections: int = DEFAULT_CONNECTIONS,
        client: aiohttp.ClientSession | None = None,
    ) -> None:
        self._signer = Signer(secret)
        self.timeout = timeout
        self.limits = limits
        self.connections = connections
        self._owns_client = client is None
        self._client = client  # made at the first delivery: a session is bound to its loop
        # Connecting (a free pooled connection or a new one) and each read of the answer;
        # no bound on the whole, which a long step handler may take.
        self._timeouts = aiohttp.ClientTimeout(total=None, connect=timeout, sock_read=timeout)

    def _session(self) -> aiohttp.ClientSession:
        if self._client is None:
            # Every delivery in flight keeps its connection alive for the next one.
            pool = aiohttp.TCPConnector(limit=self.connections, limit_per_host=0)
            self._client = aiohttp.ClientSession(
                connector=pool, cookie_jar=aiohttp.DummyCookieJar(), raise_for_status=False
            )
        return self._client

    async def deliver(self, endpoint: str, claim: Claim) -> Answer:
        """POST the whole ``claim`` to ``endpoint``; return the app's answer or raise
        DeliveryError."""
        answer = await self._post(endpoint, claim, ClaimDelivery(claim))
        assert answer is not None  # only a continue may be answered "send the claim"
        return answer

    async def deliver_next(self, endpoint: str, claim: Claim, memo_size: int) -> Answer | None:
        """POST a continue of ``claim``'s run, whose memo now holds ``memo_size`` steps;
        return the app's answer, or None when the app does not hold the run live and asks
        for the whole claim. Raises DeliveryError."""
        lease = claim.lease
        return await self._post(
            endpoint, claim, ContinueDelivery(lease.run_id, lease.token, memo_size)
        )

    async def _post(self, endpoint: str, claim: Claim, delivery: Delivery) -> Answer | None:
        body = encode_delivery(delivery)
        headers = self._signer.sign(body)
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
            async with self._session().post(
                endpoint, data=body, headers=headers, timeout=self._timeouts
            ) as response:
                sent = True  # the answer's headers arrived
                if response.status == 413:
                    text = await _start_of(response)
                    raise error(
                        f"the app (or a proxy in front of it) refused the delivery of "
                        f"{describe(len(body))} ({len(body)} bytes) as too large (413): "
                        f"{text}. Raise the app's limit, Client(body_limits=Limits(body_bytes="
                        f"...)), and any proxy's, above that.",
                        413,
                        permanent=True,
                    )
                if response.status != 200:
                    text = await _start_of(response)
                    resend = isinstance(delivery, ContinueDelivery) and _asks_for_claim(text)
                    if response.status == 409 and resend:
                        return None
                    raise error(
                        f"the app answered {response.status} {response.reason}: "
                        f"{text}{_version_hint(response.status, text)}",
                        response.status,
                    )
                content = await _read(response, self.limits)
        except TimeoutError as exc:  # connecting, or waiting for (part of) the answer
            raise error(
                f"timed out after {self.timeout:g} s ({type(exc).__name__})",
                ran=sent or isinstance(exc, aiohttp.SocketTimeoutError),
            ) from exc
        except aiohttp.ClientConnectorError as exc:
            raise error(f"could not connect: {exc}") from exc
        except (aiohttp.InvalidURL, aiohttp.NonHttpUrlClientError) as exc:
            raise error(f"the request failed: {type(exc).__name__}: {exc}", permanent=True) from exc
        except aiohttp.ClientError as exc:
            # Dropped or reset once connected: the request may have reached the app (a
            # reset cannot say whether it came while sending or while reading).
            raise error(f"the request failed: {type(exc).__name__}: {exc}", ran=True) from exc
        except BodyTooLargeError as exc:
            raise error(
                f"the app answered 200 with a body too large: {_server_side(exc)} The run "
                f"cannot go on. {RAISE_LIMITS}",
                200,
                ran=True,
                permanent=True,
            ) from exc
        try:
            return decode_answer(content, limits=self.limits)
        except WireError as exc:
            raise error(f"the app answered 200 with a bad body: {exc}", 200, ran=True) from exc

    async def aclose(self) -> None:
        if self._owns_client and self._client is not None:
            await self._client.close()

    async def __aenter__(self) -> Deliverer:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()


def _asks_for_claim(text: str) -> bool:
    """Whether an error answer is the receiver's "send the whole claim" (not a proxy's 409)."""
    try:
        answer = msgspec.json.decode(text)
    except msgspec.DecodeError:
        return False
    return isinstance(answer, dict) and answer.get("resend") == "claim"


def _version_hint(status: int, text: str) -> str:
    """For a 400 from an app that names no wire version: it runs an older slayq."""
    if status != 400:
        return ""
    try:
        answer = msgspec.json.decode(text)
    except msgspec.DecodeError:
        return ""
    if isinstance(answer, dict) and "error" in answer and "wire" not in answer:
        return (
            f" (the app's answer names no wire version: it runs a slayq older than the "
            f"server's, which speaks wire version {WIRE_VERSION}. Upgrade slayq in the app; "
            "runs wait meanwhile, spending no attempt)"
        )
    return ""


async def _read(response: aiohttp.ClientResponse, limits: Limits) -> bytes:
    """The response body; one over the limit raises WireError before it is read in full."""
    declared = response.headers.get("content-length", "")
    if declared.isdigit():
        check_size(int(declared), limits, what="response")
        return await response.read()  # no more than declared, and within the limit
    chunks: list[bytes] = []
    size = 0
    async for chunk in response.content.iter_any():
        size += len(chunk)
        check_size(size, limits, what="response", at_least=True)
        chunks.append(chunk)
    return b"".join(chunks)


async def _start_of(response: aiohttp.ClientResponse) -> str:
    """The first ``ERROR_TEXT_CHARS`` characters of an error response, for the message."""
    head = b""
    async for chunk in response.content.iter_any():
        head += chunk
        if len(head) > 4 * ERROR_TEXT_CHARS:
            break
    text = head.decode("utf-8", "replace")
    return text[:ERROR_TEXT_CHARS] + "..." if len(text) > ERROR_TEXT_CHARS else text


def _server_side(exc: BodyTooLargeError) -> str:
    """The size message, naming the server's limit as the operator sets it."""
    text = str(exc).replace("Limits.body_bytes", "SLAY_Q_BODY_LIMIT")
    return text.replace("over the limit of", "over the server's limit of") + "."
