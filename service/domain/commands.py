"""What someone asks for. Every entrypoint translates its input into one of these."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from service.domain.model import PasswordAuthority, Role, UserState


@dataclass(frozen=True)
class Actor:
    """Who asks, with which admin role, from where. Handlers authorize against ``role``."""

    organization_id: str
    id: str
    type: str  # admin | integration | system
    role: Role
    email: str | None = None
    linked_user_id: str | None = None
    source: str = "api"  # api | scim | hr | directory | cli
    name: str | None = None
    client_ip: str | None = None
    useragent: str | None = None
    auth_method: str = "api_key"


@dataclass(frozen=True)
class Command:
    actor: Actor


@dataclass(frozen=True)
class CreateUser(Command):
    email: str
    username: str
    firstname: str = ""
    lastname: str = ""
    password: str | None = None
    state: UserState = UserState.ACTIVATED
    external_id: str | None = None  # the id a SCIM provider knows the user by


@dataclass(frozen=True)
class UpdateUser(Command):
    user_id: str
    changes: dict[str, str] = field(default_factory=dict)  # firstname, lastname, email, username


@dataclass(frozen=True)
class DeleteUser(Command):
    user_id: str


@dataclass(frozen=True)
class BulkDeleteUsers(Command):
    user_ids: tuple[str, ...]
    confirm_count: int


@dataclass(frozen=True)
class SuspendUser(Command):
    user_id: str


@dataclass(frozen=True)
class ActivateUser(Command):
    user_id: str


@dataclass(frozen=True)
class UnlockUser(Command):
    user_id: str


@dataclass(frozen=True)
class ForcePasswordReset(Command):
    user_id: str


@dataclass(frozen=True)
class SetPassword(Command):
    user_id: str
    password: str


@dataclass(frozen=True)
class ChangePasswordAuthority(Command):
    user_id: str
    authority: PasswordAuthority


@dataclass(frozen=True)
class RequireTotp(Command):
    """An administrator requires TOTP; the user enrolls it in the user portal, confirming a code.
    An administrator never sees a user's secret."""

    user_id: str


@dataclass(frozen=True)
class ResetTotp(Command):
    """Deletes the user's TOTP; ``require``: the user must enroll it again (a reset), else it is
    simply removed."""

    user_id: str
    require: bool = False


@dataclass(frozen=True)
class SetMfaRequired(Command):
    user_id: str
    required: bool


@dataclass(frozen=True)
class DeleteWebauthnCredential(Command):
    user_id: str
    credential_id: str


@dataclass(frozen=True)
class DeletePushDevice(Command):
    user_id: str
    device_id: str


@dataclass(frozen=True)
class AddSshKey(Command):
    user_id: str
    name: str
    public_key: str


@dataclass(frozen=True)
class DeleteSshKey(Command):
    user_id: str
    key_id: str


@dataclass(frozen=True)
class CreateAdmin(Command):
    email: str
    role: Role
    password: str
    api_access: bool = False


@dataclass(frozen=True)
class CreateAdminFromUser(Command):
    role: Role
    user_id: str | None = None
    email: str | None = None
    api_access: bool = False


@dataclass(frozen=True)
class AssignAdminRole(Command):
    """A directory says this user holds ``role``: its handler links the unlinked admin that has the
    user's email, creates an admin from the user, or changes the role of the admin it holds, as
    it finds them in its own transaction. ``api_access`` is for an admin it creates."""

    user_id: str
    role: Role
    api_access: bool = False


@dataclass(frozen=True)
class LinkAdminToUser(Command):
    admin_id: str
    acknowledge: Any = False
    role: Role | None = None  # and give it this role (a directory's admin_role.assigned)


@dataclass(frozen=True)
class RemoveAdminAccess(Command):
    admin_id: str
    acknowledge: Any = False


@dataclass(frozen=True)
class UpdateAdmin(Command):
    admin_id: str
    role: Role | None = None
    api_access: bool | None = None
    email: str | None = None


@dataclass(frozen=True)
class IssueApiKey(Command):
    admin_id: str


@dataclass(frozen=True)
class BootstrapOrganization(Command):
    """A new organization and its first Administrator with Billing (from the CLI)."""

    name: str
    email: str


@dataclass(frozen=True)
class CreateIntegration(Command):
    kind: str  # scim | hr | directory
    name: str
    role: Role
    provider: str = "generic"
    delete_mode: str = "suspend"
    # A signing key the sender generated itself (BambooHR does); None: adminlink makes one.
    secret: str | None = field(default=None, repr=False)


@dataclass(frozen=True)
class RotateIntegrationCredential(Command):
    integration_id: str
    secret: str | None = field(default=None, repr=False)  # as in CreateIntegration


@dataclass(frozen=True)
class DeleteIntegration(Command):
    integration_id: str


# --- SCIM provisioning ---------------------------------------------------------------------------


@dataclass(frozen=True)
class ProvisionedProfile:
    """A user as a SCIM provider wants it: the columns adminlink acts on, and the provider's other
    attributes, kept as given (``attributes``, SCIM JSON)."""

    username: str
    email: str
    firstname: str = ""
    lastname: str = ""
    active: bool = True
    external_id: str | None = None
    display_name: str | None = None
    email_type: str | None = None
    attributes: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class ProvisionUser(Command):
    profile: ProvisionedProfile
    password: str | None = None


@dataclass(frozen=True)
class ReplaceProvisionedUser(Command):
    """A full replace (SCIM PUT, or a PATCH applied to the current state). ``expected_version``
    is the version the new state was computed from; another version refuses the change."""

    user_id: str
    profile: ProvisionedProfile
    password: str | None = None
    expected_version: str | None = None


@dataclass(frozen=True)
class DeprovisionUser(Command):
    """SCIM DELETE: ``delete`` deletes the user; ``suspend`` suspends it and hides it from SCIM."""

    user_id: str
    mode: str = "suspend"
    expected_version: str | None = None


@dataclass(frozen=True)
class ProvisionGroup(Command):
    display_name: str
    external_id: str | None = None
    member_ids: tuple[str, ...] = ()


@dataclass(frozen=True)
class ReplaceProvisionedGroup(Command):
    group_id: str
    display_name: str
    external_id: str | None = None
    member_ids: tuple[str, ...] = ()
    expected_version: str | None = None


@dataclass(frozen=True)
class DeleteProvisionedGroup(Command):
    group_id: str
    expected_version: str | None = None
