"""Request shapes providers send that scim2-models does not read as they are.

Microsoft Entra ID sends the enterprise extension's ``manager`` as a bare string (the manager's
id) where RFC 7643 §4.3 has a complex attribute: it is read as ``{"value": id}``. Capitalised
``op`` values, ``"False"`` strings, dotted keys in a no-path replace and a remove carrying a value
are read by scim2-models itself (the last under ``schema.POLICY``).
"""

from __future__ import annotations

from typing import Any

from webhooks.scim.schema import ENTERPRISE_SCHEMA

MANAGER_PATH = f"{ENTERPRISE_SCHEMA}:manager".lower()


def _manager(value: Any) -> Any:
    return {"value": value} if isinstance(value, str) else value


def _extension(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _manager(v) if k.lower() == "manager" else v for k, v in value.items()}
    return value


def _keys(document: dict[str, Any]) -> dict[str, Any]:
    fixed: dict[str, Any] = {}
    for key, value in document.items():
        lowered = key.lower()
        if lowered == ENTERPRISE_SCHEMA.lower():
            value = _extension(value)
        elif lowered in (MANAGER_PATH, "manager"):
            value = _manager(value)
        fixed[key] = value
    return fixed


def resource_body(body: dict[str, Any]) -> dict[str, Any]:
    return _keys(body)


def patch_body(body: dict[str, Any]) -> dict[str, Any]:
    operations = body.get("Operations", body.get("operations"))
    if not isinstance(operations, list):
        return body
    fixed = []
    for operation in operations:
        if isinstance(operation, dict):
            operation = dict(operation)
            path = operation.get("path")
            value = operation.get("value")
            if isinstance(path, str) and path.strip().lower() in (MANAGER_PATH, "manager"):
                operation["value"] = _manager(value)
            elif isinstance(path, str) and path.strip().lower() == ENTERPRISE_SCHEMA.lower():
                operation["value"] = _extension(value)
            elif path is None and isinstance(value, dict):
                operation["value"] = _keys(value)
        fixed.append(operation)
    key = "Operations" if "Operations" in body else "operations"
    return {**body, key: fixed}
