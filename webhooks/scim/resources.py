"""Between adminlink's rows and SCIM resources (RFC 7643), both ways.

A user's SCIM representation is its own columns (userName, name.givenName / familyName, the
email, active) plus the attributes the provider wrote that adminlink keeps for it as given. The
user's one email is the primary SCIM email: the entry marked primary, else the first of type
"work", else the first; a user sent without any takes its userName when that is an email address.
"""

from __future__ import annotations

import copy
from typing import Any

from pydantic import EmailStr, TypeAdapter, ValidationError
from scim2_models import Context, Group, GroupMember, Meta, ResponseParameters

from service.adapters.scim_directory import USER_SCHEMA, GroupRecord, UserRecord
from service.domain.commands import ProvisionedProfile
from service.domain.model import UserState, aware
from webhooks.scim.errors import ScimError
from webhooks.scim.schema import ENTERPRISE_SCHEMA, UserModel

# Attributes that are adminlink's own columns (or read-only), never kept as provider attributes.
OWN_ATTRIBUTES = frozenset({"schemas", "id", "meta", "externalId", "userName", "displayName", "active",
                            "password", "groups"})
OWN_NAME_PARTS = ("givenName", "familyName")
DEFAULT_EMAIL_TYPE = "work"
EMAIL_VALUE = TypeAdapter(EmailStr)  # what scim2-models' emails.value is
LIMITS = {"userName": 200, "name.givenName": 200, "name.familyName": 200, "emails.value": 320,
          "emails.type": 40, "displayName": 300, "externalId": 300}


def _iso(moment: Any) -> str | None:
    return aware(moment).isoformat() if moment is not None else None  # type: ignore[union-attr]


def primary_index(emails: list[dict[str, Any]]) -> int | None:
    for pick in (lambda e: e.get("primary") is True, lambda e: e.get("type") == DEFAULT_EMAIL_TYPE,
                 lambda e: True):
        for index, entry in enumerate(emails):
            if isinstance(entry, dict) and entry.get("value") and pick(entry):
                return index
    return None


def _emails(record: UserRecord) -> list[dict[str, Any]]:
    """The kept emails, the primary one showing the user's current email (which the management
    API may have changed since)."""
    user = record.row
    kept = [dict(e) for e in record.attributes.get("emails") or [] if isinstance(e, dict)]
    index = primary_index(kept)
    if index is None:
        return [{"value": user.email, "type": record.email_type or DEFAULT_EMAIL_TYPE, "primary": True}]
    # The kept entries as the provider sent them, the primary one with the user's email now.
    kept[index].update(value=user.email, type=record.email_type or DEFAULT_EMAIL_TYPE)
    return kept


def user_document(record: UserRecord, base_url: str) -> dict[str, Any]:
    user = record.row
    document: dict[str, Any] = copy.deepcopy(record.attributes)
    document["schemas"] = [USER_SCHEMA] + ([ENTERPRISE_SCHEMA] if ENTERPRISE_SCHEMA in document else [])
    document["id"] = user.id
    if user.external_id is not None:
        document["externalId"] = user.external_id
    document["userName"] = user.username
    name = dict(document.get("name") or {})
    name.update({"givenName": user.firstname or None, "familyName": user.lastname or None})
    name = {k: v for k, v in name.items() if v is not None}
    if name:
        document["name"] = name
    else:
        document.pop("name", None)
    if record.display_name is not None:
        document["displayName"] = record.display_name
    document["active"] = user.state == UserState.ACTIVATED
    document["emails"] = _emails(record)
    if record.groups:
        document["groups"] = [{"value": gid, "$ref": f"{base_url}/Groups/{gid}", "display": name,
                               "type": "direct"} for gid, name in record.groups]
    document["meta"] = {
        "resourceType": "User", "created": _iso(user.created_at),
        "lastModified": _iso(user.updated_at or user.created_at),
        "location": f"{base_url}/Users/{user.id}", "version": record.version,
    }
    return document


def user_resource(record: UserRecord, base_url: str) -> Any:
    return UserModel.model_validate(user_document(record, base_url))


def group_resource(record: GroupRecord, base_url: str) -> Group:
    group = record.row
    members: list[GroupMember] = [GroupMember.model_validate({"value": m, "$ref": f"{base_url}/Users/{m}",
                                                              "type": "User"}) for m in record.member_ids]
    return Group(
        id=group.id, external_id=group.external_id, display_name=group.display_name,
        members=members or None,
        meta=Meta(resource_type="Group", created=aware(group.created_at),
                  last_modified=aware(group.updated_at or group.created_at),
                  location=f"{base_url}/Groups/{group.id}", version=record.version),
    )


def dump(resource: Any, parameters: ResponseParameters | None = None) -> dict[str, Any]:
    body: dict[str, Any] = resource.model_dump(scim_ctx=Context.RESOURCE_QUERY_RESPONSE,
                                               response_parameters=parameters)
    return body


# --- from SCIM -------------------------------------------------------------------------------


def _text(value: Any, attribute: str, *, required: bool = False) -> str | None:
    if value is None or (isinstance(value, str) and not value.strip() and not required):
        if required:
            raise ScimError(400, f"{attribute} is required", "invalidValue")
        return None
    if not isinstance(value, str):
        raise ScimError(400, f"{attribute} must be a string", "invalidValue")
    value = value.strip()
    if required and not value:
        raise ScimError(400, f"{attribute} must not be empty", "invalidValue")
    if len(value) > LIMITS[attribute]:
        raise ScimError(400, f"{attribute} is longer than {LIMITS[attribute]} characters", "invalidValue")
    return value


def _kept_emails(emails: list[dict[str, Any]], index: int) -> list[dict[str, Any]] | None:
    """The emails worth keeping: none when one primary email alone says it all."""
    if len(emails) == 1 and set(emails[0]) <= {"value", "type", "primary"} and emails[0].get("primary") is True:
        return None
    return emails


def _as_email_value(text: str) -> str | None:
    """``text`` read as an ``emails.value`` is read (email-validator, through scim2-models: the
    domain normalised), or None when it is not an email address."""
    try:
        return EMAIL_VALUE.validate_python(text.strip())
    except ValidationError:
        return None


def _email_and_type(document: dict[str, Any], emails: list[dict[str, Any]],
                    index: int | None) -> tuple[str, str | None]:
    """The user's email and its SCIM type: the primary of ``emails``; without one, a ``userName``
    that is an email address (Entra ID maps userPrincipalName to userName and sends no ``emails``
    for a person without a ``mail`` attribute)."""
    if index is not None:
        value = _text(emails[index].get("value"), "emails.value", required=True) or ""
        return value, _text(emails[index].get("type"), "emails.type")
    username = document.get("userName")
    from_username = _as_email_value(username) if isinstance(username, str) else None
    if from_username is not None:
        return from_username, None
    raise ScimError(400, "emails: adminlink needs an email for every user: send emails, or a userName that is an "
                         "email address", "invalidValue")


def profile_from_user(resource: Any) -> tuple[ProvisionedProfile, str | None]:
    """The wanted state of a user from a SCIM User (a POST or PUT body, or a patched resource),
    and the password it carries, if any."""
    document: dict[str, Any] = resource.model_dump(scim_ctx=Context.RESOURCE_REPLACEMENT_REQUEST)
    emails = [e for e in document.get("emails") or [] if isinstance(e, dict)]
    index = primary_index(emails)
    email, email_type = _email_and_type(document, emails, index)
    name = dict(document.get("name") or {})
    attributes = {k: v for k, v in document.items() if k not in OWN_ATTRIBUTES}
    attributes.pop("emails", None)
    kept = _kept_emails(emails, index) if index is not None else emails or None
    if kept is not None:
        attributes["emails"] = kept
    extra_name = {k: v for k, v in name.items() if k not in OWN_NAME_PARTS}
    attributes.pop("name", None)
    if extra_name:
        attributes["name"] = extra_name
    active = getattr(resource, "active", None)
    profile = ProvisionedProfile(
        username=_text(document.get("userName"), "userName", required=True) or "",
        email=email or "",
        firstname=_text(name.get("givenName"), "name.givenName") or "",
        lastname=_text(name.get("familyName"), "name.familyName") or "",
        active=True if active is None else bool(active),
        external_id=_text(document.get("externalId"), "externalId"),
        display_name=_text(document.get("displayName"), "displayName"),
        email_type=None if email_type in (None, DEFAULT_EMAIL_TYPE) else email_type,
        attributes=attributes,
    )
    return profile, getattr(resource, "password", None)


def members_of(group: Group) -> tuple[str, ...]:
    ids = []
    for member in group.members or []:
        value = member.value or (str(member.ref).rstrip("/").rsplit("/", 1)[-1] if member.ref else None)
        if not value:
            raise ScimError(400, "members: each member needs a value (a user id)", "invalidValue")
        ids.append(value)
    return tuple(ids)
