"""Who is signing in, from what the client typed: a username or an email.

Emails and usernames are unique per organization, not across organizations. The lookups here are
the only queries of the sign-in that are not scoped to one organization: they find the
organization. The rule: with ``organization_id``, only that organization is searched; without it
the identifier must belong to exactly one organization. One found in several organizations
without an ``organization_id`` is answered like a wrong password, so the answer never tells that
it exists. Everything after this lookup is scoped to the organization found.
"""

from __future__ import annotations

from dataclasses import dataclass

from service.domain.model import Admin, User, normalise_email
from service.signin.records import ADMIN_PORTAL
from service.unit_of_work import ReadOnlyUnitOfWork


@dataclass
class Who:
    """The identities of one sign-in: the user whose credentials count, and the admin identity
    the admin portal opens (a classic admin has no user)."""

    organization_id: str
    user: User | None
    admin: Admin | None

    @property
    def classic_admin(self) -> bool:
        return self.admin is not None and not self.admin.is_linked

    @property
    def password_hash(self) -> str | None:
        if self.classic_admin:
            assert self.admin is not None
            return self.admin.password_hash
        return self.user.password_hash if self.user is not None else None


def _only(orgs: set[str]) -> str | None:
    return next(iter(orgs)) if len(orgs) == 1 else None


async def resolve(reads: ReadOnlyUnitOfWork, portal: str, identifier: str, org_id: str | None) -> Who | None:
    """The identities behind what was typed: an email first; a username only when no account in
    scope has that email (usernames may look like emails, as SCIM's ``userName`` often does)."""
    email = normalise_email(identifier)
    orgs = await reads.users.organizations_with_email(email, org_id)
    if portal == ADMIN_PORTAL:
        orgs |= await reads.admins.organizations_with_email(email, org_id)
    if orgs:
        org = _only(orgs)
        return await _by_email(reads, portal, org, identifier) if org else None
    username = identifier.strip().lower()
    org = _only(await reads.users.organizations_with_username(username, org_id))
    return await _by_username(reads, portal, org, username) if org else None


async def _by_email(reads: ReadOnlyUnitOfWork, portal: str, org: str, email: str) -> Who | None:
    user = await reads.users.by_email(org, email)
    admin = await reads.admins.by_email(org, email) if portal == ADMIN_PORTAL else None
    if admin is not None and admin.is_linked:
        assert admin.linked_user_id is not None
        user = await reads.users.get(org, admin.linked_user_id)
    elif admin is not None:
        user = None  # a classic admin signs in with its own password; a same-email user is another identity
    if user is None and admin is None:
        return None
    return Who(org, user, admin)


async def _by_username(reads: ReadOnlyUnitOfWork, portal: str, org: str, username: str) -> Who | None:
    """A user by username; on the admin portal with the admin identity linked to it. A classic
    admin has no username: it signs in with its email only."""
    user = await reads.users.by_username(org, username)
    if user is None:
        return None
    admin = await reads.admins.by_linked_user(org, user.id) if portal == ADMIN_PORTAL else None
    return Who(org, user, admin)
