"""Handler of an organization's bootstrap: the organization and its first Administrator with Billing."""

from __future__ import annotations

import secrets

import pyotp

from service.adapters.crypto import hash_password, new_api_key
from service.domain import commands as c
from service.domain.errors import InvalidRequest
from service.domain.events import Change, Recorded
from service.domain.model import Admin, MfaEnrollment, Organization, Role
from service.handlers.common import Handler, admin_resource, validate_email
from service.unit_of_work import UnitOfWork


async def bootstrap_organization(cmd: c.BootstrapOrganization, uow: UnitOfWork) -> dict[str, str]:
    """Creates the organization and its first Administrator with Billing, with a password,
    TOTP and an API key, each shown once."""
    email = validate_email(cmd.email)
    if not cmd.name.strip():
        raise InvalidRequest("invalid_name", "the organization needs a name")
    org = Organization(cmd.name.strip(), id=uow.actor.organization_id)
    uow.organizations.add(org)
    await uow.flush()  # the organization row first: everything else refers to it
    password, secret = secrets.token_urlsafe(18), pyotp.random_base32()
    admin = Admin(org.id, email, Role.BILLING, api_access=True, password_hash=hash_password(password),
                  totp_secret=uow.box.seal(secret), mfa_enrollment=MfaEnrollment.TOTP)
    uow.admins.add(admin)
    await uow.flush()
    key, prefix, digest = new_api_key()
    await uow.api_keys.add(org.id, admin.id, prefix, digest)
    uow.collect(Recorded("admin_create", admin_resource(admin), (Change("role", None, admin.role.value),)))
    await uow.commit()
    return {"organization_id": org.id, "admin_id": admin.id, "email": email, "api_key": key,
            "password": password, "totp_secret": secret}


HANDLERS: dict[type[c.Command], Handler] = {
    c.BootstrapOrganization: bootstrap_organization,
}
