"""The console's approvals: the requests to review, one request's emails, approve or reject.

Pages read the store (`repo`). A decision takes the path of `POST /approvals/{id}` and
`touchpoint approvals`: the form is validated as that route's body (`Approve` or `Reject`, the
same bounds), turned into a decision by the same function, and given to
`touchpoint.approvals.decide` (the edit checked and rendered for every recipient, the decision
claimed in the store, `approval.decided` delivered to the account's workflow). ``by`` is the
signed-in reviewer's address; without a session address the form asks for one.

Each recipient's email is shown as it will go: the stored rendering, in an ``iframe`` whose
``srcdoc`` holds it and whose ``sandbox`` grants nothing. Its markup runs in an opaque origin with
no script, no form and no popup; this page's Content-Security-Policy, which the frame inherits,
lets it use its own inline styles but load nothing from anywhere, and forbids the frame any
navigation (``frame-src 'none'``), so a click on its links, the unsubscribe link too, goes nowhere.
"""

from __future__ import annotations

import asyncio
import datetime as dt
from typing import Annotated, Any
from urllib.parse import quote

from fastapi import APIRouter, Query
from pydantic import TypeAdapter, ValidationError
from starlette.requests import Request
from starlette.responses import Response
from temporalio.exceptions import ApplicationError
from temporalio.service import RPCError

from touchpoint import approvals
from touchpoint.api.approvals import decision_of
from touchpoint.api.models import DecisionBody
from touchpoint.console.actions import ADDRESS, refused
from touchpoint.console.auth import FormError, Visit
from touchpoint.console.core import SECURITY_HEADERS, Console, see_other
from touchpoint.dsl.runtime import ApprovalInput
from touchpoint.email.errors import TemplateError
from touchpoint.store import repo
from touchpoint.store.approvals import STATUSES

REVIEW_CSP = SECURITY_HEADERS["Content-Security-Policy"].replace("style-src 'self'", "style-src 'self' 'unsafe-inline'") + "; frame-src 'none'"
"""The request's page: the console's policy, plus inline styles for the emails' own markup (the
page's own values are all escaped) and no navigation for their frames."""
MAX_DECISION_FORM = 2 * 1024 * 1024
"""Bytes a decision's form may have: an edited HTML of `approvals.MAX_HTML` characters, URL-encoded."""
DONE = {
    "approved": "Approved: the emails go out now, within the send window and the frequency caps, unless their recipients have unsubscribed.",
    "rejected": "Rejected: nothing is sent; the run goes on after this step.",
}
BODY: TypeAdapter[Any] = TypeAdapter(DecisionBody)
Text = Annotated[str, Query(max_length=320)]


def add_approvals(router: APIRouter, console: Console) -> None:
    """Register the approvals' pages and their decision form on the console's router."""
    sessions = console.sessions

    @router.get("/approvals")
    def approvals_list(request: Request, by: Text = "", status: Text = "") -> Response:
        entered = console.enter(request)
        if isinstance(entered, Response):
            return entered
        visit, fresh = entered
        status = status if status in STATUSES else ""
        with console.db() as s:
            rows = repo.approvals_to_review(s, approver=by or None, status=status or None)
            labels = repo.account_labels(s, [r.account_id or "" for r in rows])
            counts = repo.approval_counts(s)
        return console.page(
            request, visit, "approvals.html", fresh=fresh, rows=rows, names={k: name for k, (name, _tz) in labels.items()},
            by=by.strip().lower(), state=status, statuses=STATUSES, counts=counts, now=dt.datetime.now(dt.UTC),
        )

    @router.get("/approvals/{approval_id}")
    def approval_page(request: Request, approval_id: str, done: Text = "") -> Response:
        entered = console.enter(request)
        if isinstance(entered, Response):
            return entered
        visit, fresh = entered
        context = review(console, approval_id)
        if context is None:
            return missing(console, request, visit, approval_id)
        return console.page(request, visit, "approval.html", fresh=fresh, csp=REVIEW_CSP, notice=DONE.get(done, ""), **context)

    @router.post("/approvals/{approval_id}")
    async def decide(request: Request, approval_id: str) -> Response:
        visit = sessions.viewer(request)
        try:
            fields = await sessions.form(request, visit, limit=MAX_DECISION_FORM)
        except FormError as exc:
            return refused(console, request, exc)
        assert visit is not None
        context = await asyncio.to_thread(review, console, approval_id)
        if context is None:
            return missing(console, request, visit, approval_id)
        choice = fields.get("decision", "")
        given = {"subject": clean(fields.get("subject")), "html": clean(fields.get("html")), "reason": clean(fields.get("reason")), "by": fields.get("by", "").strip()}

        def again(status: int, message: str, problems: list[str] | None = None) -> Response:
            """The request's page again, saying why nothing was decided, with what was typed."""
            typed = {k: v for k, v in given.items() if v is not None and k != "by"}
            form = {**context["form"], **typed, "by": given["by"], "open": choice if choice in ("edit", "rejected") else ""}
            return console.page(
                request, visit, "approval.html", status=status, csp=REVIEW_CSP, notice="",
                **{**context, "form": form, "refusal": message, "problems": problems or []},
            )

        if choice not in ("approved", "edit", "rejected"):
            return again(422, f"Approve or reject, not {choice!r}.")
        by = visit.by or given["by"]
        if not by or len(by) > 254 or not ADDRESS.match(by):
            return again(422, "Give your email address: the decision is signed with it.")
        body: dict[str, Any] = {"decision": "rejected" if choice == "rejected" else "approved", "by": by}
        if choice == "rejected":
            body["reason"] = given["reason"] or None
        elif choice == "edit":
            original_subject, original_html = context["form"]["subject"], context["form"]["html"]
            subject, html = given["subject"] or "", given["html"] or ""
            if not subject.strip() or not html.strip():
                return again(422, "The edit cannot be sent.", [f"{part}: it is empty; write one, or approve the email as rendered" for part, text in (("subject", subject), ("html", html)) if not text.strip()])
            body["subject"] = subject.strip() if subject.strip() != original_subject.strip() else None
            body["html"] = html if html.strip() != original_html.strip() else None
        try:
            decision = decision_of(BODY.validate_python(body))
        except ValidationError as exc:
            return again(422, "The decision cannot be taken.", [f"{'.'.join(str(p) for p in e['loc'][1:]) or 'form'}: {e['msg']}" for e in exc.errors()])
        try:
            await approvals.decide(console.client, console.settings.task_queue, console.db, console.settings.home / "templates", approval_id, decision)
        except approvals.ApprovalNotFound:
            return missing(console, request, visit, approval_id)
        except approvals.ApprovalConflict as exc:
            now = await asyncio.to_thread(review, console, approval_id)  # show the request as it is now
            context.update(now or {})
            return again(409, f"Nothing was decided: {exc}.")
        except approvals.EditRefused as exc:
            return again(422, "The edit cannot be sent: nothing was decided.", [f"{part}: {message}" for part, message in exc.problems])
        except ValueError as exc:
            return again(422, f"Nothing was decided: {exc}.")
        except RPCError as exc:
            return again(503, f"Temporal did not take the decision ({exc.message}); the request is still pending: decide again.")
        return see_other(f"/console/approvals/{quote(approval_id, safe='')}?done={decision.decision}")


def clean(value: str | None) -> str | None:
    """A textarea's value as typed (browsers post its line ends as CRLF)."""
    return None if value is None else value.replace("\r\n", "\n")


def missing(console: Console, request: Request, visit: Visit, approval_id: str) -> Response:
    return console.problem(request, visit, 404, "No such approval", f"No approval request {approval_id!r} is in the store.")


def review(console: Console, approval_id: str) -> dict[str, Any] | None:
    """What a request's page shows: the request, each recipient's email, what went out, whether
    it can still be decided and the template source an edit starts from; None when there is none."""
    with console.db() as s:
        row = repo.get_approval(s, approval_id)
        if row is None:
            return None
        item = approvals.detail(row, console.settings.public_url)
        run = repo.get_run(s, row.run_id)
        labels = repo.account_labels(s, [row.account_id or ""])
        closed = approvals.conflict(s, row)
        keys = [r.key for r in ApprovalInput.model_validate(row.request).recipients] if row.request else []
        sent = repo.messages_by_keys(s, keys)
        s.expunge(row)
    name, tz = labels.get(row.account_id or "", (None, None))
    form: dict[str, str] = {"subject": "", "html": "", "reason": "", "by": "", "open": ""}
    unavailable = ""
    if closed is None:
        try:
            form["subject"], form["html"] = approvals.sources(console.db, console.settings.home / "templates", row)
        except (ApplicationError, TemplateError, OSError) as exc:  # the version's templates are gone: approving as rendered still works
            unavailable = f"The template source cannot be edited here ({exc}); approve or reject as rendered."
    return {
        "row": row, "item": item, "run": run, "account_name": name or row.account_id, "tz": tz or "UTC", "closed": closed, "sent": sent,
        "form": form, "unavailable": unavailable, "refusal": "", "problems": [],
    }
