"""`GET /approvals`, `GET /approvals/{id}`, `POST /approvals/{id}`: emails held for a person's decision.

A decision (`touchpoint.approvals.decide`) answers 200 with the request as stored after it, 404
for an unknown request, 409 once it was decided (or timed out) or when its run has ended, 422 for
an edit that is not a valid template for every recipient (the reasons in `errors`), 503 when
Temporal did not take it (the request stays pending: decide again).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Annotated, Any

from fastapi import APIRouter, HTTPException, Path, Query
from fastapi.responses import JSONResponse
from sqlalchemy.orm import Session, sessionmaker
from temporalio.client import Client
from temporalio.service import RPCError

from touchpoint import approvals
from touchpoint.api.models import (
    ApprovalDetail,
    ApprovalStatus,
    ApprovalView,
    Approve,
    DecisionBody,
    ErrorBody,
    ErrorItem,
    Reject,
)
from touchpoint.config import Settings
from touchpoint.store import repo

ApprovalId = Annotated[str, Path(min_length=1, max_length=200, description="The approval's id (`apr_...`).")]


def decision_of(body: Approve | Reject) -> approvals.Decision:
    """The decision a validated body gives (the console's forms are validated as these bodies too)."""
    edit = {"reason": body.reason} if isinstance(body, Reject) else {"subject": body.subject, "html": body.html}
    return approvals.Decision(decision=body.decision, by=body.by, **edit)


def make_router(settings: Settings, client: Client, sessions: sessionmaker[Session], responses: Callable[..., dict[int | str, dict[str, Any]]], guarded: Sequence[Any], denied: tuple[int, ...]) -> APIRouter:
    """The approval routes, guarded like the app's others (``responses`` documents their errors)."""
    router = APIRouter(dependencies=list(guarded))
    public = settings.public_url

    @router.get("/approvals", response_model=list[ApprovalView], responses=responses(*denied, 422))
    def list_approvals(
        status: Annotated[ApprovalStatus | None, Query(description="Only requests in this state (`pending`: waiting for a decision).")] = None,
        by: Annotated[str | None, Query(max_length=320, description="Only requests this address approves (any case).")] = None,
    ) -> list[ApprovalView]:
        """Approval requests, oldest first: who approves each, its recipients, its decision."""
        with sessions() as s:
            rows = repo.list_approvals(s, status=status, approver=by)
            return [ApprovalView.model_validate(approvals.summary(row, public)) for row in rows]

    @router.get("/approvals/{approval_id}", response_model=ApprovalDetail, responses=responses(*denied, 404, 422))
    def get_approval(approval_id: ApprovalId) -> ApprovalDetail:
        """One request with each recipient's rendered email: what the approver reviews."""
        try:
            row = approvals.get(sessions, approval_id)
        except approvals.ApprovalNotFound as exc:
            raise HTTPException(404, str(exc)) from None
        return ApprovalDetail.model_validate(approvals.detail(row, public))

    @router.post("/approvals/{approval_id}", response_model=ApprovalDetail, responses=responses(400, *denied, 404, 409, 422, 503))
    async def decide(approval_id: ApprovalId, body: DecisionBody) -> Any:
        """Approve (optionally editing subject and HTML) or reject a pending request (contract section 12)."""
        try:
            row = await approvals.decide(client, settings.task_queue, sessions, settings.home / "templates", approval_id, decision_of(body))
        except approvals.ApprovalNotFound as exc:
            raise HTTPException(404, str(exc)) from None
        except approvals.ApprovalConflict as exc:
            raise HTTPException(409, str(exc)) from None
        except approvals.EditRefused as exc:
            items = [ErrorItem(loc=["body", part], msg=message, type="template") for part, message in exc.problems]
            (part, message), more = exc.problems[0], len(exc.problems) - 1
            refused = ErrorBody(detail=f"body.{part}: the edit cannot be sent: {message}" + (f" (and {more} more)" if more else ""), errors=items)
            return JSONResponse(refused.model_dump(mode="json"), status_code=422)
        except RPCError as exc:
            raise HTTPException(503, f"Temporal did not take the decision ({exc}); the request is still pending: decide again") from None
        return ApprovalDetail.model_validate(approvals.detail(row, public))

    return router
