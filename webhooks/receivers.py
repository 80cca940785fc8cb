"""HR and directory-change webhook receivers.

``POST /webhooks/hr/{integration_id}`` and ``POST /webhooks/directory/{integration_id}``: check
the signature, read the payload, and answer ``202 {"job_id", "status_url"}`` once the event is
recorded and queued (``service.intake``), or 503 with ``Retry-After`` if it cannot be. Nothing
here decides what an event does to a user.
"""

from __future__ import annotations

from aiohttp import web

from service import inbound
from service.bootstrap import Services
from service.http.context import services_of
from service.http.errors import ApiError, error_body
from service.intake import Intake
from webhooks import payloads, signatures

routes = web.RouteTableDef()
INTAKE = web.AppKey("webhook_intake", Intake)


def setup(app: web.Application, services: Services) -> None:
    app[INTAKE] = Intake(services)


@routes.post("/webhooks/hr/{integration_id}")
async def hr_event(request: web.Request) -> web.Response:
    return await receive(request, "hr")


@routes.post("/webhooks/directory/{integration_id}")
async def directory_event(request: web.Request) -> web.Response:
    return await receive(request, "directory")


async def receive(request: web.Request, kind: str) -> web.Response:
    services = services_of(request)
    body = await request.read()
    try:
        integration = await inbound.load_integration(services, request.match_info["integration_id"], kind)
        message_id = await verify(services, integration, request, body)
        delivery = payloads.parse(integration.provider, kind, body)
        key = inbound.idempotency_key(integration.id, delivery, message_id, body)
        accepted = await request.app[INTAKE].accept(integration, delivery, key)
    except (signatures.SignatureError, payloads.PayloadError) as refused:
        raise ApiError(refused.status, refused.code, refused.message) from refused
    except inbound.Unprocessable as unprocessable:
        raise ApiError(422, unprocessable.code, unprocessable.message) from unprocessable
    except inbound.Unavailable as down:
        return unavailable(str(down), services.settings.webhook_retry_after)
    headers = {"Idempotent-Replayed": "true"} if accepted.replayed else {}
    return web.json_response({"job_id": accepted.job_id, "status_url": accepted.status_url}, status=202,
                             headers=headers)


async def verify(services: Services, integration: inbound.Integration, request: web.Request,
                 body: bytes) -> str | None:
    """The signature against the secrets the integration accepts; a refusal by an integration
    read a few seconds ago is checked once more against a fresh read (it may just have rotated)."""
    try:
        return signatures.verify(integration.provider, integration.secrets, request.headers, body)
    except signatures.SignatureError as refused:
        if refused.status != 401 or not integration.from_cache:
            raise
    fresh = await inbound.load_integration(services, integration.id, integration.kind, fresh=True)
    return signatures.verify(fresh.provider, fresh.secrets, request.headers, body)


def unavailable(reason: str, retry_after: int) -> web.Response:
    """Nothing was acknowledged: the sender keeps the event and delivers it again."""
    return web.json_response(error_body("temporarily_unavailable", f"{reason}; deliver this event again later"),
                             status=503, headers={"Retry-After": str(retry_after)})
