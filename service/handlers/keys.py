"""Handlers of the commands on keys: a user's SSH keys, an admin's API keys (shown once, kept as hashes)."""

from __future__ import annotations

import base64
import hashlib
from datetime import timedelta
from typing import Any

from cryptography.hazmat.primitives import serialization

from service.adapters.crypto import new_api_key
from service.domain import commands as c
from service.domain.errors import Conflict, InvalidRequest
from service.domain.events import Change, Recorded
from service.domain.model import now
from service.handlers.common import (
    Handler,
    admin_resource,
    authorize,
    delete_user_credential,
    load_admin,
    load_authorized_user,
    user_resource,
)
from service.policy import Action
from service.unit_of_work import UnitOfWork


async def delete_ssh_key(cmd: c.DeleteSshKey, uow: UnitOfWork) -> None:
    await delete_user_credential(uow, cmd.user_id, Action.SSH_KEY_CHANGE, uow.ssh_keys, cmd.key_id, "ssh_key")


async def add_ssh_key(cmd: c.AddSshKey, uow: UnitOfWork) -> dict[str, Any]:
    user, _ = await load_authorized_user(uow, cmd.user_id, Action.SSH_KEY_CHANGE, "user_update")
    try:
        key = serialization.load_ssh_public_key(cmd.public_key.strip().encode())
    except (ValueError, TypeError) as exc:
        raise InvalidRequest("invalid_ssh_key", "public_key is not an OpenSSH public key") from exc
    raw = key.public_bytes(serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH)
    digest = hashlib.sha256(base64.b64decode(raw.split()[1])).digest()
    fingerprint = "SHA256:" + base64.b64encode(digest).decode().rstrip("=")
    name = cmd.name.strip() or fingerprint
    key_id = await uow.ssh_keys.add(user.organization_id, user.id, name, cmd.public_key.strip(), fingerprint)
    uow.collect(Recorded("user_update", user_resource(user), (Change("ssh_key", None, fingerprint),)))
    await uow.commit()
    return {"id": key_id, "name": name, "fingerprint": fingerprint}


async def issue_api_key(cmd: c.IssueApiKey, uow: UnitOfWork) -> dict[str, Any]:
    admin = await load_admin(uow, cmd.admin_id)
    authorize(uow, Action.MANAGE_ADMINS, True, Recorded("admin_update", admin_resource(admin), success=False))
    if not admin.api_access:
        raise Conflict("api_access_disabled", "enable API access for this admin first")
    key, prefix, digest = new_api_key()
    expires_at = now() + timedelta(days=365)
    key_id = await uow.api_keys.add(admin.organization_id, admin.id, prefix, digest, expires_at)
    uow.collect(Recorded("admin_update", admin_resource(admin), (Change("api_key", None, None),)))
    await uow.commit()
    return {"id": key_id, "key": key, "prefix": prefix, "expires_at": expires_at.isoformat()}


HANDLERS: dict[type[c.Command], Handler] = {
    c.AddSshKey: add_ssh_key,
    c.DeleteSshKey: delete_ssh_key,
    c.IssueApiKey: issue_api_key,
}
