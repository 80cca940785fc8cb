"""Fixtures the service tests share beyond tests/conftest.py."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from service.bootstrap import Services
from tests.service.ops_support import Worker


@pytest.fixture
async def workers(services: Services) -> AsyncIterator[Worker]:
    """A worker the test starts when it wants; stopped once its jobs are done."""
    worker = Worker(services)
    try:
        yield worker
    finally:
        await worker.stop()
