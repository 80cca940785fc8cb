"""Known devices: a signed cookie that a client earns by completing a sign-in with MFA, and that
makes it a *familiar* client of that identity from then on (docs/signin.md, "Familiar and
unfamiliar clients").

Each identity has its own cookie, so one browser can be familiar to several identities:

    name:  adminlink_device_<tag>   tag = HMAC(key, "name" + subject), 16 hex digits
    value: <issued unix seconds>.<HMAC(key, "v1" + subject + issued), base64url>

The key is derived from the service's secret key for this purpose only. The subject names the
identity (its organization and id), so a cookie copied to another identity's name, altered,
signed with another key or older than its lifetime is not recognised. Nothing secret is in the
cookie, and nothing is stored on the server: an unrecognised cookie is simply ignored.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import time
from collections.abc import Mapping

from service.adapters.crypto import constant_time_equal, derive_key
from service.signin.lookup import Who

COOKIE_PREFIX = "adminlink_device_"
COOKIE_PATH = "/"  # the sign-in API (/auth/) and the portals' sign-in pages (/portal/, /admin/)
MAX_COOKIES = 20  # a request's device cookies looked at, at most: anything beyond is noise
CLOCK_SKEW_SECONDS = 300


def subject(who: Who) -> str:
    """The identity whose credentials sign in: the user (also for an admin linked to it), else the
    classic admin."""
    if who.user is not None:
        return f"user:{who.organization_id}:{who.user.id}"
    assert who.admin is not None
    return f"admin:{who.organization_id}:{who.admin.id}"


class KnownDevices:
    def __init__(self, secret_key: bytes, lifetime_seconds: int) -> None:
        self._key = derive_key(secret_key, b"adminlink known device")
        self.lifetime = lifetime_seconds

    def _mac(self, *parts: str) -> bytes:
        return hmac.new(self._key, "\n".join(parts).encode(), hashlib.sha256).digest()

    def cookie_name(self, subject: str) -> str:
        return COOKIE_PREFIX + self._mac("name", subject).hex()[:16]

    def _signature(self, subject: str, issued: str) -> str:
        return base64.urlsafe_b64encode(self._mac("v1", subject, issued)).decode().rstrip("=")

    def issue(self, subject: str, now: float | None = None) -> tuple[str, str]:
        """The cookie (name, value) that makes this client familiar to ``subject``."""
        issued = str(int(time.time() if now is None else now))
        return self.cookie_name(subject), f"{issued}.{self._signature(subject, issued)}"

    def recognises(self, cookies: Mapping[str, str], subject: str, now: float | None = None) -> bool:
        value = cookies.get(self.cookie_name(subject))
        if not value:
            return False
        issued, _, signature = value.partition(".")
        if not value.isascii() or not issued.isdigit() or len(issued) > 12:
            return False
        age = (time.time() if now is None else now) - int(issued)
        if not -CLOCK_SKEW_SECONDS <= age < self.lifetime:
            return False
        return constant_time_equal(signature, self._signature(subject, issued))


def device_cookies(cookies: Mapping[str, str]) -> tuple[tuple[str, str], ...]:
    """The request's known-device cookies (a bounded number of short ones), as ClientInfo keeps them."""
    found = [(name, value) for name, value in cookies.items()
             if name.startswith(COOKIE_PREFIX) and len(name) <= 64 and len(value) <= 200]
    return tuple(found[:MAX_COOKIES])
