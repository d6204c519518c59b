"""FastAPI app: `POST /events`, `PUT/GET /accounts/{id}`, `GET/POST /runs`, tasks, unsubscribe.

A malformed body gets 422 with the reason and nothing is applied; 202 means the event is durable
in Temporal. With `TOUCHPOINT_API_TOKEN` set, every route but unsubscribe needs
`Authorization: Bearer <token>`.
"""

from __future__ import annotations

import hmac
from datetime import UTC, datetime
from typing import Annotated, Any

from fastapi import Depends, FastAPI, HTTPException, Query, Request
from fastapi.responses import HTMLResponse
from pydantic import BaseModel, ConfigDict, Field
from sqlalchemy.orm import Session, sessionmaker
from temporalio.client import Client

from touchpoint.config import Settings
from touchpoint.dsl.runtime import EventIn, RunStatus
from touchpoint.dsl.schema import EVENT_TYPE_RE, AccountDoc
from touchpoint.ingest import put_account, send_event, start_run
from touchpoint.store import repo
from touchpoint.unsubscribe import read_token


class EventBody(BaseModel):
    """`POST /events`."""

    model_config = ConfigDict(extra="forbid")
    type: Annotated[str, Field(pattern=EVENT_TYPE_RE, max_length=100)]
    account_id: Annotated[str, Field(min_length=1, max_length=200, pattern=r"^[^/\s]+$")]
    at: datetime | None = None
    data: dict[str, Any] = Field(default_factory=dict)
    id: Annotated[str, Field(min_length=1, max_length=200)] | None = None


class StartBody(BaseModel):
    """`POST /runs`."""

    model_config = ConfigDict(extra="forbid")
    playbook: Annotated[str, Field(pattern=r"^[a-z0-9][a-z0-9-]*$")]
    account_id: Annotated[str, Field(min_length=1)]


def create_app(settings: Settings, client: Client, sessions: sessionmaker[Session]) -> FastAPI:
    """The API bound to one Temporal client and one store."""
    app = FastAPI(title="Touchpoint", version="0.1.0", description=__doc__)
    queue = settings.task_queue

    def auth(request: Request) -> None:
        if settings.api_token is None:
            return
        header = request.headers.get("authorization", "")
        expected = f"Bearer {settings.api_token.get_secret_value()}"
        if not hmac.compare_digest(header.encode(), expected.encode()):
            raise HTTPException(401, "missing or wrong bearer token (Authorization: Bearer $TOUCHPOINT_API_TOKEN)")

    guarded = [Depends(auth)]

    @app.post("/events", status_code=202, dependencies=guarded)
    async def post_event(body: EventBody) -> dict[str, str]:
        """Accept one event; a repeated `id` is a no-op."""
        at = body.at if body.at is None or body.at.tzinfo else body.at.replace(tzinfo=UTC)
        event_id = await send_event(client, queue, sessions, body.account_id, EventIn(id=body.id, type=body.type, at=at, data=body.data))
        return {"id": event_id, "status": "accepted"}

    @app.put("/accounts/{account_id}", status_code=202, dependencies=guarded)
    async def put_account_doc(account_id: str, body: dict[str, Any]) -> dict[str, str]:
        """Upsert an account document (contract section 9)."""
        if body.setdefault("id", account_id) != account_id:
            raise HTTPException(422, f"the body's id {body['id']!r} differs from the path's {account_id!r}")
        try:
            doc = AccountDoc.model_validate(body)
        except Exception as exc:  # pydantic's ValidationError: report its reasons
            errors = getattr(exc, "errors", None)
            detail = [{"loc": e["loc"], "msg": e["msg"]} for e in errors(include_url=False)] if errors else str(exc)
            raise HTTPException(422, detail) from None
        event_id = await put_account(client, queue, sessions, doc)
        return {"id": event_id, "status": "accepted"}

    @app.get("/accounts/{account_id}", dependencies=guarded)
    def get_account(account_id: str) -> dict[str, Any]:
        """The stored account document with its contacts."""
        with sessions() as s:
            found = repo.get_account(s, account_id)
        if found is None:
            raise HTTPException(404, f"no account {account_id!r}")
        doc, contacts = found
        return {**doc, "contacts": contacts}

    @app.get("/runs", dependencies=guarded)
    async def list_runs(account: str | None = Query(None), playbook: str | None = Query(None)) -> list[dict[str, Any]]:
        """Runs with their status, current step and outcome (live from Temporal while running)."""
        with sessions() as s:
            rows = repo.list_runs(s, account_id=account, playbook_id=playbook)
            runs = [
                {"id": r.id, "workflow_id": r.workflow_id, "playbook": r.playbook_id, "version": r.version, "account_id": r.account_id, "status": r.status, "step": r.step, "outcome": r.outcome, "started_at": r.started_at.isoformat(), "paused_reason": r.paused_reason}
                for r in rows
            ]
        live: dict[str, dict[str, RunStatus]] = {}
        for run in runs:
            if run["status"] != "ended":
                workflow_id = str(run["workflow_id"])
                if workflow_id not in live:
                    try:
                        found = await client.get_workflow_handle(workflow_id).query("runs", result_type=list[RunStatus])
                    except Exception:
                        found = []
                    live[workflow_id] = {r.id: r for r in found}
                current = live[workflow_id].get(str(run["id"]))
                if current is not None:
                    run.update(status=current.status, step=current.step, outcome=current.outcome, paused_reason=current.paused_reason)
        return runs

    @app.post("/runs", status_code=202, dependencies=guarded)
    async def post_run(body: StartBody) -> dict[str, str]:
        """Start a playbook for an account (one run per account and playbook at a time)."""
        with sessions() as s:
            if repo.get_deployment(s, "playbook", body.playbook) is None:
                raise HTTPException(422, f"playbook {body.playbook!r} is not deployed")
        await start_run(client, queue, body.account_id, body.playbook)
        return {"status": "accepted"}

    @app.post("/tasks/{task_id}/complete", dependencies=guarded)
    async def complete_task(task_id: str) -> dict[str, str]:
        """Mark a task done; a run awaiting it moves on."""
        with sessions.begin() as s:
            task = repo.complete_task(s, task_id, datetime.now(UTC))
            if task is None:
                raise HTTPException(404, f"no task {task_id!r}")
            account_id, playbook, step = task.account_id, task.playbook_id, task.step
        await send_event(client, queue, sessions, account_id, EventIn(type="task.completed", data={"task_id": task_id, "playbook": playbook, "step": step}))
        return {"id": task_id, "status": "completed"}

    @app.get("/unsubscribe/{token}", response_class=HTMLResponse)
    def unsubscribe_page(token: str) -> str:
        """A confirmation page (mail clients prefetch links: a GET never unsubscribes)."""
        email = read_token(settings.secret_key.get_secret_value(), token)
        if email is None:
            raise HTTPException(404, "this unsubscribe link is not valid")
        return f"<html><body><form method='post'><p>Stop emails to {email}?</p><button>Unsubscribe</button></form></body></html>"

    @app.post("/unsubscribe/{token}", response_class=HTMLResponse)
    async def unsubscribe(token: str) -> str:
        """Add the address to the suppression list and tell its account."""
        email = read_token(settings.secret_key.get_secret_value(), token)
        if email is None:
            raise HTTPException(404, "this unsubscribe link is not valid")
        with sessions.begin() as s:
            repo.suppress(s, email, "unsubscribed", "link")
            from sqlalchemy import select

            from touchpoint.store.models import Contact

            account_ids = sorted(set(s.scalars(select(Contact.account_id).where(Contact.email == email.lower()))))
        for account_id in account_ids:
            await send_event(client, queue, sessions, account_id, EventIn(type="email.unsubscribed", data={"to": email}))
        return f"<html><body><p>{email} will get no more emails from us.</p></body></html>"

    from touchpoint.api.webhooks import make_router

    app.include_router(make_router(settings, client, sessions))
    return app
