"""What the portal browser tests share: the service on a known port (WebAuthn needs its origin
before it starts), headless Debian Chromium driven by Playwright, Chrome's virtual
authenticators over a DevTools session, and screenshots kept in test-artifacts/."""

from __future__ import annotations

import asyncio
import time
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


async def shot(page: Page, name: str) -> None:
    await asyncio.to_thread(ARTIFACTS.mkdir, exist_ok=True)
    await page.screenshot(path=str(ARTIFACTS / f"{name}.png"), full_page=True)


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
    await page.fill("#email", email)
    await page.fill("#password", password)
    await page.click("#sign-in")


async def totp_step(page: Page, code: str) -> None:
    await page.fill("#code", code)
    await page.click("#verify-totp")
