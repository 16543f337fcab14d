"""Fixtures of the dashboard's route tests: a harness with runs in it, and a client."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from starlette.testclient import TestClient

from slayq.ui import app
from tests.unit.ui_fixtures import World, make_world


@pytest.fixture
def world() -> World:
    return make_world()


@pytest.fixture
def client(world: World) -> Iterator[TestClient]:
    with TestClient(app(world.harness.client.store)) as test_client:
        yield test_client
