"""Integrations: SCIM providers (bearer token) and HR / directory senders (signed webhooks).
Each acts with an admin role and a name of its own. Credentials are shown once."""

from __future__ import annotations

import base64
import re
import secrets
from datetime import timedelta
from typing import Any

from service.adapters.crypto import token_hash
from service.domain import commands as c
from service.domain.errors import Conflict, InvalidRequest, NotFound
from service.domain.events import Change, Recorded, Resource
from service.domain.model import now
from service.handlers.common import Handler, authorize
from service.policy import Action
from service.unit_of_work import UnitOfWork
from service.views import iso

KINDS = ("scim", "hr", "directory")
DELETE_MODES = ("suspend", "delete")
PROVIDERS = {
    "scim": ("generic", "okta", "entra", "onelogin"),
    "hr": ("generic", "bamboohr", "personio", "workday", "rippling"),
    "directory": ("generic",),
}
# After a rotation the previous webhook secret keeps working this long, so senders can switch.
ROTATION_GRACE = timedelta(hours=24)


def new_webhook_secret() -> str:
    return "whsec_" + base64.b64encode(secrets.token_bytes(32)).decode()


def new_scim_token() -> str:
    return "scim_" + secrets.token_urlsafe(32)


def resource(row: Any) -> Resource:
    return Resource("integration", row.id, username=row.name)


def view(row: Any) -> dict[str, Any]:
    return {
        "id": row.id, "kind": row.kind, "provider": row.provider, "name": row.name, "role": row.role.value,
        "delete_mode": row.delete_mode,
        "created": iso(row.created_at), "rotated": iso(row.rotated_at),
    }


async def _load(uow: UnitOfWork, integration_id: str) -> Any:
    row = await uow.integrations.get(uow.actor.organization_id, integration_id)
    if row is None:
        raise NotFound("integration_not_found", "no such integration")
    return row


# BambooHR generates each webhook's private key itself and shows it to its admin once: such an
# integration can be given that key instead of getting one of ours.
SENDER_KEYS = frozenset({"bamboohr"})
SENDER_KEY = re.compile(r"^[\x21-\x7e]{16,200}$")  # printable ASCII, no spaces; sealed, it fits its column


def _credential(kind: str, provider: str, given: str | None) -> tuple[str | None, dict[str, Any]]:
    """The credential shown once (None when the sender gave it), and the columns that keep it
    (hashed or encrypted)."""
    if kind == "scim":
        _refuse_given(given, provider)
        token = new_scim_token()
        return token, {"token_hash": token_hash(token)}
    if given is not None:
        _refuse_given(given, provider)
        return None, {"secret_encrypted": given}  # sealed by the caller, which holds the key
    secret = new_webhook_secret()
    return secret, {"secret_encrypted": secret}


def _refuse_given(given: str | None, provider: str) -> None:
    if given is None:
        return
    if provider not in SENDER_KEYS:
        raise InvalidRequest("invalid_field", "secret can be given only for a bamboohr integration, "
                                              "whose key BambooHR generates; others get one from adminlink")
    if not SENDER_KEY.match(given):
        raise InvalidRequest("invalid_field", "secret must be 16 to 200 printable characters without spaces")


def _answer(row: Any, shown: str | None) -> dict[str, Any]:
    if shown is None:
        return view(row)  # the sender's own key is not echoed back
    return {**view(row), ("token" if row.kind == "scim" else "secret"): shown}


async def create_integration(cmd: c.CreateIntegration, uow: UnitOfWork) -> dict[str, Any]:
    if cmd.kind not in KINDS:
        raise InvalidRequest("invalid_field", f"kind must be one of: {', '.join(KINDS)}")
    if cmd.provider not in PROVIDERS[cmd.kind]:
        raise InvalidRequest("invalid_field", f"provider must be one of: {', '.join(PROVIDERS[cmd.kind])}")
    if cmd.delete_mode not in DELETE_MODES:
        raise InvalidRequest("invalid_field", "delete_mode must be suspend or delete")
    name = cmd.name.strip()
    if not name:
        raise InvalidRequest("invalid_field", "name must not be empty")
    denial = Recorded("integration_create", Resource("integration", "", username=name), success=False)
    authorize(uow, Action.MANAGE_INTEGRATIONS, True, denial)
    if await uow.integrations.name_taken(uow.actor.organization_id, name):
        raise Conflict("integration_name_taken", "another integration has this name")
    shown, stored = _credential(cmd.kind, cmd.provider, cmd.secret)
    if "secret_encrypted" in stored:
        stored["secret_encrypted"] = uow.box.seal(stored["secret_encrypted"])
    integration_id = await uow.integrations.add(
        uow.actor.organization_id, kind=cmd.kind, provider=cmd.provider, name=name,
        role=cmd.role, delete_mode=cmd.delete_mode, **stored,
    )
    row = await _load(uow, integration_id)
    uow.collect(Recorded("integration_create", resource(row), (Change("role", None, cmd.role.value),)))
    await uow.commit()
    return _answer(row, shown)


async def rotate_integration_credential(cmd: c.RotateIntegrationCredential, uow: UnitOfWork) -> dict[str, Any]:
    """SCIM: a new token at once (the old one stops). Webhooks: a new secret, the old one still
    accepted for ROTATION_GRACE."""
    row = await _load(uow, cmd.integration_id)
    authorize(uow, Action.MANAGE_INTEGRATIONS, True, Recorded("integration_update", resource(row), success=False))
    shown, stored = _credential(row.kind, row.provider or "generic", cmd.secret)
    if "secret_encrypted" in stored:
        stored = {
            "secret_encrypted": uow.box.seal(stored["secret_encrypted"]),
            "previous_secret_encrypted": row.secret_encrypted,
            "previous_secret_expires_at": now() + ROTATION_GRACE,
        }
    await uow.integrations.update(row.organization_id, row.id, rotated_at=now(), **stored)
    uow.collect(Recorded("integration_update", resource(row), (Change("secret", None, None),)))
    await uow.commit()
    return _answer(await _load(uow, row.id), shown)


async def delete_integration(cmd: c.DeleteIntegration, uow: UnitOfWork) -> None:
    row = await _load(uow, cmd.integration_id)
    authorize(uow, Action.MANAGE_INTEGRATIONS, True, Recorded("integration_delete", resource(row), success=False))
    await uow.integrations.delete(row.organization_id, row.id)
    uow.collect(Recorded("integration_delete", resource(row)))
    await uow.commit()


async def list_integrations(uow: UnitOfWork) -> list[dict[str, Any]]:
    return [view(r) for r in await uow.integrations.all(uow.actor.organization_id)]


HANDLERS: dict[type[c.Command], Handler] = {
    c.CreateIntegration: create_integration,
    c.RotateIntegrationCredential: rotate_integration_credential,
    c.DeleteIntegration: delete_integration,
}
