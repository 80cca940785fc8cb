"""The first check every request meets, before authentication and routing: input no database or
hash can take is refused here, in the error format of the route family it was sent to.

What the check refuses is ``service.domain.text.unstorable_text``: a NUL character (PostgreSQL
text cannot hold one) or text that is not UTF-8. aiohttp decodes header bytes that are not UTF-8 into lone
surrogates (``\\xff`` arrives as ``\\udcff``), which fail later wherever the value is encoded: the
hash of an API key, a bearer token or a session cookie, an ``Idempotency-Key`` row, a log line.
The path and the query string are checked here too. The body and values decoded later (JSON
strings, SCIM filter literals) are checked with the same predicate where they are decoded:
``inputs.json_body``, the SCIM body and filter parser, the webhook payloads.
"""

from __future__ import annotations

from dataclasses import dataclass

from aiohttp import web

from service.api import ops_pages
from service.api.ops import html
from service.domain.text import unstorable_text
from service.http.errors import error_body
from webhooks.scim import errors as scim_errors


@dataclass(frozen=True)
class Refusal:
    status: int
    code: str
    message: str


def refusal_for(request: web.Request) -> Refusal | None:
    if unstorable_text(request.path):
        return Refusal(404, "not_found", "no resource has a NUL character in its path")
    if unstorable_text(request.query_string):
        return Refusal(400, "invalid_query", "the query string contains a NUL character")
    for name, value in request.headers.items():
        if unstorable_text(name) or unstorable_text(value):
            shown = "a" if unstorable_text(name) else f"the {name}"
            return Refusal(400, "invalid_encoding", f"{shown} header holds a NUL character or bytes that are not "
                                                    "UTF-8")
    return None


def respond(request: web.Request, refusal: Refusal) -> web.Response:
    """The refusal as the route family answers errors: a SCIM Error body under /scim, an HTML page
    on the ops dashboard, the JSON error body everywhere else."""
    path = request.path
    if path.startswith("/scim/"):
        scim_type = "invalidValue" if refusal.status == 400 else None
        return scim_errors.error_response(refusal.status, f"{refusal.code}: {refusal.message}", scim_type)
    if path == "/ops" or path.startswith("/ops/"):
        page = ops_pages.message("Bad request" if refusal.status == 400 else "Not found", refusal.message)
        return html(request, page, None, refusal.status)
    return web.json_response(error_body(refusal.code, refusal.message), status=refusal.status)
