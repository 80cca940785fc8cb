"""Webhook signatures: the Standard Webhooks scheme and BambooHR's own headers, both checked by
our own code (HMAC-SHA256 from the standard library), so that no library's release can change an
answer. Every way a signature can be wrong is a 400 or a 401 with a stable code, never a 500;
every comparison is constant-time.

- 400 ``missing_signature_headers``: no signature headers at all, or some of them missing.
- 400 ``malformed_signature_headers``: headers present but not of the scheme's shape.
- 400 ``invalid_encoding``: the body is not UTF-8 (the scheme signs text).
- 401 ``timestamp_out_of_tolerance``: the signed timestamp is more than 5 minutes off our clock.
- 401 ``invalid_signature``: no signature matches any secret the integration accepts.
"""

from __future__ import annotations

import base64
import binascii
import functools
import hashlib
import hmac
import re
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime

TOLERANCE_SECONDS = 5 * 60  # the Standard Webhooks tolerance, used for BambooHR's timestamp too
TIMESTAMP_OFF = "webhook-timestamp is more than 5 minutes away from the receiver's clock"
MAX_MESSAGE_ID = 200
MAX_SIGNATURE_HEADER = 4096
NOT_V1_BASE64 = "webhook-signature must be space-separated \"v1,<base64>\" signatures"
# "v1,<base64>" entries separated by spaces; other versions are allowed and ignored.
SIGNATURE_ENTRY = re.compile(r"^v[0-9a-z]+,[A-Za-z0-9+/=_-]+$")
BAMBOO_SIGNATURE = "X-BambooHR-Signature"
BAMBOO_TIMESTAMP = "X-BambooHR-Timestamp"


class SignatureError(Exception):
    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message


def _bad(code: str, message: str) -> SignatureError:
    return SignatureError(400, code, message)


def _refused(code: str, message: str) -> SignatureError:
    return SignatureError(401, code, message)


def verify(provider: str, secrets: Sequence[str], headers: Mapping[str, str], body: bytes) -> str | None:
    """Checks the delivery against the integration's secrets (the current one first, then one
    still in its rotation grace). Returns the Standard Webhooks message id, if there is one."""
    if headers.get("webhook-signature") is not None or headers.get("webhook-id") is not None:
        return verify_standard(secrets, headers, body)
    if provider == "bamboohr" and headers.get(BAMBOO_SIGNATURE) is not None:
        verify_bamboohr(secrets, headers, body)
        return None
    raise _bad("missing_signature_headers", "webhook-id, webhook-timestamp and webhook-signature are required")


# --- Standard Webhooks --------------------------------------------------------------------------


def verify_standard(secrets: Sequence[str], headers: Mapping[str, str], body: bytes) -> str:
    message_id, timestamp, signature = (headers.get(h) for h in
                                        ("webhook-id", "webhook-timestamp", "webhook-signature"))
    if not (message_id and timestamp and signature):
        raise _bad("missing_signature_headers", "webhook-id, webhook-timestamp and webhook-signature are required")
    given = _check_shape(message_id, timestamp, signature)
    _require_utf8(body)  # the scheme signs text
    signed = f"{message_id}.{timestamp}.".encode() + body
    for secret in secrets:
        if _matches(secret, signed, given):
            return message_id
    raise _refused("invalid_signature", "no signature matches this integration's secret")


def _require_utf8(body: bytes) -> None:
    """Before the signature: a body that is not UTF-8 is invalid_encoding whoever signed it."""
    try:
        body.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise _bad("invalid_encoding", "the body must be UTF-8") from exc


def _check_shape(message_id: str, timestamp: str, signature: str) -> list[bytes]:
    """Refuses headers not of the scheme's shape; returns the decoded v1 signatures."""
    if len(message_id) > MAX_MESSAGE_ID or not message_id.isprintable():
        raise _bad("malformed_signature_headers", f"webhook-id must be at most {MAX_MESSAGE_ID} printable characters")
    if not timestamp.isascii() or not timestamp.isdigit() or len(timestamp) > 12:
        raise _bad("malformed_signature_headers", "webhook-timestamp must be whole seconds since the epoch")
    # A date past the year 9999 is too far off, not malformed.
    if abs(datetime.now(UTC).timestamp() - int(timestamp)) > TOLERANCE_SECONDS:
        raise _refused("timestamp_out_of_tolerance", TIMESTAMP_OFF)
    entries = signature.split(" ")
    if len(signature) > MAX_SIGNATURE_HEADER or not all(SIGNATURE_ENTRY.match(e) for e in entries):
        raise _bad("malformed_signature_headers", NOT_V1_BASE64)
    try:
        return [base64.b64decode(value, validate=True)
                for version, value in (e.split(",", 1) for e in entries) if version == "v1"]
    except binascii.Error as exc:
        raise _bad("malformed_signature_headers", NOT_V1_BASE64) from exc


@functools.lru_cache(maxsize=1024)
def _signing_key(secret: str) -> bytes | None:
    """The HMAC key of a ``whsec_<base64>`` secret (the prefix is optional), or None for a secret
    that is not base64, such as a BambooHR key: it signs no Standard Webhook."""
    try:
        key = base64.b64decode(secret.removeprefix("whsec_"), validate=True)
    except binascii.Error:
        return None
    return key or None


def _matches(secret: str, signed: bytes, given: list[bytes]) -> bool:
    key = _signing_key(secret)
    if key is None:
        return False
    expected = hmac.new(key, signed, hashlib.sha256).digest()
    # Every entry is compared, so the time taken does not tell which one matched.
    return sum(hmac.compare_digest(expected, signature) for signature in given) > 0


# --- BambooHR -------------------------------------------------------------------------------------


def verify_bamboohr(secrets: Sequence[str], headers: Mapping[str, str], body: bytes) -> None:
    """BambooHR signs ``body + X-BambooHR-Timestamp`` with HMAC-SHA256 under the webhook's private
    key (here: the integration's secret as shown), hex encoded in X-BambooHR-Signature."""
    signature, timestamp = headers.get(BAMBOO_SIGNATURE, ""), headers.get(BAMBOO_TIMESTAMP, "")
    if not signature or not timestamp:
        raise _bad("missing_signature_headers", f"{BAMBOO_SIGNATURE} and {BAMBOO_TIMESTAMP} are required")
    if len(signature) != 64 or not all(c in "0123456789abcdefABCDEF" for c in signature):
        raise _bad("malformed_signature_headers", f"{BAMBOO_SIGNATURE} must be a hex SHA-256 HMAC")
    _check_bamboo_time(timestamp)
    _require_utf8(body)
    signed = body + timestamp.encode()
    given = signature.lower().encode()
    for secret in secrets:
        expected = hmac.new(secret.encode(), signed, hashlib.sha256).hexdigest().encode()
        if hmac.compare_digest(expected, given):
            return
    raise _refused("invalid_signature", "no signature matches this integration's secret")


def _check_bamboo_time(timestamp: str) -> None:
    try:
        if timestamp.isascii() and timestamp.isdigit() and len(timestamp) <= 12:
            moment = datetime.fromtimestamp(int(timestamp), UTC)
        else:
            moment = datetime.fromisoformat(timestamp)
            moment = moment if moment.tzinfo else moment.replace(tzinfo=UTC)
    except (ValueError, OverflowError, OSError) as exc:
        raise _bad("malformed_signature_headers", f"{BAMBOO_TIMESTAMP} is not a timestamp") from exc
    if abs((datetime.now(UTC) - moment).total_seconds()) > TOLERANCE_SECONDS:
        raise _refused("timestamp_out_of_tolerance",
                       f"{BAMBOO_TIMESTAMP} is more than 5 minutes away from the receiver's clock")
