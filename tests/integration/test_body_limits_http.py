"""Unauthenticated uploads over a real socket: refused on their declared size, cut off when
they stall. The app's receiver and the server's ingest endpoint are held to the same rules."""

from __future__ import annotations

import socket
import time
from collections import Counter
from collections.abc import Iterator

import pytest

from slayq.runtime.clock import VirtualClock
from slayq.runtime.registry import Registry
from slayq.server.http import create_app
from slayq.store.memory import MemoryStore
from slayq.transport import Limits, Receiver, asgi_app
from tests.integration.test_receiver_http import SECRET, app_functions, serve

LIMIT = 64 * 1024


def request_head(path: str, length: int) -> bytes:
    return (
        f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
        f"Content-Length: {length}\r\n\r\n"
    ).encode()


def answer_to(url: str, path: str, length: int, body: bytes, *, wait: float) -> tuple[bytes, float]:
    """Send a request head declaring ``length`` bytes, then only ``body``; return what the
    server answered within ``wait`` seconds, and after how long."""
    host, port = url.removeprefix("http://").split("/")[0].split(":")
    with socket.create_connection((host, int(port)), timeout=wait) as sock:
        started = time.monotonic()
        sock.sendall(request_head(path, length) + body)
        answer = b""
        try:
            while chunk := sock.recv(65536):
                answer += chunk
                if b"\r\n\r\n" in answer and answer.endswith(b"}"):
                    break
        except TimeoutError:
            pass
        return answer, time.monotonic() - started


def status_of(answer: bytes) -> int:
    assert answer.startswith(b"HTTP/1.1 "), answer[:100]
    return int(answer.split(b" ")[1])


@pytest.fixture
def receiver_url() -> Iterator[str]:
    receiver = Receiver(
        Registry(app_functions(Counter())),
        [SECRET],
        limits=Limits(body_bytes=LIMIT),
        read_deadline=0.5,
    )
    with serve(asgi_app(receiver)) as url:
        yield url


@pytest.fixture
def ingest_url() -> Iterator[str]:
    app = create_app(
        MemoryStore(VirtualClock()), [SECRET], limits=Limits(body_bytes=LIMIT), read_deadline=0.5
    )
    with serve(app) as url:
        yield url.removesuffix("/api/slayq")


def test_the_receiver_refuses_a_declared_length_over_its_limit_without_reading_the_body(
    receiver_url: str,
) -> None:
    answer, _ = answer_to(receiver_url, "/api/slayq", 100 * 1024 * 1024, b"", wait=5)
    assert status_of(answer) == 413
    assert b"over the limit of 64.0 KiB" in answer


def test_the_receiver_cuts_off_a_body_that_stalls(receiver_url: str) -> None:
    answer, took = answer_to(receiver_url, "/api/slayq", 1000, b'{"lease": ', wait=5)
    assert status_of(answer) == 408
    assert b"not received within 0.5 s" in answer
    assert took < 3


def test_the_ingest_endpoint_refuses_a_declared_length_over_its_limit(ingest_url: str) -> None:
    answer, _ = answer_to(ingest_url, "/ingest/send-events", 100 * 1024 * 1024, b"", wait=5)
    assert status_of(answer) == 413


def test_the_ingest_endpoint_cuts_off_a_body_that_stalls(ingest_url: str) -> None:
    answer, took = answer_to(ingest_url, "/ingest/send-events", 1000, b'{"events": ', wait=5)
    assert status_of(answer) == 408
    assert b"not received within 0.5 s" in answer
    assert took < 3
