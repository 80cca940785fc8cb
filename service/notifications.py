"""The emails adminlink sends, rendered once when the change commits and kept in the outbox."""

from __future__ import annotations

TEMPLATES: dict[str, tuple[str, str]] = {
    "admin_role_assigned": (
        "You have been given an admin role",
        "Hello {name},\n\nYour user account {email} has been given the admin role \"{role}\".\n"
        "Sign in to the Admin Portal with your user credentials and your MFA factors.\n"
        "Your previous admin password and TOTP, if you had any, no longer work.\n",
    ),
    "admin_role_removed": (
        "Your admin role has been removed",
        "Hello {name},\n\nThe admin role of your user account {email} has been removed.\n"
        "Your user account is unchanged; you can no longer sign in to the Admin Portal.\n",
    ),
    "last_billing_admin_refused": (
        "A change was refused: it would remove the last Administrator with Billing",
        "Hello,\n\n{actor} tried to {attempt} {target}. It was refused because the organization would be "
        "left without {left_without}.\n",
    ),
}


def render(template: str, context: dict[str, str]) -> tuple[str, str]:
    subject, body = TEMPLATES[template]
    return subject, body.format(**context)
