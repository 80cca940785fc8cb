"""Enrolling MFA factors in the user portal, by the signed-in user.

A user who already has a factor adds another only from a session that was itself signed in with
a factor: a stolen password alone must never be enough to add an attacker's authenticator (and
with it, a way into the admin portal). A user without any factor may enroll the first one from
a password session. Removing factors is left to administrators (management API), where the
policy table applies.
"""

from __future__ import annotations

import json
import secrets
from typing import Any

from service.adapters.errors import StoreConflict
from service.adapters.mfa import totp
from service.adapters.mfa import webauthn as wa
from service.adapters.sessions import Session
from service.domain.errors import Conflict, Forbidden, InvalidRequest
from service.domain.model import User
from service.signin import duo_settings, records
from service.signin.flows import Signin
from service.signin.records import USER_PORTAL, ClientInfo

TOTP_ISSUER = "adminlink"
PENDING_SECONDS = 600
PAIRING_TYPE = "adminlink-push-pairing"
WEBAUTHN_KINDS = {"webauthn_device": wa.PLATFORM, "security_key": wa.CROSS_PLATFORM}


def pairing_payload(server: str, organization_id: str, enrollment_token: str) -> str:
    """What the push device pairing's QR code carries (docs/portals.md): the app learns from one
    scan where to enroll (``server``: ADMINLINK_PUBLIC_URL) and the one-time token to present."""
    return json.dumps({"type": PAIRING_TYPE, "version": 1, "server": server, "organization_id": organization_id,
                       "enrollment_token": enrollment_token}, separators=(",", ":"))


def iso(moment: Any) -> str | None:
    return moment.isoformat() if moment is not None else None


class Enrollment:
    def __init__(self, signin: Signin) -> None:
        self.signin = signin
        self.services = signin.services

    async def _guard(self, session: Session, user: User) -> list[str]:
        async with self.services.read_only() as reads:
            factors = await reads.factors.enrolled(user.organization_id, user.id)
        if factors and session.factor in (None, "password"):
            raise Forbidden("mfa_session_required",
                            "sign in with one of your MFA factors before adding another")
        return factors

    def _actor_uow(self, user: User, client: ClientInfo) -> Any:
        return self.services.uow(records.actor_for(user.organization_id, USER_PORTAL, client, user=user, admin=None))

    async def overview(self, user: User) -> dict[str, Any]:
        org, uid = user.organization_id, user.id
        async with self.services.read_only() as reads:
            factors = await reads.factors.enrolled(org, uid)
            keys = await reads.webauthn.all_of_user(org, uid)
            devices = await reads.push_devices.all_of_user(org, uid)
            duo = await reads.duo.username(org, uid)
        return {
            "factors": factors,
            "webauthn": [{"id": k.id, "type": "webauthn_device" if k.attachment == wa.PLATFORM else "security_key",
                          "name": k.name, "aaguid": k.aaguid, "created": iso(k.created_at),
                          "last_used": iso(k.last_used_at)} for k in keys],
            "push": [{"id": d.id, "name": d.name, "algorithm": d.algorithm, "created": iso(d.created_at)}
                     for d in devices],
            "duo": {"username": duo} if duo else None,
        }

    # --- TOTP ----------------------------------------------------------------------------------

    async def totp_still_required(self, user: User) -> bool:
        """Whether the user must enroll TOTP before anything else in the user portal: an
        administrator required it (``mfa_required``: requiring or resetting TOTP sets it) and no
        TOTP is confirmed yet. A confirmed TOTP satisfies it; a reset asks for it anew."""
        if not user.mfa_required:
            return False
        async with self.services.read_only() as reads:
            return "totp" not in await reads.factors.enrolled(user.organization_id, user.id)

    async def totp_start(self, token: str, session: Session, user: User) -> dict[str, str]:
        """A new secret, shown once; it counts only once a code from it is confirmed."""
        if "totp" in await self._guard(session, user):
            raise Conflict("totp_already_enrolled", "TOTP is already enrolled")
        secret = totp.new_secret()
        await self.signin.pending.put("totp", token, {"secret": self.services.box.seal(secret)}, PENDING_SECONDS)
        return {"secret": secret, "otpauth_uri": totp.provisioning_uri(secret, user.email, TOTP_ISSUER)}

    async def totp_confirm(self, token: str, session: Session, user: User, code: str,
                           client: ClientInfo) -> dict[str, Any]:
        await self._guard(session, user)
        pending = await self.signin.pending.get("totp", token)
        if pending is None:
            raise InvalidRequest("enrollment_not_started", "start TOTP enrollment first")
        secret = self.services.box.open(pending["secret"])
        step = totp.matching_step(secret, code)
        if step is None:
            raise InvalidRequest("invalid_code", "this code does not match the new secret; check the clock")
        async with self._actor_uow(user, client) as uow:
            try:
                # The confirming code is spent: it cannot also sign in.
                await uow.totp.add(user.organization_id, user.id, pending["secret"], step)
                await uow.flush()
            except StoreConflict as exc:
                raise Conflict("totp_already_enrolled", "TOTP is already enrolled") from exc
            uow.collect(records.user_change(user, "totp"))
            await uow.commit()
        await self.signin.pending.take("totp", token)
        return {"factor": "totp", "enrolled": True}

    # --- WebAuthn ------------------------------------------------------------------------------

    async def webauthn_options(self, token: str, session: Session, user: User, factor: str) -> dict[str, Any]:
        attachment = WEBAUTHN_KINDS.get(factor)
        if attachment is None:
            raise InvalidRequest("invalid_field", "type must be webauthn_device or security_key")
        await self._guard(session, user)
        async with self.services.read_only() as reads:
            existing = [row.credential_id
                        for row in await reads.webauthn.all_of_user(user.organization_id, user.id)]
        display = " ".join(p for p in (user.firstname, user.lastname) if p) or user.username
        options, challenge = wa.registration_options(
            self.signin.rp, user_handle=user.id.encode(), user_name=user.email, display_name=display,
            attachment=attachment, exclude=existing)
        await self.signin.pending.put("webauthn", token, {"challenge": wa.encode_challenge(challenge),
                                                          "factor": factor}, PENDING_SECONDS)
        return {"type": factor, "options": options}

    async def webauthn_register(self, token: str, session: Session, user: User, credential: Any, name: str,
                                client: ClientInfo) -> dict[str, Any]:
        await self._guard(session, user)
        pending = await self.signin.pending.take("webauthn", token)
        if pending is None:
            raise InvalidRequest("enrollment_not_started", "ask for registration options first")
        factor = pending["factor"]
        try:
            new = wa.verify_registration(self.signin.rp, credential, wa.decode_challenge(pending["challenge"]),
                                         WEBAUTHN_KINDS[factor])
        except wa.CeremonyFailed as failure:
            raise InvalidRequest("webauthn_registration_failed", failure.reason) from failure
        async with self._actor_uow(user, client) as uow:
            if await uow.webauthn.registered(new.credential_id):
                raise Conflict("credential_already_registered", "this authenticator is already registered")
            try:
                row_id = await uow.webauthn.add(
                    user.organization_id, user.id, credential_id=new.credential_id,
                    public_key=new.public_key, sign_count=new.sign_count, transports=new.transports,
                    aaguid=new.aaguid, attachment=new.attachment, name=name or factor.replace("_", " "))
            except StoreConflict as exc:  # registered by a concurrent request meanwhile
                raise Conflict("credential_already_registered", "this authenticator is already registered") from exc
            uow.collect(records.user_change(user, "webauthn_credential", row_id))
            await uow.commit()
        return {"id": row_id, "type": factor, "name": name or factor.replace("_", " "), "aaguid": new.aaguid}

    # --- push and Duo --------------------------------------------------------------------------

    async def push_enrollment(self, session: Session, user: User) -> dict[str, Any]:
        """A one-time token the mobile app presents (signed by its new key) to enroll itself."""
        await self._guard(session, user)
        enrollment_token = secrets.token_urlsafe(32)
        await self.signin.pending.put("push", enrollment_token, {"organization_id": user.organization_id,
                                                                 "user_id": user.id}, PENDING_SECONDS)
        server = self.services.settings.public_url
        return {"enrollment_token": enrollment_token, "organization_id": user.organization_id,
                "expires_in": PENDING_SECONDS, "server": server,
                "pairing_payload": pairing_payload(server, user.organization_id, enrollment_token)}

    async def duo_enroll(self, session: Session, user: User, duo_username: str, client: ClientInfo) -> dict[str, Any]:
        await self._guard(session, user)
        if not duo_username.strip():
            raise InvalidRequest("invalid_field", "duo_username must not be empty")
        async with self._actor_uow(user, client) as uow:
            if await duo_settings.application(uow.duo_settings, uow.box, user.organization_id) is None:
                raise Conflict("duo_not_configured", "Duo is not configured for this organization")
            try:
                await uow.duo.add(user.organization_id, user.id, duo_username.strip())
                await uow.flush()
            except StoreConflict as exc:
                raise Conflict("duo_already_enrolled", "Duo is already enrolled") from exc
            uow.collect(records.user_change(user, "duo", duo_username.strip()))
            await uow.commit()
        return {"factor": "duo", "duo_username": duo_username.strip()}
