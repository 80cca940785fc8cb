"""WebAuthn ceremonies with the ``webauthn`` package: options for the browser, and verification
of what the authenticator answered.

Device authenticators (platform attachment: Touch ID, Windows Hello, Android) and hardware
security keys (cross-platform attachment) are told apart by the attachment the registration
asked for, which the browser's answer must not contradict. User verification is always required.
"""

from __future__ import annotations

import json
import secrets
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from webauthn import (
    generate_authentication_options,
    generate_registration_options,
    options_to_json,
    verify_authentication_response,
    verify_registration_response,
)
from webauthn.helpers import (
    base64url_to_bytes,
    bytes_to_base64url,
    parse_attestation_object,
    parse_authenticator_data,
)
from webauthn.helpers.structs import (
    AttestationConveyancePreference,
    AttestationFormat,
    AuthenticatorAttachment,
    AuthenticatorSelectionCriteria,
    AuthenticatorTransport,
    PublicKeyCredentialDescriptor,
    ResidentKeyRequirement,
    UserVerificationRequirement,
)

from service.config import Settings

PLATFORM = "platform"
CROSS_PLATFORM = "cross-platform"
TIMEOUT_MS = 120_000
KNOWN_TRANSPORTS = frozenset(t.value for t in AuthenticatorTransport)


class CeremonyFailed(Exception):
    """The authenticator's answer does not verify. ``reason`` is for logs; ``code`` for records."""

    def __init__(self, reason: str, code: str = "webauthn_failed") -> None:
        super().__init__(reason)
        self.reason = reason
        self.code = code


@dataclass(frozen=True)
class RelyingParty:
    id: str
    name: str
    origins: tuple[str, ...]
    # Trusted attestation roots (PEM) for security keys; empty: attestation chains are not pinned.
    attestation_roots: tuple[bytes, ...] = ()

    @classmethod
    def from_settings(cls, settings: Settings) -> RelyingParty:
        roots: tuple[bytes, ...] = ()
        if settings.webauthn_attestation_roots is not None:
            roots = tuple(_split_pem(settings.webauthn_attestation_roots.read_bytes()))
        return cls(settings.webauthn_rp_id, settings.webauthn_rp_name, settings.webauthn_origins, roots)


def _split_pem(bundle: bytes) -> list[bytes]:
    end = b"-----END CERTIFICATE-----"
    return [part.strip() + b"\n" + end + b"\n" for part in bundle.split(end) if b"BEGIN CERTIFICATE" in part]


@dataclass(frozen=True)
class NewCredential:
    credential_id: str  # base64url, as browsers name it
    public_key: bytes  # COSE
    sign_count: int
    aaguid: str
    transports: list[str]
    attachment: str


def registration_options(rp: RelyingParty, *, user_handle: bytes, user_name: str, display_name: str,
                         attachment: str, exclude: Sequence[str]) -> tuple[dict[str, Any], bytes]:
    """Options for ``navigator.credentials.create()`` and the challenge to expect back.
    Device credentials are discoverable (resident), so they can also sign in without a username."""
    challenge = secrets.token_bytes(32)
    options = generate_registration_options(
        rp_id=rp.id, rp_name=rp.name, user_id=user_handle, user_name=user_name,
        user_display_name=display_name, challenge=challenge, timeout=TIMEOUT_MS,
        attestation=AttestationConveyancePreference.DIRECT,
        authenticator_selection=AuthenticatorSelectionCriteria(
            authenticator_attachment=AuthenticatorAttachment(attachment),
            resident_key=ResidentKeyRequirement.REQUIRED if attachment == PLATFORM
            else ResidentKeyRequirement.DISCOURAGED,
            user_verification=UserVerificationRequirement.REQUIRED,
        ),
        exclude_credentials=[PublicKeyCredentialDescriptor(id=base64url_to_bytes(c)) for c in exclude],
    )
    return json.loads(options_to_json(options)), challenge


def verify_registration(rp: RelyingParty, credential: Any, challenge: bytes, attachment: str) -> NewCredential:
    if not isinstance(credential, dict):
        raise CeremonyFailed("credential must be a JSON object")
    reported = credential.get("authenticatorAttachment")
    if reported is not None and reported != attachment:
        raise CeremonyFailed(f"a {reported} authenticator answered a {attachment} registration")
    roots = list(rp.attestation_roots) if attachment == CROSS_PLATFORM else []
    try:
        verified = verify_registration_response(
            credential=credential, expected_challenge=challenge, expected_rp_id=rp.id,
            expected_origin=list(rp.origins), require_user_verification=True,
            pem_root_certs_bytes_by_fmt={AttestationFormat.PACKED: roots, AttestationFormat.FIDO_U2F: roots},
        )
        if roots and not parse_attestation_object(verified.attestation_object).att_stmt.x5c:
            raise CeremonyFailed("this security key's attestation does not chain to a trusted root")
    except CeremonyFailed:
        raise
    except Exception as exc:  # the package raises many kinds on malformed input; all mean "refused"
        raise CeremonyFailed(f"registration does not verify: {exc}") from exc
    transports = credential.get("response", {}).get("transports") or []
    return NewCredential(
        credential_id=bytes_to_base64url(verified.credential_id),
        public_key=verified.credential_public_key,
        sign_count=verified.sign_count,
        aaguid=verified.aaguid,
        transports=[t for t in transports if isinstance(t, str) and t in KNOWN_TRANSPORTS],
        attachment=attachment,
    )


def authentication_options(rp: RelyingParty, allow: Sequence[tuple[str, Sequence[str]]]
                           ) -> tuple[dict[str, Any], bytes]:
    """Options for ``navigator.credentials.get()``; an empty ``allow`` lets the authenticator
    offer its discoverable credentials (passwordless sign-in)."""
    challenge = secrets.token_bytes(32)
    options = generate_authentication_options(
        rp_id=rp.id, challenge=challenge, timeout=TIMEOUT_MS,
        allow_credentials=[
            PublicKeyCredentialDescriptor(id=base64url_to_bytes(cid),
                                          transports=[AuthenticatorTransport(t) for t in transports] or None)
            for cid, transports in allow
        ],
        user_verification=UserVerificationRequirement.REQUIRED,
    )
    return json.loads(options_to_json(options)), challenge


def verify_assertion(rp: RelyingParty, credential: Any, challenge: bytes, public_key: bytes,
                     sign_count: int) -> int:
    """Verifies the signature, the challenge, the origin, user verification and that the sign
    count moved forward; returns the new sign count."""
    try:
        verified = verify_authentication_response(
            credential=credential, expected_challenge=challenge, expected_rp_id=rp.id,
            expected_origin=list(rp.origins), credential_public_key=public_key,
            credential_current_sign_count=sign_count, require_user_verification=True,
        )
    except Exception as exc:  # malformed input and failed checks alike are a refusal
        code = "sign_count_regressed" if _count_regressed(credential, sign_count) else "webauthn_failed"
        raise CeremonyFailed(f"assertion does not verify: {exc}", code) from exc
    return int(verified.new_sign_count)


def _count_regressed(credential: Any, stored: int) -> bool:
    """Whether the answer's sign count did not move past the stored one: a sign of a cloned
    authenticator, worth telling apart in the records."""
    try:
        data = base64url_to_bytes(credential["response"]["authenticatorData"])
        count = parse_authenticator_data(data).sign_count
    except Exception:  # a malformed answer is simply not a regression
        return False
    return (count > 0 or stored > 0) and count <= stored


def credential_id_of(credential: Any) -> str | None:
    """The credential id a browser's answer names, if it is well formed."""
    if not isinstance(credential, dict):
        return None
    value = credential.get("id")
    return value if isinstance(value, str) and 0 < len(value) <= 1400 else None


def user_handle_of(credential: Any) -> str | None:
    response = credential.get("response") if isinstance(credential, dict) else None
    handle = response.get("userHandle") if isinstance(response, dict) else None
    if not isinstance(handle, str):
        return None
    try:
        return base64url_to_bytes(handle).decode()
    except (ValueError, UnicodeDecodeError):
        return None


def encode_challenge(challenge: bytes) -> str:
    return bytes_to_base64url(challenge)


def decode_challenge(value: str) -> bytes:
    return base64url_to_bytes(value)
