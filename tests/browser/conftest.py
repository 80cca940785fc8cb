"""Fixtures of the portal browser tests: the service on a port chosen before it starts (the
WebAuthn origin names it), a Playwright Chromium, and the management API to set the stage."""

from __future__ import annotations

import os
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from aiohttp.test_utils import TestClient
from playwright.async_api import Browser, async_playwright

from service import config
from service.app import create_app
from service.bootstrap import Services
from tests.browser.harness import CHROMIUM, FLAGS
from tests.conftest import Api, Org, free_port, suite_settings


@dataclass
class Site:
    base: str  # http://localhost:PORT, the WebAuthn origin
    client: TestClient
    api: Api


@pytest.fixture
def port() -> int:
    return free_port()


@pytest.fixture
def settings(database_url: str, tmp_path: Path, port: int) -> config.Settings:
    return suite_settings(database_url, tmp_path, webauthn_rp_id="localhost",
                          webauthn_origins=f"http://localhost:{port}", public_url=f"http://localhost:{port}")


@pytest.fixture
async def site(services: Services, org: Org, port: int, aiohttp_server: Any, aiohttp_client: Any) -> Site:
    server = await aiohttp_server(create_app(services), host="127.0.0.1", port=port)
    client = await aiohttp_client(server)
    return Site(f"http://localhost:{port}", client, Api(client, org.key))


HAVE_CHROMIUM = Path(CHROMIUM).exists()


@pytest.fixture
async def browser() -> AsyncIterator[Browser]:
    if not HAVE_CHROMIUM and not os.environ.get("ADMINLINK_TEST_REQUIRE_BROWSER"):
        pytest.skip("Debian's chromium is not installed (apt-get install chromium); CI installs it and "
                    "requires these tests")
    async with async_playwright() as playwright:
        launched = await playwright.chromium.launch(executable_path=CHROMIUM, args=FLAGS, headless=True)
        try:
            yield launched
        finally:
            await launched.close()
