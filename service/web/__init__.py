"""The portals as server-rendered pages: the user portal (``/portal/``) and the admin portal
(``/admin/``), on the same app and the same handlers as the JSON API. Templates autoescape;
scripts and the stylesheet are static files (the CSP allows no inline script or style)."""

from __future__ import annotations

from pathlib import Path

import aiohttp_jinja2
import jinja2
from aiohttp import web

from service.web import admin_portal, insights_page, user_portal

HERE = Path(__file__).resolve().parent


def setup(app: web.Application) -> None:
    aiohttp_jinja2.setup(app, loader=jinja2.FileSystemLoader(HERE / "templates"),
                         autoescape=jinja2.select_autoescape(default=True, default_for_string=True))
    app.add_routes(user_portal.routes)
    app.add_routes(admin_portal.routes)
    app.add_routes(insights_page.routes)
    app.router.add_static("/static/", HERE / "static", name="static", append_version=False)
