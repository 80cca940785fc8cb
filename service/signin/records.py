"""Directory Insights records of sign-in attempts, in JumpCloud's event shape.

- An admin-portal attempt by a linked admin writes ``user_login_attempt`` and
  ``admin_login_attempt``, both with ``initiated_by.administrator = true`` and
  ``target_resource.type = "admin_portal"`` (the seed's filter finds exactly these).
- A classic admin's attempt writes ``admin_login_attempt`` only.
- A user-portal attempt writes ``user_login_attempt`` without those two fields.
Each carries ``success``, the factor (``mfa_meta.type``), ``client_ip`` and ``useragent``; a
failure carries a machine ``error_code``. Nothing secret is ever recorded.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from service import insights
from service.domain.commands import Actor
from service.domain.events import Change, Recorded, Resource
from service.domain.model import Admin, Role, User

ADMIN_PORTAL = "admin_portal"
USER_PORTAL = "user_portal"


@dataclass(frozen=True)
class ClientInfo:
    ip: str | None
    useragent: str | None
    kind: str = "web"  # web: cookie | mobile: bearer token
    # The known-device cookies the client sent, (name, value): whether it is familiar to an
    # identity is decided once the identity is known (known_devices).
    device_cookies: tuple[tuple[str, str], ...] = ()


def actor_for(org_id: str, portal: str, client: ClientInfo, *, user: User | None, admin: Admin | None,
              auth_method: str = "password") -> Actor:
    """Who is signing in. In the admin portal a linked admin acts as the admin (an administrator);
    anywhere else the person acts as the user."""
    if portal == ADMIN_PORTAL and admin is not None:
        return Actor(org_id, admin.id, "admin", admin.role, email=admin.email, linked_user_id=admin.linked_user_id,
                     source=portal, client_ip=client.ip, useragent=client.useragent, auth_method=auth_method)
    assert user is not None
    return Actor(org_id, user.id, "user", Role.READ_ONLY, email=user.email, source=portal, client_ip=client.ip,
                 useragent=client.useragent, auth_method=auth_method)


def user_resource(user: User) -> Resource:
    return Resource("user", user.id, email=user.email, username=user.username)


def admin_resource(admin: Admin) -> Resource:
    return Resource("admin", admin.id, email=admin.email)


def attempts(actor: Actor, portal: str, *, user: User | None, admin: Admin | None, success: bool,
             factor: str | None, error_code: str | None = None) -> list[Recorded]:
    used_mfa = factor is not None and factor != "password"
    extra: dict[str, Any] = {"mfa": used_mfa}
    if used_mfa:
        extra["mfa_meta"] = {"type": factor}
    if error_code is not None:
        extra["error_code"] = error_code
    if portal == ADMIN_PORTAL:
        extra["target_resource"] = {"type": ADMIN_PORTAL}
    else:
        # A user-portal sign-in is not an administrator's: the field is left out, not set false.
        extra["initiated_by"] = {k: v for k, v in insights.initiated_by(actor).items() if k != "administrator"}
    records = []
    if user is not None:
        records.append(Recorded("user_login_attempt", user_resource(user), success=success, extra=dict(extra)))
    if portal == ADMIN_PORTAL and admin is not None:
        records.append(Recorded("admin_login_attempt", admin_resource(admin), success=success, extra=dict(extra)))
    return records


def lockout(user: User) -> Recorded:
    return Recorded("user_lockout", user_resource(user), (Change("account_locked", False, True),))


def user_change(user: User, field: str, to: Any = None, success: bool = True) -> Recorded:
    return Recorded("user_update", user_resource(user), (Change(field, None, to),), success=success)
