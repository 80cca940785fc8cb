"""Versions (ETags) of SCIM representations: one digest of everything a representation shows,
whichever path changed it, so a provider's If-Match means the same to every reader and writer."""

from __future__ import annotations

import hashlib
import json
from typing import Any


def _digest(document: object) -> str:
    text = json.dumps(document, sort_keys=True, separators=(",", ":"), default=str)
    return 'W/"' + hashlib.sha256(text.encode()).hexdigest()[:24] + '"'


def user_version(user: Any, profile: Any, groups: list[tuple[str, str]]) -> str:
    """What the SCIM representation of the user shows (SCIM, management API); sign-in lockouts
    do not show and do not count. ``user`` is a User or a users row: both have its columns."""
    return _digest([
        user.username, user.email, user.firstname, user.lastname, user.state.value, user.external_id,
        getattr(profile, "display_name", None), getattr(profile, "email_type", None),
        getattr(profile, "attributes", None), sorted(groups),
    ])


def group_version(group: Any, member_ids: list[str]) -> str:
    return _digest([group.display_name, group.external_id, sorted(member_ids)])

