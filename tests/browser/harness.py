"""What the portal browser tests share: the service on a known port (WebAuthn needs its origin
before it starts), headless Debian Chromium driven by Playwright, Chrome's virtual
authenticators over a DevTools session, and screenshots kept in test-artifacts/."""

from __future__ import annotations

import asyncio
import json
import os
import time
import warnings
from pathlib import Path
from typing import Any

import pyotp
from playwright.async_api import BrowserContext, Page

CHROMIUM = "/usr/bin/chromium"
# "localhost" is a secure context and a valid WebAuthn RP ID; the rule keeps Chromium off ::1.
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
         "--disable-component-update", "--disable-sync", "--host-resolver-rules=MAP localhost 127.0.0.1"]
ARTIFACTS = Path(__file__).resolve().parents[2] / "test-artifacts"
USER_PASSWORD = "a long user password 1"
ADMIN_PASSWORD = "a long admin password 1"


AXE = Path(__file__).resolve().parent / "node_modules" / "axe-core" / "axe.min.js"
BLOCKING = ("serious", "critical")


async def shot(page: Page, name: str) -> None:
    """A screenshot of the page, and axe-core's accessibility check of it: no serious or
    critical violation. Each page's summary is kept beside its screenshot."""
    await asyncio.to_thread(ARTIFACTS.mkdir, exist_ok=True)
    await page.screenshot(path=str(ARTIFACTS / f"{name}.png"), full_page=True)
    await check_accessibility(page, name)


async def check_accessibility(page: Page, name: str) -> None:
    if not await asyncio.to_thread(AXE.exists):
        if os.environ.get("ADMINLINK_TEST_REQUIRE_BROWSER"):
            raise AssertionError(f"{AXE} is missing: npm ci --prefix tests/browser")
        warnings.warn("axe-core is not installed (npm ci --prefix tests/browser): accessibility not checked",
                      stacklevel=2)
        return
    source = await asyncio.to_thread(AXE.read_text)
    # Evaluated through DevTools, which the page's CSP (no inline script) does not govern.
    await page.evaluate(source)
    violations = await page.evaluate("""async () => (await axe.run(document, {resultTypes: ["violations"]}))
        .violations.map(v => ({id: v.id, impact: v.impact, help: v.help,
                               nodes: v.nodes.map(n => n.target.join(" "))}))""")
    summary = {"page": name, "url": page.url, "violations": violations}
    await asyncio.to_thread((ARTIFACTS / f"{name}.axe.json").write_text, json.dumps(summary, indent=2))
    blocking = [v for v in violations if v["impact"] in BLOCKING]
    assert not blocking, f"{name}: accessibility violations {json.dumps(blocking, indent=2)}"


async def virtual_authenticator(context: BrowserContext, page: Page, transport: str) -> tuple[Any, str]:
    """A CTAP2 authenticator that verifies its user: ``internal`` is a device authenticator
    (Touch ID, Windows Hello), ``usb`` a security key."""
    cdp = await context.new_cdp_session(page)
    await cdp.send("WebAuthn.enable", {"enableUI": False})
    added = await cdp.send("WebAuthn.addVirtualAuthenticator", {"options": {
        "protocol": "ctap2", "transport": transport, "hasResidentKey": True, "hasUserVerification": True,
        "isUserVerified": True, "automaticPresenceSimulation": True}})
    return cdp, added["authenticatorId"]


def code_after(secret: str, used: set[str]) -> str:
    """A TOTP code not used before in this test (a code once accepted is refused after)."""
    for offset in (0, 30, -30):
        code = pyotp.TOTP(secret).at(time.time() + offset)
        if code not in used:
            used.add(code)
            return code
    raise AssertionError("no unused TOTP code in the accepted window")


async def sign_in(page: Page, base: str, portal: str, email: str, password: str) -> None:
    await page.goto(f"{base}/{portal}/sign-in")
    await page.fill("#identifier", email)
    await page.fill("#password", password)
    await page.click("#sign-in")


async def totp_step(page: Page, code: str) -> None:
    await page.fill("#code", code)
    await page.click("#verify-totp")
