"""One handler per command, by feature (users, mfa, keys, admins, organizations), each module
with its HANDLERS table; ``common`` holds what they share. A handler loads, authorizes through
the policy table, calls the domain and commits, on the unit-of-work protocol only.

Every entrypoint (management API, SCIM, webhooks, CLI) reaches them through ``service.messagebus``.
"""

from service.handlers.common import authorize, validate_email

# Named here for the modules that import them from the package (job handlers, inbound events).
__all__ = ["authorize", "validate_email"]
