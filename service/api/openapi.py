"""``GET /openapi.json``: the OpenAPI 3.1 description of every endpoint, kept beside the code."""

from __future__ import annotations

import json
from pathlib import Path

from aiohttp import web

routes = web.RouteTableDef()
DOCUMENT = Path(__file__).with_name("openapi.json")


@routes.get("/openapi.json")
async def openapi(request: web.Request) -> web.Response:
    return web.Response(body=DOCUMENT.read_bytes(), content_type="application/json")


def document() -> dict:  # type: ignore[type-arg]
    loaded: dict = json.loads(DOCUMENT.read_text())  # type: ignore[type-arg]
    return loaded
