"""Operations routes and guards around the API: probes, metrics, event counts, webhook policy.

- `GET /healthz`: the process answers (liveness). `GET /readyz`: Temporal and the store both
  answer within 2 s (readiness; 503 with the failing part otherwise). `GET /metrics`: this
  process's Prometheus metrics plus the store's counts. None is in the OpenAPI document or
  needs the API token (a scraper or a probe has none).
- `OpsMiddleware` counts accepted events by type and route (`touchpoint_events_accepted`) and
  refuses SendGrid batches that nothing can verify: with no `TOUCHPOINT_SENDGRID_WEBHOOK_KEY`
  on an API bound to a non-loopback address, `POST /webhooks/sendgrid` answers 401 in the one
  error shape (`ErrorBody`); the route's OpenAPI entry lists that 401 whenever it can happen.

`build_app` puts them around `touchpoint.api.app.create_app`; `touchpoint dev` and `touchpoint
api` serve what it returns.
"""

from __future__ import annotations

import asyncio
import json
import re
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

from fastapi import APIRouter, FastAPI
from fastapi.responses import JSONResponse, Response
from prometheus_client import CONTENT_TYPE_LATEST, REGISTRY, generate_latest
from sqlalchemy import text
from sqlalchemy.orm import Session, sessionmaker
from temporalio.api.workflowservice.v1 import GetSystemInfoRequest
from temporalio.client import Client

from touchpoint.api.models import ErrorBody
from touchpoint.config import Settings
from touchpoint.observability.metrics import EVENTS_ACCEPTED, StoreMetrics

PROBE_TIMEOUT = 2.0
MAX_COUNTED_BODY = 1 << 20
"""Bodies up to this size are kept to read their event types; bigger ones count as `unknown`."""

UNSIGNED_REFUSED = (
    "unsigned SendGrid batches are refused on an API reachable from other machines: set "
    "TOUCHPOINT_SENDGRID_WEBHOOK_KEY to the signed webhook's public key (SendGrid > Mail Settings > "
    "Event Webhook > Signature Verification)"
)

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]


def ops_router(client: Client, sessions: sessionmaker[Session], schema_ready: Callable[[], bool] = lambda: True) -> APIRouter:
    """`/healthz`, `/readyz` and `/metrics` for one process; ``schema_ready`` says whether the
    store's migrations have run (the store is not ready before)."""
    router = APIRouter(include_in_schema=False)

    @router.get("/healthz")
    def healthz() -> dict[str, str]:
        return {"status": "ok"}

    @router.get("/readyz")
    async def readyz() -> JSONResponse:
        temporal, store = await asyncio.gather(_check_temporal(client), _check_store(sessions))
        if store == "ok" and not schema_ready():
            store = "migrating"
        ready = temporal == "ok" and store == "ok"
        body = {"status": "ready" if ready else "not ready", "temporal": temporal, "store": store}
        return JSONResponse(body, status_code=200 if ready else 503)

    @router.get("/metrics")
    def metrics() -> Response:
        return Response(generate_latest(REGISTRY), media_type=CONTENT_TYPE_LATEST)

    return router


async def _check_temporal(client: Client) -> str:
    try:
        await client.workflow_service.get_system_info(GetSystemInfoRequest(), timeout=_timeout())
        return "ok"
    except Exception as exc:
        return f"unreachable: {type(exc).__name__}"


async def _check_store(sessions: sessionmaker[Session]) -> str:
    def probe() -> None:
        with sessions() as s:
            s.execute(text("SELECT 1"))

    try:
        await asyncio.wait_for(asyncio.to_thread(probe), PROBE_TIMEOUT)
        return "ok"
    except Exception as exc:
        return f"unreachable: {type(exc).__name__}"


def _timeout() -> Any:
    from datetime import timedelta

    return timedelta(seconds=PROBE_TIMEOUT)


#: (method, path pattern, route label, event type or None to read it from the body)
COUNTED: tuple[tuple[str, re.Pattern[str], str, str | None], ...] = (
    ("POST", re.compile(r"^/events$"), "/events", None),
    ("PUT", re.compile(r"^/accounts/[^/]+$"), "/accounts/{account_id}", "account.updated"),
    ("POST", re.compile(r"^/runs$"), "/runs", "manual"),
    ("POST", re.compile(r"^/tasks/[^/]+/complete$"), "/tasks/{task_id}/complete", "task.completed"),
    ("POST", re.compile(r"^/unsubscribe/[^/]+$"), "/unsubscribe/{token}", "email.unsubscribed"),
    ("POST", re.compile(r"^/webhooks/sendgrid$"), "/webhooks/sendgrid", None),
)


class OpsMiddleware:
    """Counts accepted events and applies the unsigned-webhook policy (module docstring)."""

    def __init__(self, app: ASGIApp, *, settings: Settings) -> None:
        self.app = app
        self.refuse_unsigned = not settings.sendgrid_webhook_key and not settings.sendgrid_unsigned_allowed

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        method, path = scope["method"], scope["path"]
        if self.refuse_unsigned and method == "POST" and path == "/webhooks/sendgrid":
            response = JSONResponse(ErrorBody(detail=UNSIGNED_REFUSED).model_dump(mode="json"), status_code=401)
            await response(scope, receive, send)
            return
        counted = next(((label, kind) for m, pattern, label, kind in COUNTED if m == method and pattern.match(path)), None)
        if counted is None:
            await self.app(scope, receive, send)
            return
        body = bytearray()
        status = 0

        async def receive_and_keep() -> Message:
            message = await receive()
            if message["type"] == "http.request" and len(body) <= MAX_COUNTED_BODY:
                body.extend(message.get("body", b""))
            return message

        async def send_and_note(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = int(message["status"])
            await send(message)

        await self.app(scope, receive_and_keep, send_and_note)
        if 200 <= status < 300:
            label, kind = counted
            for event_type in [kind] if kind else _types_in(bytes(body), label):
                EVENTS_ACCEPTED.labels(type=event_type, path=label).inc()


def _types_in(body: bytes, label: str) -> list[str]:
    """Event types in an accepted body: `type` of an event, `sendgrid.<event>` per batch item."""
    try:
        data = json.loads(body)
    except ValueError:
        return ["unknown"]
    if label == "/events":
        # A batch counts its accepted events itself (`touchpoint.api.events`): only it knows which.
        return [str(data.get("type", "unknown"))] if isinstance(data, dict) else []
    if isinstance(data, list):
        return [f"sendgrid.{item.get('event', 'unknown')}" for item in data if isinstance(item, dict)]
    return ["unknown"]


_store_metrics: StoreMetrics | None = None


def register_store_metrics(sessions: sessionmaker[Session]) -> None:
    """Serve the store's counts on this process's `/metrics` (replacing an earlier store's)."""
    global _store_metrics
    if _store_metrics is not None:
        REGISTRY.unregister(_store_metrics)
    _store_metrics = StoreMetrics(sessions)
    REGISTRY.register(_store_metrics)


def build_app(
    settings: Settings, client: Client, sessions: sessionmaker[Session], *, schema_ready: Callable[[], bool] = lambda: True
) -> FastAPI:
    """The API of `create_app` with the ops routes, the middleware, store metrics and traces."""
    from touchpoint.api.app import create_app
    from touchpoint.observability.tracing import instrument_app

    app = create_app(settings, client, sessions)
    app.include_router(ops_router(client, sessions, schema_ready))
    app.add_middleware(OpsMiddleware, settings=settings)
    register_store_metrics(sessions)
    instrument_app(app)
    return app
