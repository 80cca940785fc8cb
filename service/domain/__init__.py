"""Pure domain model: identities, roles, rules, commands and events. No I/O here."""
