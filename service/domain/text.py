"""Text no database can store: refused wherever input arrives, whatever the entrypoint."""

from __future__ import annotations

from typing import Any


def unstorable_text(value: Any) -> bool:
    """Whether a JSON document holds a string no database can store: a NUL character (PostgreSQL
    text cannot hold one) or an unpaired surrogate (not encodable as UTF-8). No identity, email or
    query needs either."""
    if isinstance(value, str):
        return "\x00" in value or (not value.isascii() and not _encodable(value))
    if isinstance(value, dict):
        return any(unstorable_text(k) or unstorable_text(v) for k, v in value.items())
    if isinstance(value, list):
        return any(unstorable_text(v) for v in value)
    return False


def _encodable(text: str) -> bool:
    try:
        text.encode()
    except UnicodeEncodeError:
        return False
    return True
