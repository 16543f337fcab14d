"""The server's side of delivery: POST a signed delivery to the app, get its answer back.

``deliver`` sends the whole claim; ``deliver_next`` a short continue for a run the app
kept live, and returns None when the app asks for the whole claim instead. Whatever
goes wrong (the app is down, slow, answers 500 or garbage, refuses the signature,
speaks another wire version) becomes a ``DeliveryError``; the server keeps the run and
retries it later.

Deliveries to one endpoint that start in the same turn of the event loop (the runs of
one claim, the continues of one commit) go in one request, a ``BatchDelivery``: one
POST, one signature, one request for the app's HTTP stack to parse, for all of them. The
app answers each in a line of its own as soon as its run stops, and each caller gets its
answer when its line arrives, not when the batch's slowest run is done. No task reads
the answer in the background: the caller whose line has not come yet reads it, hands
on the lines of the others as they pass, and when its own arrives, hands the reading on
to one still waiting. A batch that cannot be sent, or whose lines stop, fails each of
its deliveries as a delivery of its own would have failed. One delivery alone, or one
that would take a batch over the body limit, goes alone, as a ``ClaimDelivery`` or
``ContinueDelivery``.

All deliveries go through one aiohttp session whose pool keeps up to ``connections``
connections alive, so a delivery reuses a connection instead of opening one. aiohttp,
not httpx (which the rest of slayq uses): a delivery is the server's hot path, and httpx
took ~830 µs of CPU per small POST here against aiohttp's ~110 µs (5,000 POSTs at 10
in flight to a uvicorn app on loopback), the most of the server's CPU per run.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from http import HTTPStatus
from typing import TYPE_CHECKING

import aiohttp
import anyio
import anyio.lowlevel
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
    Limits,
    Single,
    batch_line_index,
    check_size,
    decode_answer,
    decode_batch_line,
    encode_batch,
    encode_delivery,
)

if TYPE_CHECKING:
    from types import TracebackType

    from slayq.model import Claim

ERROR_TEXT_CHARS = 500
DEFAULT_CONNECTIONS = 100
BATCH_OVERHEAD = 64  # bytes of a batch's body around its deliveries'
LINE_OVERHEAD = 64  # bytes of a line of a batch's answer around its body


@dataclass(frozen=True)
class _Failure:
    """How a request failed, for each delivery it carried (``DeliveryError``'s fields)."""

    message: str
    status: int | None = None
    ran: bool = False
    permanent: bool = False


@dataclass(eq=False)
class _Item:
    """A delivery in a batch, and its caller's wait for its answer."""

    claim: Claim
    delivery: Single
    body: bytes  # the delivery alone, encoded
    done: bool = False
    answer: Answer | None = None
    error: DeliveryError | None = None
    gone: bool = False  # its caller stopped waiting (cancelled)
    alone: bool = False  # to be sent again on its own (the batch was too large for the app)
    wake: anyio.Event = field(default_factory=anyio.Event)


@dataclass(eq=False)
class _Batch:
    """Deliveries to one endpoint in one request; ``reader`` reads its answer's lines."""

    endpoint: str
    items: list[_Item] = field(default_factory=list)
    size: int = 0  # bytes of the items' bodies
    delivery_id: str = ""
    lines: _Lines | None = None
    reader: _Item | None = None

    def undone(self) -> list[_Item]:
        return [item for item in self.items if not item.done]


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
        # Per endpoint, the batch gathering this turn's deliveries (see the module doc).
        self._gathering: dict[str, _Batch] = {}

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
        answer = await self._deliver(endpoint, claim, ClaimDelivery(claim))
        assert answer is not None  # only a continue may be answered "send the claim"
        return answer

    async def deliver_next(self, endpoint: str, claim: Claim, memo_size: int) -> Answer | None:
        """POST a continue of ``claim``'s run, whose memo now holds ``memo_size`` steps;
        return the app's answer, or None when the app does not hold the run live and asks
        for the whole claim. Raises DeliveryError."""
        lease = claim.lease
        return await self._deliver(
            endpoint, claim, ContinueDelivery(lease.run_id, lease.token, memo_size)
        )

    async def _deliver(self, endpoint: str, claim: Claim, delivery: Single) -> Answer | None:
        """Deliver alone, or in the batch of this turn's deliveries to ``endpoint``."""
        body = encode_delivery(delivery)
        item = _Item(claim, delivery, body)
        batch = self._gathering.get(endpoint)
        if batch is not None and batch.size + len(body) <= self.limits.body_bytes:
            batch.items.append(item)
            batch.size += len(body)
            return await self._answer_in(batch, item)
        if batch is not None:  # it would take the batch over the limit: alone
            return await self._post(endpoint, claim, delivery, body)
        batch = self._gathering[endpoint] = _Batch(endpoint, [item], BATCH_OVERHEAD + len(body))
        try:
            await anyio.lowlevel.checkpoint()  # the deliveries started in this turn join
        except BaseException:  # cancelled: those that joined go on their own
            for other in batch.items[1:]:
                other.alone = other.done = True
                other.wake.set()
            raise
        finally:
            del self._gathering[endpoint]
        if len(batch.items) == 1:
            return await self._post(endpoint, claim, delivery, body)
        try:
            batch.lines = await self._open_batch(batch)
        except _SendAlone:
            for other in batch.items:
                other.alone = other.done = True
                other.wake.set()
            return await self._post(endpoint, claim, delivery, body)
        except BaseException as exc:
            failure = (
                exc.args[0]
                if isinstance(exc, _FailedRequest)
                # cut off while sending: the app may have the runs
                else _Failure("the request was cut off while sent", ran=True)
            )
            self._fail(batch, failure)
            if isinstance(exc, _FailedRequest):
                assert item.error is not None
                raise item.error from exc.__cause__
            raise
        batch.reader = item
        return await self._answer_in(batch, item)

    async def _answer_in(self, batch: _Batch, item: _Item) -> Answer | None:
        """Wait for ``item``'s answer, reading the batch's lines when it is the reader."""
        try:
            while not item.done:
                if batch.reader is item:
                    await self._read_lines(batch, item)
                else:
                    await item.wake.wait()
                    item.wake = anyio.Event()
        except BaseException:
            item.gone = True
            if batch.reader is item:
                self._hand_on(batch)
            raise
        if item.alone:
            return await self._post(batch.endpoint, item.claim, item.delivery, item.body)
        if item.error is not None:
            raise item.error
        return item.answer

    async def _read_lines(self, batch: _Batch, item: _Item) -> None:
        """Read the batch's lines until ``item``'s has come, resolving those that pass;
        then hand the reading on."""
        assert batch.lines is not None
        try:
            while not item.done:
                try:
                    line = await batch.lines.next()
                except _LineTooLarge as too_large:
                    self._refuse_line(batch, *too_large.args)
                    await batch.lines.skip()
                    continue
                if line is None:
                    raise WireError("the answer ended before every delivery of it was answered")
                answered = decode_batch_line(line, size=len(batch.items))
                target = batch.items[answered.i]
                if target.done:
                    raise WireError(f"delivery {answered.i} of the batch was answered twice")
                content = bytes(answered.body)
                try:
                    target.answer = self._answered(
                        answered.status, content, target.delivery, self._error_of(batch, target)
                    )
                except DeliveryError as exc:
                    target.error = exc
                target.done = True
                target.wake.set()
            if not batch.undone():
                await batch.lines.finish()
        except TimeoutError as exc:
            self._fail(
                batch,
                _Failure(f"timed out after {self.timeout:g} s ({type(exc).__name__})", ran=True),
            )
        except (aiohttp.ClientError, WireError) as exc:
            # The connection dropped, or the answer is garbage: the runs not answered may
            # have run.
            self._fail(
                batch, _Failure(f"the answer broke off: {type(exc).__name__}: {exc}", ran=True)
            )
        finally:
            if batch.reader is item:
                self._hand_on(batch)

    def _refuse_line(self, batch: _Batch, i: int | None, size: int) -> None:
        """The answer of delivery ``i`` is over the limit: the run cannot go on, as when
        a delivery of its own is answered so (``_post``)."""
        if i is None or not 0 <= i < len(batch.items) or batch.items[i].done:
            raise WireError("a line of the batch's answer is over the limit, of no delivery")
        target = batch.items[i]
        try:
            check_size(size, self.limits, what="response", at_least=True)
            raise AssertionError("a line this long is over the limit")  # pragma: no cover
        except BodyTooLargeError as exc:
            target.error = _too_large(self._error_of(batch, target), exc)
        target.done = True
        target.wake.set()

    def _hand_on(self, batch: _Batch) -> None:
        """The reader is done: the next delivery still waiting reads, or, if none is, the
        response is let go."""
        batch.reader = next((i for i in batch.undone() if not i.gone), None)
        if batch.reader is not None:
            batch.reader.wake.set()
        elif batch.lines is not None:
            batch.lines.release(finished=not batch.undone())

    def _fail(self, batch: _Batch, failure: _Failure) -> None:
        """Every delivery of ``batch`` not yet answered fails with ``failure``."""
        for item in batch.undone():
            item.error = self._error_of(batch, item)(
                failure.message, failure.status, ran=failure.ran, permanent=failure.permanent
            )
            item.done = True
            item.wake.set()

    def _error_of(self, batch: _Batch, item: _Item) -> _ErrorMaker:
        return _ErrorMaker(
            batch.delivery_id,
            f"run {item.claim.lease.run_id} (one of {len(batch.items)} in the request)",
            batch.endpoint,
        )

    async def _open_batch(self, batch: _Batch) -> _Lines:
        """POST the batch; its answer's lines once it is answered 200, else
        ``_FailedRequest``."""
        body = encode_batch([item.body for item in batch.items])
        headers = self._signer.sign(body)
        batch.delivery_id = headers[DELIVERY_HEADER]
        headers["Content-Type"] = "application/json"
        try:
            response = await self._session().post(
                batch.endpoint, data=body, headers=headers, timeout=self._timeouts
            )
        except TimeoutError as exc:
            failure = _Failure(
                f"timed out after {self.timeout:g} s ({type(exc).__name__})",
                ran=isinstance(exc, aiohttp.SocketTimeoutError),
            )
            raise _FailedRequest(failure) from exc
        except aiohttp.ClientConnectorError as exc:
            raise _FailedRequest(_Failure(f"could not connect: {exc}")) from exc
        except (aiohttp.InvalidURL, aiohttp.NonHttpUrlClientError) as exc:
            message = f"the request failed: {type(exc).__name__}: {exc}"
            raise _FailedRequest(_Failure(message, permanent=True)) from exc
        except aiohttp.ClientError as exc:
            message = f"the request failed: {type(exc).__name__}: {exc}"
            raise _FailedRequest(_Failure(message, ran=True)) from exc
        if response.status != 200:
            try:
                text = await _start_of(response)
            finally:
                response.release()
            if response.status == 413:  # the app's limit is lower: each goes on its own
                raise _SendAlone
            raise _FailedRequest(
                _Failure(
                    f"the app answered {response.status} {response.reason}: "
                    f"{text}{_version_hint(response.status, text)}",
                    response.status,
                )
            )
        return _Lines(response, self.limits)

    def _answered(
        self, status: int, content: bytes, delivery: Single, error: _ErrorMaker
    ) -> Answer | None:
        """The answer a delivery got: ``status`` and ``content``, the body of its response
        (the start of it, for an error) or of its line in a batch's answer. Raises
        DeliveryError."""
        if status == 200:
            try:
                return decode_answer(content, limits=self.limits)
            except BodyTooLargeError as exc:
                raise _too_large(error, exc) from exc
            except WireError as exc:
                raise error(f"the app answered 200 with a bad body: {exc}", 200, ran=True) from exc
        text = content.decode("utf-8", "replace")
        text = text[:ERROR_TEXT_CHARS] + "..." if len(text) > ERROR_TEXT_CHARS else text
        if status == 409 and isinstance(delivery, ContinueDelivery) and _asks_for_claim(text):
            return None
        try:
            reason = HTTPStatus(status).phrase
        except ValueError:  # a status HTTP does not name
            reason = ""
        raise error(
            f"the app answered {status} {reason}: {text}{_version_hint(status, text)}", status
        )

    async def _post(
        self, endpoint: str, claim: Claim, delivery: Single, body: bytes
    ) -> Answer | None:
        headers = self._signer.sign(body)
        delivery_id = headers[DELIVERY_HEADER]
        error = _ErrorMaker(delivery_id, f"run {claim.lease.run_id}", endpoint)
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
                status = response.status
                if status == 200:
                    content = await _read(response, self.limits)
                else:
                    content = (await _start_of(response)).encode()
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
            raise _too_large(error, exc) from exc
        return self._answered(status, content, delivery, error)

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


class _LineTooLarge(Exception):
    """A line of a batch's answer grew over the limit: ``args`` are the index of its
    delivery (None if its start is not a line's) and the bytes read of it."""


class _SendAlone(Exception):
    """The app refused a batch as too large: send each of its deliveries on its own."""


class _FailedRequest(Exception):
    """A batch's request failed as a whole; ``args[0]`` says how."""


class _ErrorMaker:
    """Makes the ``DeliveryError`` of one delivery of a request."""

    def __init__(self, delivery_id: str, what: str, endpoint: str) -> None:
        self.delivery_id, self.what, self.endpoint = delivery_id, what, endpoint

    def __call__(
        self, message: str, status: int | None = None, *, ran: bool = False, permanent: bool = False
    ) -> DeliveryError:
        return DeliveryError(
            f"delivery {self.delivery_id} of {self.what} to {self.endpoint}: {message}",
            endpoint=self.endpoint,
            delivery_id=self.delivery_id,
            status=status,
            may_have_run=ran,
            permanent=permanent,
        )


class _Lines:
    """The lines of a batch's answer, read as they come."""

    def __init__(self, response: aiohttp.ClientResponse, limits: Limits) -> None:
        self._response = response
        self._limits = limits
        self._buffer = bytearray()

    async def next(self) -> bytes | None:
        """The next line (without its newline), or None at the end. A line that grows
        over the limit before its end raises ``_LineTooLarge``, naming its delivery;
        ``skip`` then drops the rest of it."""
        while True:
            newline = self._buffer.find(b"\n")
            if newline >= 0:
                line = bytes(self._buffer[:newline])
                del self._buffer[: newline + 1]
                return line
            if len(self._buffer) > self._limits.body_bytes + LINE_OVERHEAD:
                raise _LineTooLarge(batch_line_index(self._buffer), len(self._buffer))
            chunk = await self._response.content.readany()
            if not chunk:
                if self._buffer:
                    raise WireError("the answer ended within a line")
                return None
            self._buffer += chunk

    async def skip(self) -> None:
        """Drop the rest of the current line."""
        while (newline := self._buffer.find(b"\n")) < 0:
            self._buffer.clear()
            chunk = await self._response.content.readany()
            if not chunk:
                raise WireError("the answer ended within a line")
            self._buffer += chunk
        del self._buffer[: newline + 1]

    async def finish(self) -> None:
        """Read to the end (nothing more should come), so the connection can be reused."""
        if await self.next() is not None:
            raise WireError("the answer has more lines than the batch has deliveries")

    def release(self, *, finished: bool) -> None:
        """Let the response go: its connection back to the pool if it was read to the
        end, else closed (lines would still come on it)."""
        if finished:
            self._response.release()
        else:
            self._response.close()


def _too_large(error: _ErrorMaker, exc: BodyTooLargeError) -> DeliveryError:
    """The app's answer is over the server's limit: the run cannot go on (caused by
    ``exc``, which names the run's error type, ``BodyTooLargeError``)."""
    too_large = error(
        f"the app answered 200 with a body too large: {_server_side(exc)} The run cannot go "
        f"on. {RAISE_LIMITS}",
        200,
        ran=True,
        permanent=True,
    )
    too_large.__cause__ = exc
    return too_large


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
