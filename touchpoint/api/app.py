"""FastAPI app: `POST/GET /events` (`touchpoint.api.events`), `PUT/GET /accounts/{id}`, `GET/POST /runs`, tasks, approvals, unsubscribe.

The OpenAPI document (`/openapi.json`) describes every JSON route exactly: typed bodies
(`touchpoint.api.models`), every status it answers, one error shape
(`{"detail": "...", "errors": [{"loc", "msg", "type"}]}`) for every 4xx. A malformed request gets
422 and nothing is applied; a request that conflicts with state gets 409, one naming something
missing 404; 202 means the event is durable in Temporal. With `TOUCHPOINT_API_TOKEN` set, every
route but unsubscribe and webhooks needs `Authorization: Bearer <token>` (401 otherwise).
"""

from __future__ import annotations

import hmac
import html
from datetime import UTC, datetime
from typing import Annotated, Any

from fastapi import Depends, FastAPI, HTTPException, Path, Query, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import HTMLResponse, JSONResponse
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from pydantic import ValidationError
from sqlalchemy.orm import Session, sessionmaker
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.routing import Match
from temporalio.client import Client

from touchpoint.api.models import (
    ID_PATTERN,
    PLAYBOOK_PATTERN,
    Accepted,
    AccountBody,
    AccountView,
    ErrorBody,
    ErrorItem,
    MigrateBody,
    MigrationReport,
    RunDetail,
    RunInFlight,
    RunStarted,
    RunView,
    StartBody,
    TaskCompleted,
    TimelineLine,
)
from touchpoint.config import Settings
from touchpoint.dsl.accounts import AccountDoc
from touchpoint.dsl.runtime import EventIn
from touchpoint.ingest import put_account, send_event, start_now
from touchpoint.runs_view import record_json, waiting_words
from touchpoint.store import repo
from touchpoint.unsubscribe import read_token

PlaybookId = Annotated[str, Path(min_length=1, max_length=100, pattern=PLAYBOOK_PATTERN, description="The playbook's id.")]
AccountId = Annotated[str, Path(min_length=1, max_length=200, pattern=ID_PATTERN, description="The account's id.")]


def error_responses(*statuses: int) -> dict[int | str, dict[str, Any]]:
    """OpenAPI `responses=` for these error statuses, all in the one `ErrorBody` shape."""
    why = {
        400: "The body is not what the route takes.",
        401: "Missing or wrong bearer token.",
        404: "No such resource.",
        409: "The request conflicts with the resource's state.",
        422: "The request does not match the schema; `errors` says where.",
        503: "Temporal did not take the request; retry it.",
    }
    return {status: {"model": ErrorBody, "description": why[status]} for status in statuses}


def _error(status: int, detail: str, errors: list[ErrorItem] | None = None, headers: dict[str, str] | None = None) -> JSONResponse:
    body = ErrorBody(detail=detail, errors=errors or [])
    return JSONResponse(body.model_dump(mode="json"), status_code=status, headers=headers)


def _items(errors: Any) -> list[ErrorItem]:
    return [
        ErrorItem(loc=[p if isinstance(p, int) else str(p) for p in e.get("loc", ())], msg=str(e.get("msg", "")), type=str(e.get("type", "")))
        for e in errors
    ]


def _methods_of(request: Request) -> list[str]:
    """Every method some route answers at the request's path."""
    methods: set[str] = set()
    for route in request.app.router.routes:
        match, _ = route.matches({**request.scope, "method": "GET"})
        if match is not Match.NONE:
            methods |= set(getattr(route, "methods", None) or ())
    return sorted(methods - {"HEAD"})


def _install_error_handlers(app: FastAPI) -> None:
    """One error shape for every 4xx: FastAPI's own 422 and Starlette's 404/405 included."""

    async def http_error(request: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, StarletteHTTPException)
        headers = dict(exc.headers) if exc.headers else {}
        if exc.status_code == 405:
            # Starlette lists the methods of one route; a path has one route per method.
            headers["Allow"] = ", ".join(_methods_of(request))
        detail = exc.detail
        if isinstance(detail, str):
            return _error(exc.status_code, detail, headers=headers or None)
        return _error(exc.status_code, "the request is not valid", _items(detail), headers=headers or None)

    async def validation_error(request: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, RequestValidationError)
        items = _items(exc.errors())
        first = items[0] if items else None
        where = ".".join(str(p) for p in first.loc) if first else "the request"
        more = f" (and {len(items) - 1} more)" if len(items) > 1 else ""
        return _error(422, f"{where}: {first.msg if first else 'invalid'}{more}", items)

    app.add_exception_handler(StarletteHTTPException, http_error)
    app.add_exception_handler(RequestValidationError, validation_error)


def create_app(settings: Settings, client: Client, sessions: sessionmaker[Session]) -> FastAPI:
    """The API bound to one Temporal client and one store."""
    app = FastAPI(title="Touchpoint", version="0.1.0", description=__doc__)
    _install_error_handlers(app)
    queue = settings.task_queue
    bearer = HTTPBearer(auto_error=False, description="`Authorization: Bearer $TOUCHPOINT_API_TOKEN`")

    def auth(credentials: HTTPAuthorizationCredentials | None = Depends(bearer)) -> None:
        assert settings.api_token is not None
        given = credentials.credentials if credentials is not None else ""
        if not hmac.compare_digest(given.encode(), settings.api_token.get_secret_value().encode()):
            raise HTTPException(
                401,
                "missing or wrong bearer token (Authorization: Bearer $TOUCHPOINT_API_TOKEN)",
                headers={"WWW-Authenticate": "Bearer"},
            )

    # The document names the bearer scheme only when the API enforces it.
    guarded = [Depends(auth)] if settings.api_token is not None else []
    denied = (401,) if settings.api_token is not None else ()

    @app.put(
        "/accounts/{account_id}", status_code=202, dependencies=guarded, response_model=Accepted, responses=error_responses(400, *denied, 409, 422)
    )
    async def put_account_doc(account_id: AccountId, body: AccountBody) -> Accepted:
        """Upsert an account document (contract section 9); the body's `id`, if given, must be the path's (else 409)."""
        if body.id is not None and body.id != account_id:
            raise HTTPException(409, f"the body's id {body.id!r} differs from the path's {account_id!r}")
        try:
            doc = AccountDoc.model_validate({**body.model_dump(mode="json"), "id": account_id})
        except ValidationError as exc:  # the models agree; this guards a contract rule added later to one only
            raise RequestValidationError([{**e, "loc": ("body", *e["loc"])} for e in exc.errors(include_url=False)]) from None
        event_id = await put_account(client, queue, sessions, doc)
        return Accepted(id=event_id)

    @app.get("/accounts/{account_id}", dependencies=guarded, response_model=AccountView, responses=error_responses(*denied, 404, 422))
    def get_account(account_id: AccountId) -> AccountView:
        """The stored account document with its contacts (404 until its first upsert is stored)."""
        with sessions() as s:
            found = repo.get_account(s, account_id)
        if found is None:
            raise HTTPException(404, f"no account {account_id!r}")
        doc, contacts = found
        return AccountView.model_validate({**doc, "contacts": contacts})

    def run_view(s: Session, r: Any, zones: dict[str, str], model: type[RunView] = RunView, **extra: Any) -> Any:
        if r.account_id and r.account_id not in zones:
            stored = repo.get_account(s, r.account_id)
            zones[r.account_id] = (stored[0].get("timezone") if stored else None) or "UTC"
        words = waiting_words(r.waiting or [], zones.get(r.account_id or "", "UTC")) if r.status != "ended" else None
        return model(
            id=r.id, workflow_id=r.workflow_id, playbook=r.playbook_id, version=r.version, account_id=r.account_id, status=r.status,
            step=r.step, outcome=r.outcome, started_at=r.started_at, ended_at=r.ended_at, paused_reason=r.paused_reason,
            held_out=r.held_out, variant=r.variant, waiting=(r.waiting or []) if r.status != "ended" else [], waiting_text=words, **extra,
        )

    @app.get("/runs", dependencies=guarded, response_model=list[RunView], responses=error_responses(*denied, 422))
    async def list_runs(
        account: Annotated[str | None, Query(max_length=200)] = None,
        playbook: Annotated[str | None, Query(max_length=100)] = None,
        step: Annotated[str | None, Query(max_length=200, description="Only runs in flight at this step (its id).")] = None,
    ) -> list[RunView]:
        """Runs with their status, current step, what they wait for (in the account's zone) and outcome.

        Read from the store, where the account workflows project every step of their runs.
        """
        zones: dict[str, str] = {}
        with sessions() as s:
            return [run_view(s, r, zones) for r in repo.list_runs(s, account_id=account, playbook_id=playbook, step=step)]

    @app.get("/runs/{run_id}", dependencies=guarded, response_model=RunDetail, responses=error_responses(*denied, 404, 422))
    async def get_run(run_id: Annotated[str, Path(min_length=1, max_length=200)]) -> RunDetail:
        """One run, ended or not, with its vars, scorecard and whole timeline (404 if unknown)."""
        with sessions() as s:
            row = repo.get_run(s, run_id)
            if row is None:
                raise HTTPException(404, f"no run {run_id!r}")
            history = [TimelineLine(**record_json(x)) for x in repo.run_steps(s, row.id)]
            detail: RunDetail = run_view(s, row, {}, RunDetail, vars=dict(row.vars or {}), scorecard=row.scorecard, history=history)
        return detail

    @app.post(
        "/runs", status_code=201, dependencies=guarded, response_model=RunStarted,
        responses={**error_responses(400, *denied, 404, 422), 409: {"model": RunInFlight, "description": "A run of the playbook is in flight for the account (`run_id`, `status`), or it is a schedule playbook."}},
    )
    async def post_run(body: StartBody) -> Any:
        """Start a deployed account playbook now, whatever its trigger (contract section 11): 201 with the new run's id."""
        with sessions() as s:
            deployed = repo.get_deployment(s, "playbook", body.playbook)
        if deployed is None:
            raise HTTPException(404, f"playbook {body.playbook!r} is not deployed")
        if "schedule" in (deployed.content["playbook"].get("trigger") or {}):
            raise HTTPException(409, f"{body.playbook} is a schedule playbook: it runs on its schedule for a book of accounts, not for one account")
        answer = await start_now(client, queue, body.account_id, body.playbook)
        if answer.result == "in_flight":
            conflict = RunInFlight(detail=f"a run of {body.playbook} is in flight for {body.account_id}", run_id=answer.run_id, status=answer.status)
            return JSONResponse(conflict.model_dump(mode="json"), status_code=409)
        if answer.result != "started":
            missing = f"no account {body.account_id!r} (put it first)" if answer.result == "unknown_account" else f"playbook {body.playbook!r} is not deployed"
            raise HTTPException(404, missing)
        return RunStarted(run_id=str(answer.run_id))

    @app.post(
        "/playbooks/{playbook_id}/migrate", dependencies=guarded, response_model=MigrationReport, responses=error_responses(400, *denied, 404, 422)
    )
    async def migrate_runs(playbook_id: PlaybookId, body: MigrateBody) -> MigrationReport:
        """Move the playbook's runs in flight on other versions to `to` (as `touchpoint migrate`); answers when they moved."""
        from touchpoint.migration import MigrationError, migrate

        try:
            report = await migrate(client, sessions, playbook_id, to=body.to, account_id=body.account_id, dry_run=body.dry_run)
        except MigrationError as exc:
            raise HTTPException(404, str(exc)) from None
        return MigrationReport.model_validate(report.as_dict())

    @app.post("/tasks/{task_id}/complete", dependencies=guarded, response_model=TaskCompleted, responses=error_responses(*denied, 404, 422))
    async def complete_task(task_id: Annotated[str, Path(min_length=1, max_length=200)]) -> TaskCompleted:
        """Mark a task done; a run awaiting it moves on."""
        with sessions.begin() as s:
            task = repo.complete_task(s, task_id, datetime.now(UTC))
            if task is None:
                raise HTTPException(404, f"no task {task_id!r}")
            account_id, playbook, step = task.account_id, task.playbook_id, task.step
        await send_event(client, queue, sessions, account_id, EventIn(type="task.completed", data={"task_id": task_id, "playbook": playbook, "step": step}))
        return TaskCompleted(id=task_id)

    # Pages for people, not for API clients: they stay out of the OpenAPI document.
    @app.get("/unsubscribe/{token}", response_class=HTMLResponse, include_in_schema=False)
    def unsubscribe_page(token: str) -> str:
        """A confirmation page (mail clients prefetch links: a GET never unsubscribes)."""
        email = read_token(settings.secret_key.get_secret_value(), token)
        if email is None:
            raise HTTPException(404, "this unsubscribe link is not valid")
        return f"<html><body><form method='post'><p>Stop emails to {html.escape(email)}?</p><button>Unsubscribe</button></form></body></html>"

    @app.post("/unsubscribe/{token}", response_class=HTMLResponse, include_in_schema=False)
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
        return f"<html><body><p>{html.escape(email)} will get no more emails from us.</p></body></html>"

    from touchpoint.api import analytics, approvals, events, webhooks

    app.include_router(analytics.make_router(sessions, error_responses, guarded, denied))
    app.include_router(events.make_router(client, queue, sessions, guarded=guarded, denied=denied))
    app.include_router(approvals.make_router(settings, client, sessions, error_responses, guarded, denied))
    app.include_router(webhooks.make_router(settings, client, sessions))
    from touchpoint.console import console_router

    app.include_router(console_router(settings, client, sessions))
    return app
