"""Approval requests as people see and decide them: one path for the API and the CLI.

A decision is checked (the request exists, is still pending, its run has not ended; an edit is
template source that must pass `validate`'s checks and render for every recipient of the
request), claimed in the store (the first decision wins), then delivered to the account's
workflow as an `approval.decided` event (its id derives from the request, so a repeated
delivery is a no-op). When Temporal does not take the event the claim is undone, so the
request stays pending and the decision can be given again. The run does the rest: it sends
(window, cap, suppression and ledger still apply) or skips, and puts the decision on its
timeline.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal

from sqlalchemy.orm import Session, sessionmaker

from touchpoint.dsl.runtime import ApprovalInput, EventIn
from touchpoint.store import Approval, repo, write_tx

MAX_SUBJECT = 1_000
MAX_HTML = 200_000
MAX_REASON = 2_000


class ApprovalNotFound(LookupError):
    """No approval request with that id."""


class ApprovalConflict(Exception):
    """The request was decided already, or its run ended: nothing to decide any more."""


class EditRefused(ValueError):
    """The approver's edit is not a valid template for every recipient: ``problems`` say why,
    each as (the part: ``subject`` or ``html``, the message)."""

    def __init__(self, problems: list[tuple[str, str]]) -> None:
        super().__init__("; ".join(f"{part}: {message}" for part, message in problems))
        self.problems = problems


@dataclass(frozen=True)
class Decision:
    """What a person decided: ``subject``/``html`` (template source) only with ``approved``."""

    decision: Literal["approved", "rejected"]
    by: str | None = None
    subject: str | None = None
    html: str | None = None
    reason: str | None = None


def review_link(public_url: str, approval_id: str) -> str:
    """Where a person reviews and decides a request: its console page (the JSON is `GET /approvals/{id}`)."""
    return f"{public_url.rstrip('/')}/console/approvals/{approval_id}"


def summary(row: Approval, public_url: str | None = None) -> dict[str, Any]:
    """A request without its emails' bodies, JSON-ready."""
    return {
        "id": row.id,
        "status": row.status,
        "by": row.approver,
        "account_id": row.account_id,
        "playbook": row.playbook_id,
        "version": row.version,
        "run_id": row.run_id,
        "step": row.step,
        "template": row.template,
        "to": [str(e.get("to")) for e in row.emails or []],
        "requested_at": _iso(row.requested_at),
        "expires_at": _iso(row.expires_at),
        "on_timeout": row.on_timeout,
        "task_id": row.task_id,
        "link": review_link(public_url, row.id) if public_url else None,
        "decided_by": row.decided_by,
        "decided_at": _iso(row.decided_at),
        "reason": row.reason,
        "edited": [part for part, value in (("subject", row.subject), ("html", row.html)) if value is not None],
    }


def detail(row: Approval, public_url: str | None = None) -> dict[str, Any]:
    """A request with each recipient's rendered email (what the approver reviews) and the edit."""
    emails = []
    for email in row.emails or []:
        rendered = email.get("rendered") or {}
        emails.append(
            {
                "to": email.get("to"),
                "name": email.get("name"),
                "subject": rendered.get("subject"),
                "html": rendered.get("html"),
                "text": rendered.get("text"),
                "locale": (rendered.get("locale_used") or {}).get("html"),
                "error": email.get("error"),
            }
        )
    return {**summary(row, public_url), "emails": emails, "subject": row.subject, "html": row.html}


def review_lines(item: dict[str, Any], *, html: bool = False) -> list[str]:
    """What the approver reads (`touchpoint approvals show`, `touchpoint preview`): who decides by
    when, then each recipient's subject and text (or HTML)."""
    then = "send as rendered" if item["on_timeout"] == "send" else "skip"
    lines = [
        f"approval  {item['id']} ({item['status'].replace('_', ' ')})",
        f"by        {item['by']}, until {item['expires_at']} (then: {then})",
        f"run       {item['playbook']}:{item['step']} for {item['account_id']}" + (f" (run {item['run_id']})" if item.get("run_id") else ""),
    ]
    if item.get("decided_by"):
        lines.append(f"decided   {item['status']} by {item['decided_by']} at {item['decided_at']}" + (f": {item['reason']}" if item.get("reason") else ""))
    for part in item.get("edited") or []:
        lines.append(f"edited {part}: {item[part]}")
    for email in item["emails"]:
        lines.append("")
        lines.append(f"to {email['to']}" + (f" ({email['name']})" if email.get("name") else ""))
        if email.get("error"):
            lines.append(f"  could not render: {email['error']}")
            continue
        lines.append(f"subject: {email['subject']}")
        lines.append(str(email["html"] if html else email["text"]).rstrip())
    return lines


def _iso(value: datetime | None) -> str | None:
    return value.astimezone(UTC).isoformat(timespec="seconds") if value is not None else None


def get(sessions: sessionmaker[Session], approval_id: str) -> Approval:
    """The request, detached from its session.

    Raises:
        ApprovalNotFound: there is none.
    """
    with sessions() as s:
        row = repo.get_approval(s, approval_id)
        if row is None:
            raise ApprovalNotFound(f"no approval {approval_id!r} (see `touchpoint approvals list`)")
        s.expunge(row)
        return row


def sources(sessions: sessionmaker[Session], templates_cache: Path, row: Approval) -> tuple[str, str]:
    """The template source of the request's subject and HTML, what an edit starts from (the
    first recipient's locale variant)."""
    from activities.email import materialize
    from touchpoint.email.render import resolve_parts

    templates = materialize(sessions, templates_cache, row.playbook_id, row.version)
    request = ApprovalInput.model_validate(row.request)
    locales = request.recipients[0].locales if request.recipients else []
    parts = resolve_parts(templates, row.template, locales)
    return (templates / parts.subject.file).read_text(encoding="utf-8").strip(), (templates / parts.html.file).read_text(encoding="utf-8")


def check_edit(templates: Path, request: ApprovalInput, subject: str | None, html: str | None) -> list[tuple[str, str]]:
    """Why the edit cannot be sent: what `validate` says of its source, then any recipient's render failure."""
    from touchpoint.dsl.templates import check_source
    from touchpoint.email.errors import TemplateError
    from touchpoint.email.render import EDIT_HTML, EDIT_SUBJECT, render_edited
    from touchpoint.engine.effects import context_of

    problems: list[tuple[str, str]] = []
    for part, name, source in (("subject", EDIT_SUBJECT, subject), ("html", EDIT_HTML, html)):
        if source is not None:
            problems.extend((part, f"line {line}: {message}") for line, message in check_source(templates, name, source))
    if problems:
        return problems
    for send in request.send_inputs():
        context = context_of(send, contact=send.recipient.model_dump(), **send.extra_context)
        try:
            render_edited(templates, send.template, context, locales=send.locales, unsubscribe_url="https://touchpoint.invalid/unsubscribe", subject=subject, html=html)
        except TemplateError as exc:
            part = "subject" if "edited subject" in str(exc) else "html"
            problems.append((part, f"for {send.recipient.email}: {exc}"))
    return problems


def conflict(s: Session, row: Approval) -> str | None:
    """Why the request cannot be decided any more, or None."""
    if row.status != "pending":
        when = f" at {_iso(row.decided_at)}" if row.decided_at else ""
        who = f" by {row.decided_by}" if row.decided_by else ""
        if row.status == "closed":
            return f"approval {row.id} is closed: its run ended before a decision"
        return f"approval {row.id} was already {row.status.replace('_', ' ')}{who}{when}"
    run = repo.get_run(s, row.run_id)
    if run is not None and run.status == "ended":
        return f"approval {row.id} can no longer be decided: its run ended ({run.outcome})"
    return None


async def decide(client: Any, task_queue: str, sessions: sessionmaker[Session], templates_cache: Path, approval_id: str, decision: Decision) -> Approval:
    """Check, claim and deliver a decision; the request as stored after it.

    Raises:
        ApprovalNotFound: no such request.
        ApprovalConflict: decided already, or its run ended.
        EditRefused: the edit is not a valid template for every recipient.
        ValueError: an edit or a reason that does not go with the decision.
    """
    import asyncio

    from activities.email import materialize
    from touchpoint.ingest import send_event

    if decision.decision == "rejected" and (decision.subject is not None or decision.html is not None):
        raise ValueError("an edit (subject, html) goes with `approved`, not with `rejected`")
    if decision.decision == "approved" and decision.reason is not None:
        raise ValueError("a reason goes with `rejected`")
    row = get(sessions, approval_id)
    with sessions() as s:
        why = conflict(s, row)
    if why:
        raise ApprovalConflict(why)
    if decision.subject is not None or decision.html is not None:
        templates = await asyncio.to_thread(materialize, sessions, templates_cache, row.playbook_id, row.version)
        request = ApprovalInput.model_validate(row.request)
        problems = await asyncio.to_thread(check_edit, templates, request, decision.subject, decision.html)
        if problems:
            raise EditRefused(problems)
    by = (decision.by or row.approver).strip()
    now = datetime.now(UTC)
    with write_tx(sessions) as s:
        claimed = repo.claim_decision(s, approval_id, decision=decision.decision, by=by, at=now, subject=decision.subject, html=decision.html, reason=decision.reason)
        if not claimed:
            fresh = repo.get_approval(s, approval_id)
            raise ApprovalConflict((conflict(s, fresh) if fresh else None) or f"approval {approval_id} was decided meanwhile")
    data: dict[str, Any] = {
        "approval_id": approval_id, "playbook": row.playbook_id, "step": row.step, "to": [e.get("to") for e in row.emails or []],
        "decision": decision.decision, "by": by,
    }
    data.update({k: v for k, v in (("subject", decision.subject), ("html", decision.html), ("reason", decision.reason)) if v is not None})
    try:
        await send_event(client, task_queue, sessions, str(row.account_id), EventIn(id=f"{approval_id}:decided", type="approval.decided", at=now, data=data))
    except BaseException:
        with write_tx(sessions) as s:
            repo.release_decision(s, approval_id, decision.decision)
        raise
    if row.task_id:
        with write_tx(sessions) as s:
            repo.complete_task(s, row.task_id, now)
    return get(sessions, approval_id)
