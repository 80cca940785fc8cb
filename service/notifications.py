"""The emails adminlink sends, rendered once when the change commits and kept in the outbox.

One template per event: each says what happened, and only that."""

from __future__ import annotations

TEMPLATES: dict[str, tuple[str, str]] = {
    # Create a new admin from a user: the user had no admin identity before.
    "admin_role_assigned": (
        "You have been given an admin role",
        "Hello {name},\n\nYour user account {email} has been given the admin role \"{role}\".\n"
        "Sign in to the Admin Portal with your user credentials and your MFA factors.\n",
    ),
    # Update an existing admin with the matching user: the admin's own credentials are gone.
    "admin_linked_to_user": (
        "Your admin account now signs in with your user account",
        "Hello {name},\n\nYour admin account, with the admin role \"{role}\", has been linked to your "
        "user account {email}.\n"
        "Sign in to the Admin Portal with your user credentials and your MFA factors.\n"
        "The admin account's own password and TOTP have been deleted and no longer work.\n",
    ),
    # Remove admin access: the user is kept.
    "admin_role_removed": (
        "Your admin role has been removed",
        "Hello {name},\n\nThe admin role \"{role}\" of your user account {email} has been removed.\n"
        "Your user account is unchanged; you can no longer sign in to the Admin Portal.\n",
    ),
    # Delete a user who holds an admin role: the admin identity goes with it.
    "user_with_admin_role_deleted": (
        "Your user account and its admin role have been deleted",
        "Hello {name},\n\nYour user account {email} has been deleted, and with it its admin role \"{role}\".\n"
        "You can no longer sign in to the User Portal or the Admin Portal.\n",
    ),
    # An admin's change refused by the last-Administrator-with-Billing rule; told to the other admins.
    "last_billing_admin_refused": (
        "A change was refused: it would remove the last Administrator with Billing",
        "Hello,\n\n{actor} tried to {attempt} {target}. It was refused because the organization would be "
        "left without {left_without}.\n",
    ),
    # Failed sign-ins reached the lockout threshold of the last Administrator with Billing: nobody
    # asked for the lock, so nobody is named as having tried it.
    "last_billing_admin_lockout_refused": (
        "A lockout was refused: it would lock out the last Administrator with Billing",
        "Hello,\n\nFailed sign-ins to {target} reached the lockout threshold. The account was not locked "
        "because the organization would be left without an active Administrator with Billing; the "
        "sign-in rate limits still slow further attempts down.\n"
        "If these sign-ins were not made by {target}, change that account's password.\n",
    ),
}


def render(template: str, context: dict[str, str]) -> tuple[str, str]:
    subject, body = TEMPLATES[template]
    return subject, body.format(**context)
