"""Handlers of the commands on a user's MFA: TOTP required or reset, WebAuthn credentials, push devices."""

from __future__ import annotations

from service.domain import commands as c
from service.domain.errors import Conflict, NotFound
from service.domain.events import Change, Recorded
from service.domain.model import User
from service.handlers.common import Handler, delete_user_credential, load_authorized_user, user_resource
from service.policy import Action
from service.unit_of_work import UnitOfWork


async def require_totp(cmd: c.RequireTotp, uow: UnitOfWork) -> User:
    user, _ = await load_authorized_user(uow, cmd.user_id, Action.TOTP_ENROLL_RESET, "user_update")
    if await uow.totp.exists(user.organization_id, user.id):
        raise Conflict("totp_already_enrolled", "the user already has TOTP; reset it to have it enrolled anew")
    _require_mfa(uow, user)
    await uow.commit()
    return user


async def reset_totp(cmd: c.ResetTotp, uow: UnitOfWork) -> User:
    user, _ = await load_authorized_user(uow, cmd.user_id, Action.TOTP_ENROLL_RESET, "user_update")
    if not await uow.totp.delete_of_user(user.organization_id, user.id):
        raise NotFound("totp_not_enrolled", "the user has no TOTP to reset")
    uow.collect(Recorded("user_update", user_resource(user), (Change("totp", None, None),)))
    if cmd.require:
        _require_mfa(uow, user)
    await uow.commit()
    return user


def _require_mfa(uow: UnitOfWork, user: User) -> None:
    """The user must enroll MFA (TOTP in the user portal, by confirming a code)."""
    if not user.mfa_required:
        uow.collect(Recorded("user_update", user_resource(user), (Change("mfa_required", False, True),)))
        user.mfa_required = True


async def set_mfa_required(cmd: c.SetMfaRequired, uow: UnitOfWork) -> User:
    action = Action.REQUIRE_MFA if cmd.required else Action.REMOVE_MFA_REQUIREMENT
    user, _ = await load_authorized_user(uow, cmd.user_id, action, "user_update")
    if user.mfa_required != cmd.required:
        uow.collect(Recorded("user_update", user_resource(user), (Change("mfa_required", user.mfa_required,
                                                                              cmd.required),)))
        user.mfa_required = cmd.required
        await uow.commit()
    return user


async def delete_webauthn_credential(cmd: c.DeleteWebauthnCredential, uow: UnitOfWork) -> None:
    await delete_user_credential(uow, cmd.user_id, Action.WEBAUTHN_CHANGE, uow.webauthn, cmd.credential_id,
                             "webauthn_credential")


async def delete_push_device(cmd: c.DeletePushDevice, uow: UnitOfWork) -> None:
    await delete_user_credential(uow, cmd.user_id, Action.PUSH_CHANGE, uow.push_devices, cmd.device_id, "push_device")


HANDLERS: dict[type[c.Command], Handler] = {
    c.RequireTotp: require_totp,
    c.ResetTotp: reset_totp,
    c.SetMfaRequired: set_mfa_required,
    c.DeleteWebauthnCredential: delete_webauthn_credential,
    c.DeletePushDevice: delete_push_device,
}
