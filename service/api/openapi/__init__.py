"""``GET /openapi.json``: the OpenAPI 3.1 description of every endpoint.

The document is kept beside the code as JSON parts, one per area of the API (``base.json`` plus
``management.json``, ``signin.json``, ``scim.json``, ``webhooks.json``, ``ops.json``, ...): each part
holds ``paths`` and ``components.schemas`` and they are merged here.
"""

from __future__ import annotations

import json
from functools import cache
from pathlib import Path
from typing import Any

from aiohttp import web

routes = web.RouteTableDef()
PARTS = Path(__file__).parent


@cache
def document() -> dict[str, Any]:
    merged: dict[str, Any] = json.loads((PARTS / "base.json").read_text())
    for part in sorted(PARTS.glob("*.json")):
        if part.name == "base.json":
            continue
        loaded = json.loads(part.read_text())
        merged["paths"].update(loaded.get("paths", {}))
        merged["components"]["schemas"].update(loaded.get("components", {}).get("schemas", {}))
        merged["components"].setdefault("securitySchemes", {}).update(
            loaded.get("components", {}).get("securitySchemes", {}))
    return merged


@routes.get("/openapi.json")
async def openapi(request: web.Request) -> web.Response:
    return web.json_response(document())
