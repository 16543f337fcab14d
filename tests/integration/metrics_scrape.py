"""Scraping ``/metrics`` over a socket and reading samples with prometheus_client's parser."""

from __future__ import annotations

from collections.abc import Callable

import anyio
import httpx
from prometheus_client.parser import text_string_to_metric_families

Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


async def scrape(url: str) -> Samples:
    async with httpx.AsyncClient() as http:
        response = await http.get(url, timeout=5)
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith("text/plain")
    samples: Samples = {}
    for family in text_string_to_metric_families(response.text):
        for sample in family.samples:
            samples[(sample.name, frozenset(sample.labels.items()))] = sample.value
    return samples


def value(samples: Samples, name: str, **labels: str) -> float:
    """The sample's value; 0 when it was never recorded (a counter not yet made)."""
    return samples.get((name, frozenset(labels.items())), 0.0)


async def settled(url: str, ready: Callable[[Samples], bool], seconds: float = 20) -> Samples:
    """Scrape until ``ready`` holds: a run reads finished a moment before its commit returns
    to the process that counts it."""
    with anyio.fail_after(seconds):
        while True:
            samples = await scrape(url)
            if ready(samples):
                return samples
            await anyio.sleep(0.05)
