"""The app's side of delivery: verify a signed delivery, drive the run one step, answer.

A ``ClaimDelivery`` starts the run's ``Execution`` (replaying its memo); a
``ContinueDelivery`` resumes the one kept live (``slayq.transport.live``) after the last
answer, a ``Continue``, was committed. Either way the answer is the ``Transition`` (see
``slayq.transport.wire``).

A ``BatchDelivery`` carries several of these: each runs in a task of its own, and its
answer is a line of the response, sent as soon as its run stops (``asgi_app`` streams
them), so a quick run's answer does not wait for a slow one's.

``Receiver.receive`` is the framework-agnostic core; ``asgi_app`` wraps it for any ASGI
server (uvicorn, hypercorn) or framework that mounts ASGI apps (Starlette, FastAPI,
Django). Every answer but 200 is JSON ``{"error": "...", "wire": 3}``; within a batch's
200, each delivery's line carries the status its own request would have had (404, 409,
500):

=====  ==============================================================================
413    the body is over ``Limits.body_bytes``: refused on its declared Content-Length
       before any of it is read, else as soon as it passes the limit
408    the body did not arrive within ``read_deadline`` seconds (``asgi_app`` only)
401    the signature does not verify, or the delivery id was already received
400    the body is not a delivery, or is of another wire version (the error says which
       side to upgrade)
404    no function of this app runs on the claim's event
409    a continue for a run this app does not hold live (``"resend": "claim"``): the
       server sends the whole claim at once
405    not a POST
500    anything unexpected (logged); the receiver itself never crashes
=====  ==============================================================================

Failures of the user's code are not errors here: they are a ``Failed`` transition,
answered with 200 like any other outcome.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Mapping, MutableMapping, Sequence
from typing import TYPE_CHECKING, Any

import anyio

from slayq.errors import ConfigError
from slayq.model import Continue, ErrorInfo, Failed, Transition
from slayq.runtime.limits import describe
from slayq.runtime.replay import Execution
from slayq.telemetry.logs import run_context
from slayq.telemetry.tracing import attempt_span
from slayq.transport.errors import BodyTooLargeError, SignatureError, WireError
from slayq.transport.live import DEFAULT_IDLE, DEFAULT_MAX_RUNS, LiveRun, LiveRuns
from slayq.transport.signing import (
    DEFAULT_TOLERANCE,
    DELIVERY_HEADER,
    ReplayGuard,
    Verifier,
)
from slayq.transport.wire import (
    DEFAULT_LIMITS,
    RAISE_LIMITS,
    WIRE_VERSION,
    BatchDelivery,
    ClaimDelivery,
    Limits,
    Single,
    batch_line,
    check_size,
    decode_delivery,
    encode_answer,
    error_body,
)

if TYPE_CHECKING:
    from slayq.model import Claim
    from slayq.runtime.registry import Registry

logger = logging.getLogger(__name__)

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
ASGIReceive = Callable[[], Awaitable[Message]]
ASGISend = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, ASGIReceive, ASGISend], Awaitable[None]]
Emit = Callable[[bytes], Awaitable[None]]

DEFAULT_READ_DEADLINE = 10.0
# A stalled client may still be sending: close rather than wait for the rest.
CLOSE = (b"connection", b"close")
# A batch's answer: lines, as they come (no length: chunked).
LINES = [(b"content-type", b"application/x-ndjson")]


class _Refused(Exception):
    """A request answered with an error before any run: its status and body."""

    def __init__(self, status: int, body: bytes) -> None:
        super().__init__(status)
        self.status = status
        self.body = body


class Receiver:
    """Runs deliveries of ``registry``'s functions, signed with one of ``secrets``.

    Each delivery runs at most ``max_new_steps`` new step handlers (the engine folds a
    following sleep, send or finish into the same answer), so the server commits every
    handler's result before the next one runs. ``read_deadline`` bounds, in seconds, how
    long ``asgi_app`` waits for a request's body, so a stalled upload cannot hold memory.
    Between the deliveries of an attempt, up to ``live_runs`` runs are kept live, each for
    at most ``live_idle`` idle seconds (0 runs: every delivery carries the whole memo).
    """

    def __init__(
        self,
        registry: Registry,
        secrets: Sequence[str],
        *,
        limits: Limits = DEFAULT_LIMITS,
        max_new_steps: int = 1,
        tolerance: float = DEFAULT_TOLERANCE,
        read_deadline: float = DEFAULT_READ_DEADLINE,
        live_runs: int = DEFAULT_MAX_RUNS,
        live_idle: float = DEFAULT_IDLE,
    ) -> None:
        if not read_deadline > 0:
            raise ConfigError(
                f"read_deadline must be a positive number of seconds, got {read_deadline!r}"
            )
        self.registry = registry
        self.limits = limits
        self.read_deadline = read_deadline
        self.max_new_steps = max_new_steps
        self.tolerance = tolerance
        self._verifier = Verifier(secrets, tolerance=tolerance)  # checks the secrets
        self._replays = ReplayGuard(tolerance)
        self.live = LiveRuns(max_runs=live_runs, idle=live_idle)

    async def receive(
        self, headers: Mapping[str, str], body: bytes, *, emit: Emit | None = None
    ) -> tuple[int, bytes]:
        """Answer one request: an HTTP status and a JSON body. Never raises ``Exception``.

        A batch is answered 200 with a line per delivery, in the order they are made:
        each is passed to ``emit`` as soon as it is made (and the body returned is
        empty), or, without ``emit``, all of them make the body. ``emit(b"")`` comes
        first, as soon as the batch is accepted: the answer can begin."""
        try:
            delivery = await self._open(headers, body)
            if not isinstance(delivery, BatchDelivery):
                return await self._serve(delivery, delivery.wire)
            lines: list[bytes] = []

            async def collect(line: bytes) -> None:
                if line:
                    lines.append(line)

            await self._serve_batch(delivery, emit or collect)
            return 200, b"".join(lines)
        except _Refused as refused:
            return refused.status, refused.body
        except Exception as exc:
            logger.exception("slayq receiver failed on a delivery")
            return 500, _unexpected(exc)

    async def _open(self, headers: Mapping[str, str], body: bytes) -> Single | BatchDelivery:
        """The delivery in a request that passes the checks, else ``_Refused``."""
        now = time.time()
        try:
            check_size(len(body), self.limits, what="delivery")
        except BodyTooLargeError as exc:
            raise _Refused(413, _error(str(exc))) from None
        try:
            self._verifier.verify(headers, body, now=now)
        except SignatureError as exc:
            logger.warning("refused a delivery: %s", exc.reason)
            raise _Refused(401, _error(exc.reason)) from None
        if not self._replays.first_sight(headers, now):
            delivery_id = {k.lower(): v for k, v in headers.items()}[DELIVERY_HEADER.lower()]
            logger.warning("refused a replayed delivery %s", delivery_id)
            reason = f"delivery {delivery_id} was already received; replays are refused"
            raise _Refused(401, _error(reason))
        try:
            return decode_delivery(body, limits=self.limits)
        except WireError as exc:
            raise _Refused(400, _error(str(exc))) from None

    async def _serve_batch(self, batch: BatchDelivery, emit: Emit) -> None:
        """Each delivery of ``batch`` in a task of its own; its line is emitted once its
        run stops."""
        emitting = anyio.Lock()
        await emit(b"")  # accepted: its runs start now, and may take long

        async def one(i: int, delivery: Single) -> None:
            try:
                status, answer = await self._serve(delivery, batch.wire)
            except Exception as exc:
                logger.exception("slayq receiver failed on a delivery of a batch")
                status, answer = 500, _unexpected(exc, wire=batch.wire)
            async with emitting:
                await emit(batch_line(i, status, answer))

        async with anyio.create_task_group() as group:
            for i, delivery in enumerate(batch.deliveries):
                group.start_soon(one, i, delivery)

    async def _serve(self, delivery: Single, wire: int) -> tuple[int, bytes]:
        """Drive the run of one delivery to its next stop; the answer in version ``wire``."""
        if isinstance(delivery, ClaimDelivery):
            claim = delivery.claim
            await self.live.discard(claim.lease.run_id)  # a new claim: any kept one is stale
            if claim.event not in self.registry.functions:
                logger.warning("delivery for unknown event %r", claim.event, extra=_extra(claim))
                return 404, _error(
                    f"no function of this app runs on event {claim.event!r} "
                    f"(known: {sorted(self.registry.functions)})",
                    wire=wire,
                )
            execution = Execution.start(self.registry, claim, max_new_steps=self.max_new_steps)
            memo_size = len(claim.memo)
        else:
            live = await self.live.take(delivery.run_id, delivery.token, delivery.memo_size)
            if live is None:
                logger.debug("run %s is not live here: asking for its claim", delivery.run_id)
                return 409, error_body(
                    f"run {delivery.run_id} is not live in this app process (it restarted, "
                    "another process holds it, or it was closed): send the whole claim",
                    wire=wire,
                    resend="claim",
                )
            claim, execution, memo_size = live.claim, live.execution, live.memo_size
        try:
            transition = await self._advance(claim, execution)
            keep = isinstance(transition.outcome, Continue) and self.live.enabled
            answer, keep = self._answer(claim, transition, keep=keep, wire=wire)
            if keep:
                await self.live.keep(LiveRun(claim, execution, memo_size + len(transition.steps)))
            else:
                await execution.aclose()
        except BaseException:
            with anyio.CancelScope(shield=True):
                await execution.aclose()
            raise
        return 200, answer

    async def _advance(self, claim: Claim, execution: Execution) -> Transition:
        """Drive the run to its next commit point, at the engine boundary: the run's
        fields on log records, its attempt's span."""
        with (
            run_context(claim.lease.run_id, claim.event, claim.queue, claim.attempt),
            attempt_span(claim) as span,
        ):
            transition = await execution.advance()
            span.ended(transition)
        logger.debug(
            "run %s: %s",
            claim.lease.run_id,
            type(transition.outcome).__name__,
            extra=_extra(claim),
        )
        return transition

    def _answer(
        self, claim: Claim, transition: Transition, *, keep: bool, wire: int
    ) -> tuple[bytes, bool]:
        """The answer's body, and whether the run is kept live (``keep``, unless the
        answer had to be replaced: one that cannot be encoded or is over the limit
        becomes a failure)."""
        try:
            answer = encode_answer(transition, live=keep, wire=wire)
        except WireError as exc:
            # A 500 here would be delivered again without spending an attempt, running
            # the handler again each time: answer a failure the server can commit.
            logger.error("run %s: %s", claim.lease.run_id, exc, extra=_extra(claim))
            failed = Failed(ErrorInfo(type="WireError", message=str(exc)))
            return encode_answer(Transition(steps=[], outcome=failed), wire=wire), False
        if len(answer) > self.limits.body_bytes:
            # Refused by the server, this answer would be re-run on every attempt: the
            # run cannot go on, so it fails for good now, saying why.
            failed = _too_large(transition, len(answer), self.limits)
            logger.error(
                "run %s: %s", claim.lease.run_id, failed.error.message, extra=_extra(claim)
            )
            return encode_answer(Transition(steps=[], outcome=failed), wire=wire), False
        return answer, keep


def asgi_app(receiver: Receiver) -> ASGIApp:
    """An ASGI app that answers POSTs (on any path) with ``receiver``.

    The body is read as raw bytes, since the signature covers them exactly. A body over
    the limit is answered 413 without being kept in memory. A batch's answer is streamed
    (chunked), a line per delivery as soon as it is made.
    """

    async def app(scope: Scope, receive: ASGIReceive, send: ASGISend) -> None:
        if scope["type"] == "lifespan":
            await _lifespan(receiver, receive, send)
            return
        if scope["type"] != "http":
            return
        started = False

        async def respond(status: int, body: bytes, *headers: tuple[bytes, bytes]) -> None:
            nonlocal started
            started = True
            await send(
                {
                    "type": "http.response.start",
                    "status": status,
                    "headers": [
                        (b"content-type", b"application/json"),
                        (b"content-length", str(len(body)).encode()),
                        *headers,
                    ],
                }
            )
            await send({"type": "http.response.body", "body": body})

        try:
            if scope["method"] != "POST":
                await respond(
                    405,
                    _error(f"{scope['method']} is not allowed: deliveries are POSTed"),
                    (b"allow", b"POST"),
                )
                return
            headers = _headers(scope)
            try:
                body = await _read_body_within(
                    receiver.read_deadline, receive, receiver.limits, headers.get("content-length")
                )
            except BodyTooLargeError as exc:
                await respond(413, _error(str(exc)))
                return
            except TimeoutError:
                logger.warning("cut off a delivery whose body stalled")
                message = f"the body was not received within {receiver.read_deadline:g} s"
                await respond(408, _error(message), CLOSE)
                return
            if body is None:
                return  # the client went away

            async def emit(line: bytes) -> None:
                nonlocal started
                if not started:
                    started = True
                    await send({"type": "http.response.start", "status": 200, "headers": LINES})
                if line:
                    await send({"type": "http.response.body", "body": line, "more_body": True})

            status, answer = await receiver.receive(headers, body, emit=emit)
            if started:  # a batch's lines: the end of them
                await send({"type": "http.response.body", "body": b""})
            else:
                await respond(status, answer)
        except Exception:
            logger.exception("slayq receiver app failed")
            if not started:
                await respond(500, _error("the slayq receiver failed unexpectedly"))

    return app


async def _lifespan(receiver: Receiver, receive: ASGIReceive, send: ASGISend) -> None:
    while True:
        message = await receive()
        if message["type"] == "lifespan.startup":
            await send({"type": "lifespan.startup.complete"})
        elif message["type"] == "lifespan.shutdown":
            await receiver.live.aclose()  # the kept runs' finally blocks run
            await send({"type": "lifespan.shutdown.complete"})
            return


async def _read_body_within(
    seconds: float, receive: ASGIReceive, limits: Limits, content_length: str | None
) -> bytes | None:
    """``_read_body``, raising TimeoutError if the body takes more than ``seconds``.

    Under asyncio, with its own timeout: anyio's ``fail_after`` cost ~5 us more per
    delivery (it looks up the event loop and opens a cancel scope), a few percent of the
    app's CPU per no-op run. Under another event loop (trio), with anyio's.
    """
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        with anyio.fail_after(seconds):
            return await _read_body(receive, limits, content_length)
    async with asyncio.timeout(seconds):
        return await _read_body(receive, limits, content_length)


def _headers(scope: Scope) -> dict[str, str]:
    """Request headers by lower-case name; repeated headers joined by commas, as in HTTP."""
    headers: dict[str, str] = {}
    for raw_name, raw_value in scope["headers"]:
        name, value = raw_name.decode("latin-1").lower(), raw_value.decode("latin-1")
        headers[name] = f"{headers[name]},{value}" if name in headers else value
    return headers


async def _read_body(
    receive: ASGIReceive, limits: Limits, content_length: str | None
) -> bytes | None:
    """The whole body, or None if the client disconnected.

    A body declared (Content-Length) or found to be over the limit is refused, and none
    of it is kept. One declared over twice the limit is refused before anything is read;
    up to that, the rest is read and dropped, so that a client still sending gets to read
    the 413 instead of a reset connection.
    """
    declared = int(content_length) if content_length and content_length.isdigit() else None
    if declared is not None and declared > 2 * limits.body_bytes:
        check_size(declared, limits, what="delivery")
    keep = declared is None or declared <= limits.body_bytes
    chunks: list[bytes] = []
    size = 0
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            return None
        chunk: bytes = message.get("body", b"")
        size += len(chunk)
        if keep and size <= limits.body_bytes:
            chunks.append(chunk)
        elif size > 2 * limits.body_bytes:
            break
        if not message.get("more_body", False):
            break
    check_size(
        max(size, declared or 0), limits, what="delivery", at_least=size > 2 * limits.body_bytes
    )
    return b"".join(chunks)


def _too_large(transition: Transition, size: int, limits: Limits) -> Failed:
    names = [record.name for record in transition.steps]
    what = (
        f"step {names[0]!r}"
        if len(names) == 1
        else f"steps {', '.join(map(repr, names))}"
        if names
        else "the run's outcome"
    )
    return Failed(
        ErrorInfo(
            type="BodyTooLargeError",
            message=f"the answer for {what} is {describe(size)} ({size} bytes), over the "
            f"app's limit of {describe(limits.body_bytes)} ({limits.body_bytes} bytes); the "
            f"run cannot go on. {RAISE_LIMITS}",
            step=names[-1] if names else None,
        )
    )


def _error(reason: str, *, wire: int = WIRE_VERSION) -> bytes:
    return error_body(reason, wire=wire)


def _unexpected(exc: Exception, *, wire: int = WIRE_VERSION) -> bytes:
    """The 500 answer to a delivery the receiver failed on (logged where it is caught)."""
    return _error(
        f"the slayq receiver failed unexpectedly ({type(exc).__name__}); see the app's log",
        wire=wire,
    )


def _extra(claim: Claim) -> dict[str, object]:
    return {"run_id": claim.lease.run_id, "event": claim.event, "queue": claim.queue}
