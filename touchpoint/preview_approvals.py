"""`touchpoint preview` for email steps with `approval`: what the approver will review.

For each such step, the account's real recipients of the step are rendered as the run renders
them (their locale, else the account's; `run.vars` as `touchpoint.preview.preview_vars` guesses
them) and written, as `touchpoint approvals show` prints a request, to
``<out>/<account id>/<step>.approval.txt``.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from touchpoint.dsl import expressions as ex
from touchpoint.dsl.accounts import AccountDoc
from touchpoint.dsl.durations import format_duration
from touchpoint.dsl.validate import LoadedPlaybook
from touchpoint.dsl.walk import step_name
from touchpoint.dsl.workspace import Workspace


@dataclass(frozen=True)
class ApprovalPreview:
    """One approval step of a preview: who approves, what happens without a decision, the file."""

    step: str
    by: str
    timeout: str
    on_timeout: str
    recipients: tuple[str, ...]
    path: Path
    errors: tuple[str, ...] = ()


def preview_approvals(
    loaded: LoadedPlaybook,
    account: AccountDoc,
    workspace: Workspace,
    templates_dir: Path,
    out_dir: Path,
    *,
    unsubscribe_base: str = "http://127.0.0.1:8000",
    secret_key: str = "preview",
    now: datetime | None = None,
) -> list[ApprovalPreview]:
    """Write the approver's view of every approval step; ``out_dir`` is the account's folder."""
    from touchpoint import approvals
    from touchpoint.email.errors import TemplateError
    from touchpoint.email.render import render_email
    from touchpoint.engine.people import task_owner
    from touchpoint.preview import PLACEHOLDER, email_steps, preview_context, preview_vars, step_recipients
    from touchpoint.unsubscribe import unsubscribe_url

    moment = now or datetime.now(UTC)
    found: list[ApprovalPreview] = []
    base = preview_context(loaded, account, workspace, now=moment)
    for path, step in email_steps(loaded.playbook):
        spec = step.email.approval
        if spec is None:
            continue
        name = step_name(step, path)
        by, _ = task_owner(spec.by, account, workspace.crm.fallback_owner)
        run_vars = preview_vars(loaded, account, workspace, now=moment, path=path)
        override = _locale(step.email.locale, base)
        emails: list[dict[str, Any]] = []
        for recipient in step_recipients(step, loaded.playbook, account, workspace, base):
            context = preview_context(loaded, account, workspace, now=moment, contact=recipient, run_vars=run_vars)
            locales = [x for x in (override, recipient.locale, account.locale) if x]
            link = unsubscribe_url(unsubscribe_base, secret_key, recipient.email)
            email: dict[str, Any] = {"to": recipient.email + (" (no such contact: a stand-in)" if recipient is PLACEHOLDER else ""), "name": recipient.name}
            try:
                rendered = render_email(templates_dir, step.email.template, context, locales=locales, unsubscribe_url=link)
            except TemplateError as exc:
                email["error"] = str(exc)
            else:
                email.update(subject=rendered.subject, html=rendered.html, text=rendered.text)
            emails.append(email)
        timeout = format_duration(spec.timeout)
        item = {
            "id": "(preview)", "status": "pending", "by": by, "expires_at": f"{timeout} after the request", "on_timeout": spec.on_timeout,
            "playbook": loaded.playbook.playbook, "step": name, "account_id": account.id, "emails": emails,
        }
        target = out_dir / f"{_stem(name)}.approval.txt"
        target.write_text("\n".join(approvals.review_lines(item)) + "\n", encoding="utf-8")
        errors = tuple(f"{e['to']}: {e['error']}" for e in emails if e.get("error"))
        found.append(ApprovalPreview(name, by, timeout, spec.on_timeout, tuple(e["to"] for e in emails), target, errors))
    return found


def _locale(source: str | None, context: dict[str, Any]) -> str | None:
    if not source:
        return None
    try:
        return str(ex.evaluate(source, context))
    except ex.ExpressionError:
        return None


def _stem(step: str) -> str:
    import re

    return re.sub(r"[^A-Za-z0-9_.-]+", "_", step).strip("_") or "step"
