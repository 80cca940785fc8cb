"""SCIM provisioning: what a SCIM provider asks for, each in ONE transaction.

A provider's request often means several changes at once (a PUT renames, suspends and sets a
password). Each change runs through the commit-free step of its management-API handler
(``service.handlers.users.<name>_step``), so permission checks, session ending, emails and Directory Insights
records are those of the management API; they share one transaction, committed once, so a
refusal of any part (a permission denial, the last Administrator with Billing) rolls the whole
request back, as RFC 7644 §3.5.2 requires of a PATCH.
"""

from __future__ import annotations

from typing import Any

from service.adapters.crypto import verify_password
from service.domain import commands as c
from service.domain.errors import Conflict, InvalidRequest, NotFound
from service.domain.events import Change, Recorded, Resource
from service.domain.model import User, UserState, now
from service.domain.versions import group_version, user_version
from service.handlers import common, users
from service.policy import Action
from service.unit_of_work import UnitOfWork

MAX_GROUP_NAME = 300
MAX_EXTERNAL_ID = 300


class VersionMismatch(Conflict):
    """The resource changed since the version the request was based on (If-Match, or a PATCH
    computed from a state that another request changed meanwhile)."""

    def __init__(self) -> None:
        super().__init__("version_mismatch", "the resource changed since the version given")


# --- versions (ETags) ------------------------------------------------------------------------


def _check_version(expected: str | None, current: str) -> None:
    if expected is not None and expected != current:
        raise VersionMismatch()


# --- users -----------------------------------------------------------------------------------


async def _lock_user(uow: UnitOfWork, user_id: str) -> None:
    """Takes the user's row lock (the write lock on SQLite) before reading it, so the version
    check and the change cannot interleave with another writer."""
    await uow.users.lock(uow.actor.organization_id, user_id)


async def load_visible_user(uow: UnitOfWork, user_id: str) -> User:
    """A user a SCIM provider can see: one it deleted in ``suspend`` mode is gone for it."""
    user = await common.load_user(uow, user_id)
    if user.scim_deleted_at is not None:
        raise NotFound("user_not_found", "no such user")
    return user


async def current_user_version(uow: UnitOfWork, user: User) -> str:
    org_id = uow.actor.organization_id
    profile = await uow.scim_profiles.get(org_id, user.id)
    groups = (await uow.groups.of_users(org_id, [user.id]))[user.id]
    return user_version(user, profile, groups)


def _attribute_changes(old: dict[str, Any], new: dict[str, Any]) -> list[Change]:
    return [Change(key, old.get(key), new.get(key)) for key in sorted(set(old) | set(new))
            if old.get(key) != new.get(key)]


async def _apply_scim_fields(uow: UnitOfWork, user: User, wanted: c.ProvisionedProfile, *,
                             creating: bool = False) -> None:
    """externalId and the attributes kept for the provider: an "other user operation" (at creation,
    part of the creation, which is authorized and recorded as such)."""
    profiles = uow.scim_profiles
    current = await profiles.get(user.organization_id, user.id)
    before = {"external_id": user.external_id, "display_name": getattr(current, "display_name", None),
              "email_type": getattr(current, "email_type", None), **(getattr(current, "attributes", None) or {})}
    after = {"external_id": wanted.external_id, "display_name": wanted.display_name,
             "email_type": wanted.email_type, **wanted.attributes}
    changes = _attribute_changes(before, after)
    if not changes:
        return
    if not creating:
        await common.authorize_on_user(uow, Action.UPDATE_USER, user, "user_update")
    user.external_id = wanted.external_id
    user.updated_at = now()
    await profiles.put(user.organization_id, user.id, display_name=wanted.display_name,
                       email_type=wanted.email_type, attributes=wanted.attributes)
    if not creating:
        uow.collect(Recorded("user_update", common.user_resource(user), tuple(changes)))


async def _apply(uow: UnitOfWork, user: User, wanted: c.ProvisionedProfile, password: str | None) -> None:
    """Brings the user to the wanted state, each difference through its own handler."""
    actor = uow.actor
    if wanted.active and user.state != UserState.ACTIVATED:
        await users.activate_user_step(c.ActivateUser(actor, user.id), uow)
    fields = {"username": wanted.username, "email": wanted.email, "firstname": wanted.firstname,
              "lastname": wanted.lastname}
    changed = {name: value for name, value in fields.items() if value.strip() != getattr(user, name)}
    if changed:
        await users.update_user_step(c.UpdateUser(actor, user.id, changed), uow)
    await _apply_scim_fields(uow, user, wanted)
    if password is not None and not verify_password(user.password_hash, password):
        await users.set_password_step(c.SetPassword(actor, user.id, password), uow)
    if not wanted.active and user.state == UserState.ACTIVATED:
        await users.suspend_user_step(c.SuspendUser(actor, user.id), uow)


async def provision_user(cmd: c.ProvisionUser, uow: UnitOfWork) -> User:
    wanted, org_id = cmd.profile, uow.actor.organization_id
    hidden = await uow.users.by_username(org_id, wanted.username)
    if hidden is not None and hidden.scim_deleted_at is not None:
        return await _revive(uow, hidden, wanted, cmd.password)
    state = UserState.ACTIVATED if wanted.active else UserState.SUSPENDED
    create = c.CreateUser(uow.actor, wanted.email, wanted.username, wanted.firstname, wanted.lastname,
                          password=cmd.password, state=state, external_id=wanted.external_id)
    user = await users.create_user_step(create, uow)
    await _apply_scim_fields(uow, user, wanted, creating=True)
    await uow.commit()
    return user


async def _revive(uow: UnitOfWork, user: User, wanted: c.ProvisionedProfile, password: str | None) -> User:
    """A provider creates again a user it deleted in ``suspend`` mode: the same identity comes back
    (its admin role, MFA and history kept), brought to the state the provider sends."""
    await _lock_user(uow, user.id)
    await common.authorize_on_user(uow, Action.UPDATE_USER, user, "user_update")
    user.scim_deleted_at = None
    uow.collect(Recorded("user_update", common.user_resource(user), (Change("scim_deleted", True, False),)))
    await _apply(uow, user, wanted, password)
    await uow.commit()
    return user


async def replace_user(cmd: c.ReplaceProvisionedUser, uow: UnitOfWork) -> User:
    await _lock_user(uow, cmd.user_id)
    user = await load_visible_user(uow, cmd.user_id)
    _check_version(cmd.expected_version, await current_user_version(uow, user))
    await _apply(uow, user, cmd.profile, cmd.password)
    await uow.commit()
    return user


async def deprovision_user(cmd: c.DeprovisionUser, uow: UnitOfWork) -> None:
    await _lock_user(uow, cmd.user_id)
    user = await load_visible_user(uow, cmd.user_id)
    _check_version(cmd.expected_version, await current_user_version(uow, user))
    if cmd.mode == "delete":
        await users.delete_loaded_user(uow, user)
    else:
        await users.suspend_user_step(c.SuspendUser(uow.actor, user.id), uow)
        user.scim_deleted_at = now()
        uow.collect(Recorded("user_update", common.user_resource(user), (Change("scim_deleted", False, True),)))
    await uow.commit()


# --- groups ----------------------------------------------------------------------------------


def _group_resource(group_id: str, display_name: str) -> Resource:
    return Resource("group", group_id, username=display_name)


def _group_name(display_name: str) -> str:
    name = display_name.strip()
    if not name or len(name) > MAX_GROUP_NAME:
        raise InvalidRequest("invalid_group_name", f"displayName needs 1 to {MAX_GROUP_NAME} characters")
    return name


async def _ensure_group_name_free(uow: UnitOfWork, name: str, group_id: str | None) -> None:
    holder = await uow.groups.named(uow.actor.organization_id, name)
    if holder is not None and holder.id != group_id:
        raise Conflict("group_name_taken", "another group has this displayName")


async def _ensure_members_exist(uow: UnitOfWork, member_ids: list[str]) -> None:
    found = await uow.groups.existing_users(uow.actor.organization_id, member_ids)
    missing = [m for m in member_ids if m not in found]
    if missing:
        raise InvalidRequest("member_not_found", f"no such user: {missing[0]}")


async def provision_group(cmd: c.ProvisionGroup, uow: UnitOfWork) -> str:
    name, org_id = _group_name(cmd.display_name), uow.actor.organization_id
    common.authorize(uow, Action.MANAGE_GROUPS, False,
                       Recorded("group_create", _group_resource("", name), success=False))
    await _ensure_group_name_free(uow, name, None)
    members = list(dict.fromkeys(cmd.member_ids))
    await _ensure_members_exist(uow, members)
    groups = uow.groups
    group_id = await groups.insert(org_id, name, cmd.external_id)
    await groups.add_members(org_id, group_id, members)
    changes = [Change("display_name", None, name), Change("members", None, members)]
    if cmd.external_id is not None:
        changes.append(Change("external_id", None, cmd.external_id))
    uow.collect(Recorded("group_create", _group_resource(group_id, name), tuple(changes)))
    await uow.commit()
    return group_id


async def _load_group(uow: UnitOfWork, group_id: str) -> Any:
    row = await uow.groups.get(uow.actor.organization_id, group_id)
    if row is None:
        raise NotFound("group_not_found", "no such group")
    return row


async def replace_group(cmd: c.ReplaceProvisionedGroup, uow: UnitOfWork) -> str:
    org_id, groups = uow.actor.organization_id, uow.groups
    await groups.lock(org_id, cmd.group_id)
    group = await _load_group(uow, cmd.group_id)
    current = await groups.member_ids(org_id, group.id)
    _check_version(cmd.expected_version, group_version(group, current))
    name = _group_name(cmd.display_name)
    common.authorize(uow, Action.MANAGE_GROUPS, False,
                       Recorded("group_update", _group_resource(group.id, group.display_name), success=False))
    wanted = list(dict.fromkeys(cmd.member_ids))
    added = [m for m in wanted if m not in set(current)]
    removed = [m for m in current if m not in set(wanted)]
    changes: list[Change] = []
    if name != group.display_name:
        await _ensure_group_name_free(uow, name, group.id)
        changes.append(Change("display_name", group.display_name, name))
    if cmd.external_id != group.external_id:
        changes.append(Change("external_id", group.external_id, cmd.external_id))
    if added or removed:
        await _ensure_members_exist(uow, added)
        changes.append(Change("members", removed or None, added or None))
    if changes:
        await groups.update(org_id, group.id, display_name=name, external_id=cmd.external_id)
        await groups.remove_members(org_id, group.id, removed)
        await groups.add_members(org_id, group.id, added)
        uow.collect(Recorded("group_update", _group_resource(group.id, name), tuple(changes)))
        await uow.commit()
    return str(group.id)


async def delete_group(cmd: c.DeleteProvisionedGroup, uow: UnitOfWork) -> None:
    org_id, groups = uow.actor.organization_id, uow.groups
    await groups.lock(org_id, cmd.group_id)
    group = await _load_group(uow, cmd.group_id)
    _check_version(cmd.expected_version, group_version(group, await groups.member_ids(org_id, group.id)))
    common.authorize(uow, Action.MANAGE_GROUPS, False,
                       Recorded("group_delete", _group_resource(group.id, group.display_name), success=False))
    await groups.delete(org_id, group.id)
    uow.collect(Recorded("group_delete", _group_resource(group.id, group.display_name)))
    await uow.commit()


HANDLERS: dict[type[c.Command], common.Handler] = {
    c.ProvisionUser: provision_user,
    c.ReplaceProvisionedUser: replace_user,
    c.DeprovisionUser: deprovision_user,
    c.ProvisionGroup: provision_group,
    c.ReplaceProvisionedGroup: replace_group,
    c.DeleteProvisionedGroup: delete_group,
}
