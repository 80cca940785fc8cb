"""Checking one factor's proof against a challenge. Each check answers an ``Outcome``; what a
failure means for the account (lockout, records) is decided by the flow."""

from __future__ import annotations

import hmac
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncSession

from service.adapters import orm
from service.adapters.crypto import SecretBox
from service.adapters.mfa import totp
from service.adapters.mfa import webauthn as wa
from service.adapters.mfa.duo import DuoGateway, DuoRefused
from service.domain.model import now
from service.signin import duo_settings
from service.signin.challenges import Challenge
from service.signin.errors import push_expired
from service.signin.lookup import Who
from service.signin.pushes import APPROVED, EXPIRED, PushRequest


@dataclass(frozen=True)
class Outcome:
    ok: bool
    record_code: str = "invalid_credentials"  # what the record says; the answer stays generic
    counts: bool = True  # whether the failure counts toward lockout

    @classmethod
    def passed(cls) -> Outcome:
        return cls(True, "")


def attachment_for(factor: str) -> str:
    return wa.CROSS_PLATFORM if factor == "security_key" else wa.PLATFORM


async def check_totp(session: AsyncSession, box: SecretBox, who: Who, code: Any) -> Outcome:
    if not isinstance(code, str):
        return Outcome(False, "totp_malformed")
    if who.classic_admin:
        assert who.admin is not None
        accepted = await totp.accept_admin_code(session, box, who.organization_id, who.admin.id, code)
    else:
        assert who.user is not None
        accepted = await totp.accept_user_code(session, box, who.organization_id, who.user.id, code)
    return Outcome.passed() if accepted else Outcome(False, "totp_rejected")


async def check_assertion(session: AsyncSession, rp: wa.RelyingParty, org_id: str, user_id: str,
                          attachment: str, credential: Any, challenge: str) -> Outcome:
    """A WebAuthn assertion by one of the user's credentials of this attachment. The sign count
    is moved forward only if nobody moved it meanwhile, so a cloned authenticator racing the
    real one cannot both succeed."""
    table = orm.webauthn_credentials
    credential_id = wa.credential_id_of(credential)
    if credential_id is None:
        return Outcome(False, "webauthn_malformed")
    row = (await session.execute(sa.select(table).where(
        table.c.organization_id == org_id, table.c.user_id == user_id,
        table.c.credential_id == credential_id, table.c.attachment == attachment))).one_or_none()
    if row is None:
        return Outcome(False, "webauthn_unknown_credential")
    try:
        new_count = wa.verify_assertion(rp, credential, wa.decode_challenge(challenge), row.public_key,
                                        int(row.sign_count))
    except wa.CeremonyFailed as failure:
        return Outcome(False, failure.code)
    moved = await session.execute(
        sa.update(table).where(table.c.organization_id == org_id, table.c.id == row.id,
                               table.c.sign_count == row.sign_count)
        .values(sign_count=new_count, last_used_at=now()))
    if int(moved.rowcount or 0) != 1:  # type: ignore[attr-defined]
        return Outcome(False, "sign_count_regressed")
    return Outcome.passed()


def check_push(push: PushRequest, status: str) -> Outcome:
    if status == APPROVED:
        return Outcome.passed()
    if status == EXPIRED:
        return Outcome(False, push_expired().code, counts=False)
    return Outcome(False, "push_denied")


async def check_duo(session: AsyncSession, box: SecretBox, gateway: DuoGateway, challenge: Challenge,
                    proof: dict[str, Any]) -> Outcome:
    state, code = proof.get("state"), proof.get("duo_code")
    if not isinstance(state, str) or not isinstance(code, str) or not challenge.duo_state:
        return Outcome(False, "duo_malformed")
    if not hmac.compare_digest(state.encode(), challenge.duo_state.encode()):
        return Outcome(False, "duo_state_mismatch")
    assert challenge.user_id is not None and challenge.duo_nonce is not None
    app = await duo_settings.application(session, box, challenge.organization_id)
    username = await duo_username(session, challenge.organization_id, challenge.user_id)
    if app is None or username is None:
        return Outcome(False, "duo_not_configured", counts=False)
    try:
        await gateway.confirm(app, code, username, challenge.duo_nonce)
    except DuoRefused:
        return Outcome(False, "duo_refused")
    return Outcome.passed()


async def duo_username(session: AsyncSession, org_id: str, user_id: str) -> str | None:
    table = orm.duo_enrollments
    return await session.scalar(sa.select(table.c.duo_username).where(
        table.c.organization_id == org_id, table.c.user_id == user_id))
