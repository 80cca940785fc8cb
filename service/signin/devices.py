"""The device side of push: a mobile app enrolls its public key, reads the push waiting for its
user, and approves or denies it by signing. Every call is authenticated by a signature of the
device's key; nothing here trusts a bearer secret.
"""

from __future__ import annotations

import time
from typing import Any

from service.adapters.mfa import push as keys
from service.domain.errors import Conflict, InvalidRequest, NotFound
from service.signin import records
from service.signin.errors import Unauthorized
from service.signin.flows import Signin
from service.signin.pushes import EXPIRED, PENDING
from service.signin.records import USER_PORTAL, ClientInfo

CLOCK_SKEW_SECONDS = 60


def _bad_signature() -> Unauthorized:
    return Unauthorized("invalid_signature", "the device's signature does not verify")


async def enroll(signin: Signin, enrollment_token: str, name: str, algorithm: str, public_key: str,
                 signature: str, client: ClientInfo) -> dict[str, Any]:
    await signin.throttle.hit(ip=client.ip, account=None)
    pending = await signin.pending.get("push", enrollment_token)
    if pending is None:
        raise Unauthorized("invalid_enrollment_token", "this enrollment token is unknown, used or expired")
    try:
        pem = keys.normalise_public_key(algorithm, public_key)
    except keys.InvalidDeviceKey as exc:
        raise InvalidRequest("invalid_device_key", str(exc)) from exc
    if not keys.verify(algorithm, pem, signature, keys.enrollment_message(enrollment_token)):
        raise _bad_signature()
    if await signin.pending.take("push", enrollment_token) is None:  # used by a concurrent request
        raise Unauthorized("invalid_enrollment_token", "this enrollment token is unknown, used or expired")
    org_id, user_id = pending["organization_id"], pending["user_id"]
    async with signin.services.read_only() as reads:
        user = await reads.users.get(org_id, user_id)
    if user is None:
        raise Unauthorized("invalid_enrollment_token", "this enrollment token is unknown, used or expired")
    actor = records.actor_for(org_id, USER_PORTAL, client, user=user, admin=None, auth_method="push_device")
    async with signin.services.uow(actor) as uow:
        device_id = await uow.push_devices.add(org_id, user_id, name.strip() or "mobile device", algorithm, pem)
        uow.collect(records.user_change(user, "push_device", device_id))
        await uow.commit()
    return {"device_id": device_id, "organization_id": org_id, "algorithm": algorithm,
            "name": name.strip() or "mobile device"}


async def _device(signin: Signin, org_id: str, device_id: str, user_id: str | None = None) -> Any:
    async with signin.services.read_only() as reads:
        return await reads.push_devices.get(org_id, device_id, user_id)


async def inbox(signin: Signin, org_id: str, device_id: str, timestamp: int,
                signature: str) -> dict[str, Any] | None:
    """The push waiting for this device's user, if any: what the app shows for approval. Not
    rate limited: an app polls it, and each call costs only a signature check."""
    if abs(time.time() - timestamp) > CLOCK_SKEW_SECONDS:
        raise InvalidRequest("stale_timestamp", "timestamp must be within a minute of the server's clock")
    device = await _device(signin, org_id, device_id)
    if device is None or not keys.verify(device.algorithm, device.public_key, signature,
                                         keys.inbox_message(device_id, timestamp)):
        raise _bad_signature()
    push = await signin.pushes.pending_for(org_id, device.user_id)
    if push is None:
        return None
    return {"push_id": push.id, "nonce": push.nonce, "portal": push.portal, "client_ip": push.client_ip,
            "useragent": push.useragent, "expires_in": max(0, int(push.expires_at - time.time()))}


async def decide(signin: Signin, push_id: str, device_id: str, decision: str, signature: str,
                 client: ClientInfo) -> str:
    await signin.throttle.hit(ip=client.ip, account=None)
    if decision not in keys.DECISIONS:
        raise InvalidRequest("invalid_field", "decision must be approve or deny")
    push = await signin.pushes.get(push_id)
    if push is None:
        raise NotFound("push_not_found", "no such push")
    device = await _device(signin, push.organization_id, device_id, push.user_id)
    if device is None or not keys.verify(device.algorithm, device.public_key, signature,
                                         keys.decision_message(push.id, push.nonce, decision)):
        raise _bad_signature()
    status = await signin.pushes.status(push)
    if status == EXPIRED:
        raise Conflict("push_expired", "this push expired; the sign-in must send a new one")
    if status != PENDING or not await signin.pushes.decide(push, decision):
        raise Conflict("push_already_decided", "this push was already approved or denied")
    return decision
