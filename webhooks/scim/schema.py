"""What the SCIM service publishes about itself (RFC 7644 §4) and the models it reads with.

The schemas are scim2-models' RFC 7643 schemas, with adminlink's own requirements: every user has
an email (``emails`` is required) and is active or not (``active`` is required; a request that
leaves it out creates an active user). A User without ``emails`` whose ``userName`` is an email
address is accepted too (Microsoft Entra ID sends one for a person without ``mail``): a schema
cannot make one attribute stand in for another, so ``emails`` stays required, which every client
that follows the schema can meet, and its description tells of the exception. Group members are
users named by ``value`` and ``$ref``; adminlink keeps no per-member ``display``, so it is not
published.
"""

from __future__ import annotations

from functools import cache
from typing import Any

import email_validator
from scim2_models import (
    AuthenticationScheme,
    Bulk,
    ChangePassword,
    Context,
    EnterpriseUser,
    ETag,
    Filter,
    Group,
    Meta,
    Pagination,
    Patch,
    Required,
    ResourceType,
    Schema,
    ScimPolicy,
    ServiceProviderConfig,
    Sort,
    User,
)

# scim2-models checks emails with email-validator, which refuses special-use domains. Directories
# use ".local" (Active Directory) and ".test" addresses, and adminlink validates every email itself
# (service.handlers.validate_email), so those two are accepted here.
email_validator.SPECIAL_USE_DOMAIN_NAMES[:] = [
    d for d in email_validator.SPECIAL_USE_DOMAIN_NAMES if d not in ("local", "test")]

UserModel = User[EnterpriseUser]
GroupModel = Group
ENTERPRISE_SCHEMA = "urn:ietf:params:scim:schemas:extension:enterprise:2.0:User"
MAX_RESULTS = 1000
DEFAULT_PAGE_SIZE = 100

# What providers send and RFC 7644 does not quite allow, accepted on purpose: unknown attributes
# are left out (not refused), Entra ID's "remove with a value", and Entra ID's writes through a
# path filter that matches no value yet (`emails[type eq "work"].value` on a user with none).
POLICY = ScimPolicy(
    unknown=ScimPolicy.Unknown.ignore,
    remove_value_as_filter=ScimPolicy.RemoveValue.apply,
    unmatched_path_filter=ScimPolicy.UnmatchedPathFilter.create,
)

RESOURCE_ENDPOINTS = {"User": "/Users", "Group": "/Groups"}


def _required(schema: Schema, *names: str) -> Schema:
    """Marks attributes ("emails", or "emails.value" for a sub-attribute) required."""
    for attribute in schema.attributes or []:
        for sub in attribute.sub_attributes or []:
            if f"{attribute.name}.{sub.name}" in names:
                sub.required = Required.true
        if attribute.name in names:
            attribute.required = Required.true
    return schema


EMAILS_DESCRIPTION = (
    "Email addresses for the User. adminlink needs one email for every user: the entry marked primary, "
    "else the first of type work, else the first. A User sent without emails takes its userName when that "
    "is an email address (as Microsoft Entra ID sends a person without a mail attribute), and is refused "
    "otherwise.")


def _described(schema: Schema, name: str, description: str) -> Schema:
    for attribute in schema.attributes or []:
        if attribute.name == name:
            attribute.description = description
    return schema


def _without_member_display(schema: Schema) -> Schema:
    for attribute in schema.attributes or []:
        if attribute.name == "members":
            attribute.sub_attributes = [s for s in attribute.sub_attributes or [] if s.name != "display"]
    return schema


@cache
def schemas() -> tuple[Schema, ...]:
    return (
        _described(_required(User.to_schema(), "emails", "emails.value", "active"), "emails", EMAILS_DESCRIPTION),
        EnterpriseUser.to_schema(),
        _without_member_display(Group.to_schema()),
        Schema.to_schema(),
        ResourceType.to_schema(),
        ServiceProviderConfig.to_schema(),
    )


@cache
def resource_types() -> tuple[ResourceType, ...]:
    user = ResourceType.from_resource(UserModel)
    group = ResourceType.from_resource(GroupModel)
    user.description, group.description = "adminlink users", "Groups pushed by SCIM providers"
    return user, group


def service_provider_config(base_url: str) -> ServiceProviderConfig:
    return ServiceProviderConfig(
        documentation_uri=None,
        patch=Patch(supported=True),
        bulk=Bulk(supported=False, max_operations=0, max_payload_size=0),
        filter=Filter(supported=True, max_results=MAX_RESULTS),
        change_password=ChangePassword(supported=True),
        sort=Sort(supported=True),
        etag=ETag(supported=True),
        pagination=Pagination(
            cursor=False, index=True, default_pagination_method=Pagination.DefaultPaginationMethod.index,
            default_page_size=DEFAULT_PAGE_SIZE, max_page_size=MAX_RESULTS,
        ),
        authentication_schemes=[AuthenticationScheme(
            type=AuthenticationScheme.Type.oauthbearertoken, name="Bearer token",
            description="The token of a SCIM integration, created in the management API "
                        "(POST /api/v1/integrations) and shown once.",
            primary=True,
        )],
        meta=Meta(resource_type="ServiceProviderConfig", location=f"{base_url}/ServiceProviderConfig"),
    )


def schema_json(schema: Schema, base_url: str) -> dict[str, Any]:
    body = schema.model_dump(scim_ctx=Context.RESOURCE_QUERY_RESPONSE)
    body["meta"] = {"resourceType": "Schema", "location": f"{base_url}/Schemas/{schema.id}"}
    return body


def resource_type_json(resource_type: ResourceType, base_url: str) -> dict[str, Any]:
    body = resource_type.model_dump(scim_ctx=Context.RESOURCE_QUERY_RESPONSE)
    body["meta"] = {"resourceType": "ResourceType", "location": f"{base_url}/ResourceTypes/{resource_type.id}"}
    return body
