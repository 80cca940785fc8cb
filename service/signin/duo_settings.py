"""Duo settings per organization (management API): an Administrator with Billing sets the Duo
application's client id, secret and API host. The secret is stored encrypted and never shown or
recorded; saving checks the settings against Duo first."""

from __future__ import annotations

from typing import Any

from service import policy
from service.adapters.mfa.duo import DuoApplication, DuoGateway, DuoUnavailable
from service.domain.errors import DomainError, InvalidRequest, NotFound
from service.domain.events import Change, Recorded, Resource
from service.policy import Action
from service.unit_of_work import DuoSettingsRepository, Sealer, UnitOfWork


def _organization(org_id: str) -> Resource:
    return Resource("organization", org_id)


async def application(settings: DuoSettingsRepository, box: Sealer, org_id: str) -> DuoApplication | None:
    row = await settings.get(org_id)
    if row is None:
        return None
    return DuoApplication(row.client_id, box.open(row.client_secret_encrypted), row.api_host)


def view(row: Any) -> dict[str, Any]:
    if row is None:
        return {"configured": False}
    updated = row.updated_at or row.created_at
    return {"configured": True, "client_id": row.client_id, "api_host": row.api_host,
            "updated": updated.isoformat() if updated else None}


def authorize(uow: UnitOfWork) -> None:
    """The policy table decides; a denial leaves a ``success: false`` record behind."""
    try:
        policy.authorize(Action.CONFIGURE_DUO, uow.actor.role, True)
    except DomainError as denial:
        denial.record = Recorded("organization_update", _organization(uow.actor.organization_id),
                                 (Change("duo", None, None),), success=False)
        raise


async def read(uow: UnitOfWork) -> dict[str, Any]:
    return view(await uow.duo_settings.get(uow.actor.organization_id))


async def save(uow: UnitOfWork, gateway: DuoGateway, client_id: str, client_secret: str,
               api_host: str) -> dict[str, Any]:
    authorize(uow)
    app = DuoApplication(client_id, client_secret, api_host)
    try:
        gateway.validate(app)
    except ValueError as exc:
        raise InvalidRequest("invalid_duo_settings", str(exc)) from exc
    try:
        await gateway.check(app)
    except DuoUnavailable as exc:
        raise InvalidRequest("duo_check_failed", "Duo refused these settings or did not answer") from exc
    org_id = uow.actor.organization_id
    before = await read(uow)
    await uow.duo_settings.put(org_id, client_id, uow.box.seal(client_secret), api_host)
    uow.collect(Recorded("organization_update", _organization(org_id), (
        Change("duo_api_host", before.get("api_host"), api_host),
        Change("duo_client_id", before.get("client_id"), client_id),
        Change("secret", None, None),
    )))
    await uow.commit()
    return await read(uow)


async def remove(uow: UnitOfWork) -> None:
    authorize(uow)
    org_id = uow.actor.organization_id
    before = await read(uow)
    if not before["configured"]:
        raise NotFound("duo_not_configured", "Duo is not configured for this organization")
    await uow.duo_settings.delete(org_id)
    uow.collect(Recorded("organization_update", _organization(org_id),
                         (Change("duo_api_host", before["api_host"], None),)))
    await uow.commit()
