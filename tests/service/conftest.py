"""Fixtures the service tests share beyond tests/conftest.py."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from service.bootstrap import Services
from tests.fakes.duo_server import FakeDuo
from tests.service.ops_support import Worker


@pytest.fixture
async def workers(services: Services) -> AsyncIterator[Worker]:
    """A worker the test starts when it wants; stopped once its jobs are done."""
    worker = Worker(services)
    try:
        yield worker
    finally:
        await worker.stop()


@pytest.fixture
async def duo(tmp_path: Path) -> AsyncIterator[FakeDuo]:
    """The local Duo server (tests/fakes/duo_server.py), for tests that configure Duo."""
    server = FakeDuo(tmp_path)
    await server.start()
    yield server
    await server.stop()
