"""Checking one factor's proof against a challenge. Each check answers an ``Outcome``; what a
failure means for the account (lockout, records) is decided by the flow."""

from __future__ import annotations

import hmac
from dataclasses import dataclass
from typing import Any

from service.adapters.mfa import webauthn as wa
from service.adapters.mfa.duo import DuoGateway, DuoRefused
from service.signin import duo_settings
from service.signin.challenges import Challenge
from service.signin.errors import push_expired
from service.signin.lookup import Who
from service.signin.pushes import APPROVED, EXPIRED, PushRequest
from service.unit_of_work import UnitOfWork


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


async def check_totp(uow: UnitOfWork, who: Who, code: Any) -> Outcome:
    if not isinstance(code, str):
        return Outcome(False, "totp_malformed")
    if who.classic_admin:
        assert who.admin is not None
        accepted = await uow.totp.accept_admin_code(who.organization_id, who.admin.id, code)
    else:
        assert who.user is not None
        accepted = await uow.totp.accept_user_code(who.organization_id, who.user.id, code)
    return Outcome.passed() if accepted else Outcome(False, "totp_rejected")


async def check_assertion(uow: UnitOfWork, rp: wa.RelyingParty, org_id: str, user_id: str,
                          attachment: str, credential: Any, challenge: str) -> Outcome:
    """A WebAuthn assertion by one of the user's credentials of this attachment. The sign count
    is moved forward only if nobody moved it meanwhile, so a cloned authenticator racing the
    real one cannot both succeed."""
    credential_id = wa.credential_id_of(credential)
    if credential_id is None:
        return Outcome(False, "webauthn_malformed")
    row = await uow.webauthn.of_user(org_id, user_id, credential_id, attachment)
    if row is None:
        return Outcome(False, "webauthn_unknown_credential")
    try:
        new_count = wa.verify_assertion(rp, credential, wa.decode_challenge(challenge), row.public_key,
                                        int(row.sign_count))
    except wa.CeremonyFailed as failure:
        return Outcome(False, failure.code)
    if not await uow.webauthn.advance_sign_count(org_id, row.id, int(row.sign_count), new_count):
        return Outcome(False, "sign_count_regressed")
    return Outcome.passed()


def check_push(push: PushRequest, status: str) -> Outcome:
    if status == APPROVED:
        return Outcome.passed()
    if status == EXPIRED:
        return Outcome(False, push_expired().code, counts=False)
    return Outcome(False, "push_denied")


async def check_duo(uow: UnitOfWork, gateway: DuoGateway, challenge: Challenge,
                    proof: dict[str, Any]) -> Outcome:
    state, code = proof.get("state"), proof.get("duo_code")
    if not isinstance(state, str) or not isinstance(code, str) or not challenge.duo_state:
        return Outcome(False, "duo_malformed")
    if not hmac.compare_digest(state.encode(), challenge.duo_state.encode()):
        return Outcome(False, "duo_state_mismatch")
    assert challenge.user_id is not None and challenge.duo_nonce is not None
    app = await duo_settings.application(uow.duo_settings, uow.box, challenge.organization_id)
    username = await uow.duo.username(challenge.organization_id, challenge.user_id)
    if app is None or username is None:
        return Outcome(False, "duo_not_configured", counts=False)
    try:
        await gateway.confirm(app, code, username, challenge.duo_nonce)
    except DuoRefused:
        return Outcome(False, "duo_refused")
    return Outcome.passed()

