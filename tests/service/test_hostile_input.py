"""Hostile input answers a clear 4xx and changes nothing: deep nesting, out-of-range dates and
numbers, NUL characters and bytes that are not UTF-8 wherever they arrive, and a SCIM re-create
that would bypass the permission table."""

from __future__ import annotations

import asyncio
import json
import logging
from urllib.parse import quote

import pytest
from aiohttp.test_utils import TestClient

from service.domain.model import Role
from service.http.context import SERVICES
from tests.conftest import Api, Org, enroll_totp_as_the_user
from tests.service.test_scim_support import scim_integration

DEEP = b"[" * 100_000


async def test_deeply_nested_json_is_a_400(api: Api, client: TestClient) -> None:
    response = await client.post("/api/v1/users", data=DEEP, headers={"x-api-key": api.key})
    assert response.status == 400 and (await response.json())["error"]["code"] == "invalid_json"
    scim = await scim_integration(api)
    response = await client.post("/scim/v2/Users", data=DEEP, headers={"Authorization": f"Bearer {scim.token}"})
    assert response.status == 400 and (await response.json())["scimType"] == "invalidSyntax"


async def test_nul_characters_are_a_400_and_change_nothing(api: Api, client: TestClient) -> None:
    """PostgreSQL text cannot hold NUL: refused on reading, never a database error."""
    before = await api.get("/api/v1/users")
    for body in ({"email": "nul\x00@acme.test", "username": "nul", "password": "a long user password"},
                 {"email": "nul@acme.test", "username": "nul", "password": "a long user password", "x\x00": 1},
                 {"email": "half\ud800@acme.test", "username": "half", "password": "a long user password"}):
        status, answer = await api.post("/api/v1/users", body)
        assert (status, answer["error"]["code"]) == (400, "invalid_json"), answer
    response = await client.post("/api/v1/users", data=b'{"email": "n@acme.test", "failed": NaN}',
                                 headers={"x-api-key": api.key})
    assert response.status == 400 and (await response.json())["error"]["code"] == "invalid_json"
    search = {"and": {"resource.email": "\x00"}}
    status, answer = await api.post("/insights/directory/v1/events",
                                    {"service": ["all"], "start_time": "2020-01-01T00:00:00Z", "search_term": search})
    assert (status, answer["error"]["code"]) == (400, "invalid_json")
    assert await api.get("/api/v1/users") == before


async def test_out_of_range_times_are_a_400(api: Api, org: Org) -> None:
    body = {"service": ["all"], "start_time": "0001-01-01T00:00:00+01:00"}
    status, answer = await api.post("/insights/directory/v1/events", body)
    assert (status, answer["error"]["code"]) == (400, "invalid_time")
    body = {"service": ["all"], "start_time": "2020-01-01T00:00:00Z", "search_after": ["Infinity", "x"]}
    status, answer = await api.post("/insights/directory/v1/events", body)
    assert (status, answer["error"]["code"]) == (400, "invalid_search_after")
    scim = await scim_integration(api)
    status, answer = await scim.call("GET", '/Users?filter=meta.created%20gt%20%220001-01-01T00:00:00%2B01:00%22')
    assert status == 400 and answer["scimType"] == "invalidFilter"
    status, _ = await scim.call("GET", f"/Users?startIndex={10**20}")
    assert status == 200


async def test_a_scim_re_create_checks_the_permission_table(api: Api, org: Org) -> None:
    billing = await scim_integration(api, Role.BILLING, delete_mode="suspend")
    help_desk = await scim_integration(api, Role.HELP_DESK, delete_mode="suspend")
    created = await billing.create_user()
    status, _ = await billing.call("DELETE", f"/Users/{created['id']}")
    assert status == 204
    await api.ok("POST", f"/api/v1/users/{created['id']}/activate")
    await api.ok("PUT", f"/api/v1/users/{created['id']}/password", {"password": "a long user password 1"})
    await enroll_totp_as_the_user(api.client.app[SERVICES], created["id"])
    await api.admin_from_user({"id": created["id"]}, Role.ADMINISTRATOR)
    await api.ok("POST", f"/api/v1/users/{created['id']}/suspend")
    status, answer = await help_desk.call("POST", "/Users", {
        "schemas": ["urn:ietf:params:scim:schemas:core:2.0:User"], "userName": created["userName"],
        "emails": created["emails"], "name": created["name"], "active": False})
    assert status == 403, answer
    status, _ = await billing.call("GET", f"/Users/{created['id']}")
    assert status == 404  # still hidden from SCIM: the refused re-create changed nothing


# Filters whose string escapes decode to a NUL or a lone surrogate: PostgreSQL cannot take either.
HOSTILE_FILTERS = [
    ("/Users", 'userName eq "\\ud800"'),
    ("/Users", 'userName eq "\\u0000"'),
    ("/Users", 'userName co "a\\u0000"'),
    ("/Users", 'id eq "\\u0000"'),
    ("/Users", 'emails[value eq "\\ud800"]'),
    ("/Users", 'emails.value sw "\\u0000" or userName pr'),
    ("/Groups", 'displayName eq "\\u0000"'),
    ("/Groups", 'not (displayName co "\\udfff")'),
]


async def test_scim_filter_escapes_that_decode_to_unstorable_text_are_a_400(api: Api) -> None:
    scim = await scim_integration(api)
    for resource, text in HOSTILE_FILTERS:
        status, answer = await scim.call("GET", f"{resource}?filter={quote(text)}")
        assert (status, answer["scimType"]) == (400, "invalidFilter"), (text, answer)
        status, answer = await scim.call("POST", f"{resource}/.search", {"filter": text})
        assert (status, answer["scimType"]) == (400, "invalidFilter"), (text, answer)


async def raw_request(client: TestClient, head: bytes, body: bytes = b"") -> tuple[int, dict[str, str], bytes]:
    """Sends bytes as they are (no client would send \\xff in a header) to the real test server."""
    assert client.server.host is not None and client.server.port is not None
    reader, writer = await asyncio.open_connection(client.server.host, client.server.port)
    writer.write(head + b"\r\nHost: localhost\r\nConnection: close\r\n"
                 + (b"Content-Length: %d\r\n" % len(body) if body else b"") + b"\r\n" + body)
    await writer.drain()
    answer = await reader.read()
    writer.close()
    await writer.wait_closed()
    header_block, _, content = answer.partition(b"\r\n\r\n")
    status_line, *lines = header_block.decode("latin-1").split("\r\n")
    headers = {name.lower(): value.strip() for name, _, value in (line.partition(":") for line in lines)}
    return int(status_line.split()[1]), headers, content


# Credential headers carrying a byte that is not UTF-8 (aiohttp hands it on as a lone surrogate),
# sent before any sign-in: the route family's error format, never a 500.
NON_UTF8_HEADERS = [
    (b"GET /api/v1/users", b"x-api-key: \xff", "json"),
    (b"GET /insights/directory/v1/events", b"x-api-key: \xff", "json"),
    (b"GET /api/v1/ops/queues", b"x-api-key: \xff", "json"),
    (b"GET /metrics", b"x-api-key: \xff", "json"),
    (b"GET /scim/v2/Users", b"Authorization: Bearer \xff", "scim"),
    (b"GET /auth/session", b"Authorization: Bearer \xff", "json"),
    (b"POST /auth/logout", b"Authorization: Bearer \xff", "json"),
    (b"GET /auth/session", b"Cookie: adminlink_session=\xff", "json"),
    (b"GET /ops/", b"Cookie: adminlink_session=\xfftoken", "html"),
    (b"GET /ops/jobs?status=failed", b"Cookie: adminlink_session=ok; other=\xc3\x28", "html"),
    (b"GET /api/v1/users", b"User-Agent: agent \xed\xa0\x80", "json"),
]


@pytest.mark.parametrize(("request_line", "header", "family"), NON_UTF8_HEADERS)
async def test_non_utf8_header_bytes_are_a_400_in_the_route_familys_format(
        client: TestClient, request_line: bytes, header: bytes, family: str) -> None:
    status, headers, content = await raw_request(client, request_line + b" HTTP/1.1\r\n" + header)
    assert status == 400, content
    if family == "scim":
        assert headers["content-type"].startswith("application/scim+json")
        answer = json.loads(content)
        assert answer["scimType"] == "invalidValue" and answer["detail"].startswith("invalid_encoding: ")
    elif family == "html":
        assert headers["content-type"].startswith("text/html") and b"not UTF-8" in content
    else:
        assert json.loads(content)["error"]["code"] == "invalid_encoding"


async def test_a_non_utf8_idempotency_key_is_a_400_that_changes_and_logs_nothing(
        api: Api, client: TestClient, caplog: pytest.LogCaptureFixture) -> None:
    before = await api.get("/api/v1/users")
    body = json.dumps({"email": "ik@acme.test", "username": "ik", "password": "a long user password"}).encode()
    with caplog.at_level(logging.INFO):
        status, _, content = await raw_request(client, b"POST /api/v1/users HTTP/1.1\r\nx-api-key: "
                                               + api.key.encode() + b"\r\nIdempotency-Key: IK-\xff\r\n"
                                               b"Content-Type: application/json", body)
    assert (status, json.loads(content)["error"]["code"]) == (400, "invalid_encoding")
    assert await api.get("/api/v1/users") == before
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert "IK-" not in caplog.text


async def test_nul_in_the_query_string_is_answered_in_the_route_familys_format(client: TestClient) -> None:
    response = await client.get("/scim/v2/Users?filter=%00")
    assert response.status == 400 and response.content_type == "application/scim+json"
    assert (await response.json(content_type=None))["scimType"] == "invalidValue"
    response = await client.get("/ops/jobs?status=%00")
    assert response.status == 400 and response.content_type == "text/html"
    response = await client.get("/auth/session?portal=%00")
    assert response.status == 400 and (await response.json())["error"]["code"] == "invalid_query"


async def test_a_filter_of_the_longest_allowed_length_fits_the_request_line(api: Api) -> None:
    """4000 characters of 4-byte UTF-8 are 48,000 bytes percent-encoded: far more than aiohttp's
    default request line (8190 bytes), whose refusal would be plain text, not a SCIM error."""
    scim = await scim_integration(api)
    for length, expected in ((4000, 200), (4001, 400)):
        text = 'userName eq "' + "\U0001f600" * (length - 14) + '"'
        assert len(text) == length
        status, answer = await scim.call("GET", f"/Users?filter={quote(text)}")
        assert status == expected, answer
    assert answer["scimType"] == "invalidFilter"
