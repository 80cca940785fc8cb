"""The OpenAPI document tells the truth: it is valid OpenAPI 3.1, it describes every route the
application serves and no route it does not, every stable error code the service raises is named
in it, and what the API really answers matches the schemas it documents."""

from __future__ import annotations

import json
import re
from collections import defaultdict
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from aiohttp import web
from aiohttp.test_utils import TestClient
from openapi_schema_validator import OAS31Validator
from openapi_spec_validator import validate

from service.adapters.sessions import Session
from service.api import openapi
from service.app import create_app
from service.bootstrap import Services
from service.domain.model import MfaEnrollment, PasswordAuthority, Role, UserState
from service.http.context import SERVICES
from service.policy import Action
from tests.conftest import Api, Org, enroll_totp_as_the_user
from tests.service.test_scim_support import scim_integration

ROOT = Path(__file__).resolve().parents[2]
METHODS = ("get", "put", "post", "delete", "patch", "options", "head", "trace")
# The parts whose routes this document must always cover in full.
CORE_MODULES = ("service.api.management", "service.api.auth", "service.api.health", "service.api.openapi")
# Where the management API, portal sessions and their shared layers raise their stable codes.
CODE_SOURCES = (
    "service/handlers", "service/integrations.py", "service/domain", "service/http/inputs.py",
    "service/http/errors.py", "service/api/idempotency.py", "service/api/management.py", "service/api/auth.py",
)
RAISED_CODE = re.compile(
    r'(?:Conflict|InvalidRequest|NotFound|Forbidden|bad_request|__init__|ApiError\(\s*\d+\s*,)\s*\(?\s*"([a-z_]+)"'
)
SEARCH_REQUEST = "urn:ietf:params:scim:api:messages:2.0:SearchRequest"
# Raised only by the command-line bootstrap of an organization, never over HTTP.
NOT_HTTP_CODES = {"invalid_name"}


def served_routes(app: web.Application) -> dict[tuple[str, str], str]:
    """(method, path) -> the module of its handler, for every route the application serves."""
    routes = {}
    for route in app.router.routes():
        resource = route.resource
        if route.method in ("HEAD", "*") or resource is None or isinstance(resource, web.StaticResource):
            continue
        routes[(route.method.lower(), resource.canonical)] = route.handler.__module__
    return routes


def documented_operations() -> set[tuple[str, str]]:
    return {(method, path) for path, item in openapi.document()["paths"].items() for method in item
            if method in METHODS}


def missing_report(missing: dict[tuple[str, str], str]) -> str:
    by_module: dict[str, list[str]] = defaultdict(list)
    for (method, path), module in sorted(missing.items()):
        by_module[module].append(f"{method.upper()} {path}")
    return "routes served but not in the OpenAPI document:\n" + "\n".join(
        f"  {module}:\n" + "\n".join(f"    {route}" for route in routes) for module, routes in by_module.items()
    )


def assert_documented(method: str, path: str, status: int, body: Any) -> None:
    """The answer's status is documented for the operation and its body matches the schema."""
    responses = openapi.document()["paths"][path][method.lower()]["responses"]
    assert str(status) in responses, f"{method} {path} answered {status}, not documented: {body}"
    content = responses[str(status)].get("content")
    if content is None:
        assert body is None, f"{method} {path} {status} documents no body but answered {body}"
        return
    schema = {**content["application/json"]["schema"], "components": openapi.document()["components"]}
    OAS31Validator(schema, format_checker=OAS31Validator.FORMAT_CHECKER).validate(body)
    if status >= 400:
        assert f"`{body['error']['code']}`" in responses[str(status)]["description"], (method, path, body)


async def exchange(api: Api, method: str, template: str, body: Any = None, expect: int = 200, query: str = "",
                   **ids: str) -> Any:
    status, data = await api.call(method, template.format(**ids) + query, body)
    assert status == expect, (method, template, status, data)
    assert_documented(method, template, status, data)
    return data


# --- the document itself -------------------------------------------------------------------


def test_document_is_valid_openapi_3_1() -> None:
    document = openapi.document()
    assert document["openapi"].startswith("3.1.")
    validate(document)


def test_parts_do_not_overwrite_each_other() -> None:
    """The parts are merged key by key: a path or schema defined in two parts would silently
    lose one of them."""
    owners: dict[tuple[str, str], list[str]] = defaultdict(list)
    for part in sorted(openapi.PARTS.glob("*.json")):
        loaded = json.loads(part.read_text())
        components = loaded.get("components", {})
        for section, entries in (("paths", loaded.get("paths", {})),
                                 ("schemas", components.get("schemas", {})),
                                 ("securitySchemes", components.get("securitySchemes", {}))):
            for name in entries:
                owners[(section, name)].append(part.name)
    clashes = {f"{section} {name}": parts for (section, name), parts in owners.items() if len(parts) > 1}
    assert not clashes, f"defined in more than one part: {clashes}"


def test_enumerations_match_the_code() -> None:
    schemas = openapi.document()["components"]["schemas"]
    for name, enum_type in (("Role", Role), ("UserState", UserState), ("PasswordAuthority", PasswordAuthority),
                            ("MfaEnrollment", MfaEnrollment), ("PolicyAction", Action)):
        assert schemas[name]["enum"] == [member.value for member in enum_type], name
    check = openapi.document()["paths"]["/api/v1/policy/check"]["post"]["description"]
    assert all(f"`{action.value}`" in check for action in Action)


def test_api_key_operations_declare_the_key_and_its_refusal() -> None:
    """Every request under /api/ and /insights/ passes the API-key check first (service.app)."""
    wrong = []
    for path, item in openapi.document()["paths"].items():
        if not path.startswith(("/api/", "/insights/")):
            continue
        for method, operation in item.items():
            if method in METHODS and ({"apiKey": []} not in operation.get("security", [])
                                      or "401" not in operation["responses"]):
                wrong.append(f"{method.upper()} {path}")
    assert not wrong, f"without apiKey security or a 401 response: {wrong}"


def test_every_error_code_raised_is_documented() -> None:
    raised: set[str] = set()
    for source in CODE_SOURCES:
        files = sorted((ROOT / source).glob("*.py")) if (ROOT / source).is_dir() else [ROOT / source]
        for file in files:
            raised.update(RAISED_CODE.findall(file.read_text()))
    assert {"permission_denied", "last_billing_admin", "unauthorized", "missing_field"} <= raised
    text = json.dumps(openapi.document())
    undocumented = sorted(code for code in raised - NOT_HTTP_CODES if f"`{code}`" not in text)
    assert not undocumented, f"error codes no operation documents: {undocumented}"


def family_content_type(path: str) -> str:
    """How each part of the API answers errors (service.edge answers in the same way)."""
    if path.startswith("/scim/"):
        return "application/scim+json"
    return "text/html" if path.startswith("/ops/") else "application/json"


def query_operations() -> list[tuple[str, str, list[str]]]:
    """(method, path, query parameter names) of every operation that takes a query."""
    found = []
    for path, item in openapi.document()["paths"].items():
        for method, operation in item.items():
            if method not in METHODS:
                continue
            parameters = [*item.get("parameters", []), *operation.get("parameters", [])]
            names = [p["name"] for p in parameters if p.get("in") == "query"]
            if names:
                found.append((method, path, names))
    return found


def test_operations_with_a_query_document_its_400_in_their_error_format() -> None:
    """Any query can hold a NUL character, which is refused before routing (invalid_query)."""
    wrong = [f"{method.upper()} {path}" for method, path, _ in query_operations()
             if family_content_type(path) not in openapi.document()["paths"][path][method]["responses"]
             .get("400", {}).get("content", {})]
    assert not wrong, f"without a 400 in their part's error format: {wrong}"


async def test_a_nul_in_any_query_answers_the_documented_400(client: TestClient) -> None:
    for method, path, names in query_operations():
        url = re.sub(r"\{[^}]+\}", "0" * 32, path) + f"?{names[0]}=a%00b"
        response = await client.request(method.upper(), url)
        assert response.status == 400, (method, path, response.status)
        assert response.content_type == family_content_type(path), (method, path, response.content_type)
        if response.content_type == "application/json":
            assert_documented(method, path, 400, await response.json())


# --- the document against the routes -------------------------------------------------------


async def test_core_routes_are_documented(services: Services) -> None:
    served = served_routes(create_app(services))
    core = {route: module for route, module in served.items() if module in CORE_MODULES}
    assert len(core) >= 40
    missing = {route: module for route, module in core.items() if route not in documented_operations()}
    assert not missing, missing_report(missing)


async def test_every_served_route_is_documented(services: Services) -> None:
    served = served_routes(create_app(services))
    missing = {route: module for route, module in served.items() if route not in documented_operations()}
    assert not missing, missing_report(missing)


async def test_every_documented_operation_is_served(services: Services) -> None:
    served = served_routes(create_app(services))
    phantom = sorted(f"{method.upper()} {path}" for method, path in documented_operations() - set(served))
    assert not phantom, f"documented but not served: {phantom}"


async def test_openapi_json_serves_the_document(client: TestClient) -> None:
    response = await client.get("/openapi.json")
    assert response.status == 200
    assert response.content_type == "application/json"
    assert await response.json() == openapi.document()


# --- the document against real answers -----------------------------------------------------


async def test_user_answers_match_the_schemas(api: Api) -> None:
    user = await exchange(api, "POST", "/api/v1/users", {"email": "doc-user@acme.test", "username": "doc-user",
                                                         "password": "a long user password 1"}, 201)
    uid = user["id"]
    found = await exchange(api, "GET", "/api/v1/users", query="?limit=5&skip=0&email=DOC-USER@acme.test")
    assert [u["id"] for u in found["results"]] == [uid]
    listed = await exchange(api, "GET", "/api/v1/users")
    assert listed["totalCount"] >= 1
    await exchange(api, "GET", "/api/v1/users/{user_id}", user_id=uid)
    await exchange(api, "PATCH", "/api/v1/users/{user_id}", {"firstname": "Doc"}, user_id=uid)
    required = await exchange(api, "POST", "/api/v1/users/{user_id}/mfa/totp", user_id=uid)
    assert required["mfa"] == {"configured": False, "required": True, "factors": []}
    await enroll_totp_as_the_user(api.client.app[SERVICES], uid)
    await exchange(api, "POST", "/api/v1/users/{user_id}/mfa/totp/reset", user_id=uid)
    await enroll_totp_as_the_user(api.client.app[SERVICES], uid)
    await exchange(api, "PUT", "/api/v1/users/{user_id}/mfa/required", user_id=uid)
    shown = await exchange(api, "DELETE", "/api/v1/users/{user_id}/mfa/required", user_id=uid)
    assert shown["mfa"]["factors"] == ["totp"]
    for action in ("suspend", "activate", "unlock", "expire-password"):
        await exchange(api, "POST", f"/api/v1/users/{{user_id}}/{action}", user_id=uid)
    await exchange(api, "PUT", "/api/v1/users/{user_id}/password", {"password": "another long password"},
                   user_id=uid)
    await exchange(api, "PUT", "/api/v1/users/{user_id}/password-authority", {"authority": "scim"}, user_id=uid)
    key = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIOMqqnkVzrm0SdG6UOoqKLsabgH5C9okWi0dh2l9GKJl doc@acme"
    added = await exchange(api, "POST", "/api/v1/users/{user_id}/ssh-keys", {"public_key": key}, 201, user_id=uid)
    await exchange(api, "GET", "/api/v1/users/{user_id}/ssh-keys", user_id=uid)
    await exchange(api, "DELETE", "/api/v1/users/{user_id}/ssh-keys/{key_id}", expect=204, user_id=uid,
                   key_id=added["id"])
    await exchange(api, "DELETE", "/api/v1/users/{user_id}/mfa/totp", expect=204, user_id=uid)
    await exchange(api, "DELETE", "/api/v1/users/{user_id}/mfa/webauthn/{credential_id}", expect=404,
                   user_id=uid, credential_id="nope")
    await exchange(api, "DELETE", "/api/v1/users/{user_id}/mfa/push/{device_id}", expect=404, user_id=uid,
                   device_id="nope")
    await exchange(api, "POST", "/api/v1/policy/check", {"action": "suspend_user", "user_id": uid})
    await exchange(api, "POST", "/api/v1/users/bulk-delete", {"ids": [uid], "confirm_count": 2}, 400)
    await exchange(api, "POST", "/api/v1/users/bulk-delete", {"ids": [uid], "confirm_count": 1})
    await exchange(api, "DELETE", "/api/v1/users/{user_id}", expect=404, user_id=uid)


async def test_admin_and_integration_answers_match_the_schemas(api: Api, org: Org) -> None:
    user = await api.user("doc-admin@acme.test")
    await exchange(api, "POST", "/api/v1/admins/from-user", {"user_id": user["id"], "role": "Manager"}, 201)
    classic = await exchange(api, "POST", "/api/v1/admins", {"email": "doc-classic@acme.test", "role": "Help Desk",
                                                             "password": "a long admin password 1"}, 201)
    await api.user("doc-classic@acme.test")
    shown = await exchange(api, "GET", "/api/v1/admins/{admin_id}", admin_id=classic["id"])
    assert shown["matching_user_id"] is not None
    await exchange(api, "GET", "/api/v1/admins")
    await exchange(api, "PATCH", "/api/v1/admins/{admin_id}", {"api_access": True}, admin_id=classic["id"])
    await exchange(api, "POST", "/api/v1/admins/{admin_id}/api-keys", expect=201, admin_id=classic["id"])
    await exchange(api, "POST", "/api/v1/admins/{admin_id}/link-user", {}, 400, admin_id=classic["id"])
    await exchange(api, "POST", "/api/v1/admins/{admin_id}/link-user", {"acknowledge": True},
                   admin_id=classic["id"])
    await exchange(api, "POST", "/api/v1/admins/{admin_id}/remove-access", {"acknowledge": True}, 409,
                   admin_id=org.admin_id)
    await exchange(api, "POST", "/api/v1/admins/{admin_id}/remove-access", {"acknowledge": True}, 204,
                   admin_id=classic["id"])
    for kind in ("scim", "hr"):
        made = await exchange(api, "POST", "/api/v1/integrations", {"kind": kind, "name": f"doc {kind}",
                                                                    "role": "Manager"}, 201)
        await exchange(api, "POST", "/api/v1/integrations/{integration_id}/rotate", integration_id=made["id"])
    listed = await exchange(api, "GET", "/api/v1/integrations")
    await exchange(api, "DELETE", "/api/v1/integrations/{integration_id}", expect=204,
                   integration_id=listed["results"][0]["id"])
    outbox = await exchange(api, "GET", "/api/v1/mail/outbox", query="?limit=10")
    assert outbox, "assigning and removing admin roles sends email"


async def test_refusals_match_the_error_schema(api: Api, client: TestClient) -> None:
    _, read_only = await api.admin_with_key(Role.READ_ONLY)
    denied = await exchange(read_only, "POST", "/api/v1/users", {"email": "x@acme.test", "username": "x"}, 403)
    assert denied["error"]["required_role"] == "Help Desk"
    await exchange(read_only, "GET", "/api/v1/mail/outbox", expect=403)
    await exchange(Api(client, "not a key"), "GET", "/api/v1/users", expect=401)
    await exchange(api, "GET", "/api/v1/users/{user_id}", expect=404, user_id="nope")
    await exchange(api, "GET", "/api/v1/users", expect=400, query="?limit=0")
    response = await client.post("/api/v1/users", data=b"{not json", headers={"x-api-key": api.key})
    assert response.status == 400
    assert_documented("POST", "/api/v1/users", response.status, await response.json())
    body = {"email": "retry@acme.test", "username": "retry"}
    first = await api.call("POST", "/api/v1/users", body, **{"Idempotency-Key": "doc-1"})
    assert first == await api.call("POST", "/api/v1/users", body, **{"Idempotency-Key": "doc-1"})
    status, data = await api.call("POST", "/api/v1/users", {**body, "username": "other"},
                                  **{"Idempotency-Key": "doc-1"})
    assert (status, data["error"]["code"]) == (422, "idempotency_key_reused")
    assert_documented("POST", "/api/v1/users", status, data)


async def test_session_answers_match_the_schemas(api: Api, services: Services, org: Org,
                                                 client: TestClient) -> None:
    response = await client.get("/auth/session")
    assert (response.status, (await response.json())["error"]["code"]) == (401, "not_signed_in")
    assert_documented("GET", "/auth/session", response.status, await response.json())
    created = datetime.now(UTC).isoformat()
    token = await services.sessions.open(Session("admin", org.admin_id, org.id, 0, "admin_portal", "totp", created))
    bearer = {"Authorization": f"Bearer {token}"}
    response = await client.get("/auth/session", headers=bearer)
    assert response.status == 200
    assert_documented("GET", "/auth/session", 200, await response.json())
    response = await client.post("/auth/logout", cookies={"adminlink_session": token})
    assert response.status == 204
    assert_documented("POST", "/auth/logout", response.status, None)
    response = await client.get("/auth/session", headers=bearer)
    assert_documented("GET", "/auth/session", response.status, await response.json())
    assert (await response.json())["error"]["code"] == "session_ended"


async def test_a_method_no_route_takes_is_405_whatever_its_idempotency_key(api: Api, client: TestClient) -> None:
    body = {"email": "ik405@acme.test", "username": "ik405"}
    assert (await api.call("POST", "/api/v1/users", body, **{"Idempotency-Key": "ik-405"}))[0] == 201
    for method in ("PUT", "PATCH"):
        response = await client.request(method, "/api/v1/users", json=body,
                                        headers={"x-api-key": api.key, "Idempotency-Key": "ik-405"})
        assert response.status == 405, await response.text()
        assert (await response.json())["error"]["code"] == "method_not_allowed"
        assert "POST" in response.headers["Allow"]


async def test_a_search_whose_schemas_are_not_uris_is_invalid_syntax(api: Api) -> None:
    scim = await scim_integration(api)
    for path in ("/Users/.search", "/Groups/.search", "/.search"):
        for schemas in ([{}], "urn:ietf:params:scim:api:messages:2.0:SearchRequest", [1]):
            status, answer = await scim.call("POST", path, {"schemas": schemas, "count": 1})
            assert (status, answer["scimType"]) == (400, "invalidSyntax"), (path, schemas, answer)
        status, _ = await scim.call("POST", path, {"schemas": [SEARCH_REQUEST], "count": 1})
        assert status == 200


async def test_the_allow_header_of_a_405_names_the_paths_own_methods(api: Api, client: TestClient) -> None:
    """/api/v1/users/bulk-delete also matches /api/v1/users/{user_id}; its Allow is its own."""
    for path, allowed in (("/api/v1/users/bulk-delete", "POST"), ("/api/v1/admins/from-user", "POST"),
                          ("/api/v1/users", "GET,HEAD,POST"), ("/api/v1/admins", "GET,HEAD,POST")):
        response = await client.request("OPTIONS", path, headers={"x-api-key": api.key})
        assert (response.status, response.headers["Allow"]) == (405, allowed), path
    response = await client.request("PUT", "/api/v1/users/0123", headers={"x-api-key": api.key})
    assert response.status == 405 and set(response.headers["Allow"].split(",")) == {"GET", "HEAD", "PATCH", "DELETE"}


async def test_a_scim_group_put_with_null_members_has_none(api: Api) -> None:
    scim = await scim_integration(api)
    user = await scim.create_user()
    group = await scim.ok("POST", "/Groups", {"schemas": ["urn:ietf:params:scim:schemas:core:2.0:Group"],
                                              "displayName": "nulls", "members": [{"value": user["id"]}]})
    replaced = await scim.ok("PUT", f"/Groups/{group['id']}", {
        "schemas": ["urn:ietf:params:scim:schemas:core:2.0:Group"], "displayName": "nulls", "members": None})
    assert not replaced.get("members")
