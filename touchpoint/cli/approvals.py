"""`touchpoint approvals list|show|approve|reject`: emails held for a person's decision.

Reads the store and decides through `touchpoint.approvals` (the API's path): a decision is
claimed in the store and delivered to the account's workflow as `approval.decided`.
`approve --edit` opens `$EDITOR` on the template source of the subject and the HTML; what is
saved is validated and rendered for each recipient of the request before it is accepted.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import click
import typer

from touchpoint.cli.main import app, console, err, run_async
from touchpoint.cli.tables import Column, plural, print_table
from touchpoint.config import settings

approvals_app = typer.Typer(help="Emails held for a person's approval: list, show, approve (optionally editing), reject.", no_args_is_help=True)
app.add_typer(approvals_app, name="approvals")

STATUSES = ("pending", "approved", "rejected", "timed_out", "closed", "all")
HTML_MARK = "--- HTML (template source: rendered for each recipient; keep {{ unsubscribe_url }} or a footer with it is added) ---"


def _sessions() -> Any:
    from touchpoint.store import make_engine, migrate, session_factory

    engine = make_engine(settings().db_url)
    migrate(engine)
    return session_factory(engine)


@approvals_app.command("list")
def list_approvals(
    status: str = typer.Option("pending", "--status", help="pending (default), approved, rejected, timed_out, closed or all."),
    by: str | None = typer.Option(None, "--by", help="Only requests this address approves."),
    as_json: bool = typer.Option(False, "--json", help="Plain JSON lines, one per request."),
) -> None:
    """Approval requests, oldest first (pending by default)."""
    from touchpoint import approvals
    from touchpoint.store import repo

    if status not in STATUSES:
        err.print(f"[red]error:[/] --status must be one of {', '.join(STATUSES)}, not {status!r}")
        raise typer.Exit(2)
    with _sessions()() as s:
        items = [approvals.summary(row, settings().public_url) for row in repo.list_approvals(s, status=None if status == "all" else status, approver=by)]
    if as_json:
        for item in items:
            print(json.dumps(item), flush=True)
        return
    if not items:
        console.print(f"no {'' if status == 'all' else f'{status} '}approvals" + (f" for {by}" if by else ""), markup=False)
        return
    columns = [
        Column("id", key=True),
        Column("status", drop=4 if status != "all" else 1),
        Column("by", key=True),
        Column("account", key=True),
        Column("step", drop=3),
        Column("to", drop=2),
        Column("expires", key=True),
    ]
    rows = [[i["id"], i["status"], i["by"], i["account_id"] or "", f"{i['playbook']}:{i['step']}", ", ".join(i["to"]), (i["expires_at"] or "")[:16]] for i in items]
    print_table(console, columns, rows)


@approvals_app.command("show")
def show(
    approval_id: str = typer.Argument(..., help="The approval's id (apr_...)."),
    html: bool = typer.Option(False, "--html", help="Print each email's HTML instead of its text part."),
    as_json: bool = typer.Option(False, "--json", help="One JSON object with every recipient's rendered email."),
) -> None:
    """What the approver reviews: each recipient's rendered email, and the decision if there is one."""
    from touchpoint import approvals

    try:
        item = approvals.detail(approvals.get(_sessions(), approval_id), settings().public_url)
    except approvals.ApprovalNotFound as exc:
        err.print(f"[red]error:[/] {exc}", markup=False)
        raise typer.Exit(1) from None
    if as_json:
        print(json.dumps(item), flush=True)
        return
    lines = approvals.review_lines(item, html=html)
    for line in lines:
        console.print(line, markup=False, soft_wrap=True, highlight=False)


@approvals_app.command("approve")
def approve(
    approval_id: str = typer.Argument(..., help="The approval's id (apr_...)."),
    edit: bool = typer.Option(False, "--edit", help="Edit the subject and the HTML (template source) in $EDITOR first."),
    subject: str | None = typer.Option(None, "--subject", help="A new subject (template source), rendered for each recipient."),
    html_file: Path | None = typer.Option(None, "--html", help="A file with the new HTML (template source)."),
    by: str | None = typer.Option(None, "--by", help="Who decides (default: the approver)."),
) -> None:
    """Approve a pending request: its emails go out (send window, cap and suppressions still apply)."""
    from touchpoint import approvals

    html = html_file.read_text(encoding="utf-8") if html_file else None
    if edit:
        subject, html = _edit(approval_id, subject, html)
    _decide(approval_id, approvals.Decision(decision="approved", by=by, subject=subject, html=html))


@approvals_app.command("reject")
def reject(
    approval_id: str = typer.Argument(..., help="The approval's id (apr_...)."),
    reason: str | None = typer.Option(None, "--reason", help="Why (kept with the decision and on the run's timeline)."),
    by: str | None = typer.Option(None, "--by", help="Who decides (default: the approver)."),
) -> None:
    """Reject a pending request: nothing is sent and the step completes as skipped."""
    from touchpoint import approvals

    _decide(approval_id, approvals.Decision(decision="rejected", by=by, reason=reason))


def _edit(approval_id: str, subject: str | None, html: str | None) -> tuple[str | None, str | None]:
    """The subject and HTML as saved in $EDITOR (None for a part left as it was)."""
    from touchpoint import approvals

    sessions = _sessions()
    try:
        row = approvals.get(sessions, approval_id)
    except approvals.ApprovalNotFound as exc:
        err.print(f"[red]error:[/] {exc}", markup=False)
        raise typer.Exit(1) from None
    original_subject, original_html = approvals.sources(sessions, settings().home / "templates", row)
    start_subject, start_html = subject or original_subject, html or original_html
    text = f"Subject: {start_subject}\n{HTML_MARK}\n{start_html}"
    saved = click.edit(text, extension=".html")
    if saved is None:
        err.print("nothing was saved: not approved (approve without --edit to send the emails as rendered)")
        raise typer.Exit(1)
    head, mark, body = saved.partition(f"\n{HTML_MARK}\n")
    if not mark or not head.startswith("Subject:"):
        err.print(f"[red]error:[/] keep the first line `Subject: ...` and the line `{HTML_MARK}` above the HTML", markup=False)
        raise typer.Exit(1)
    new_subject, new_html = head.removeprefix("Subject:").strip(), body
    return (new_subject if new_subject != original_subject else None), (new_html if new_html.strip() != original_html.strip() else None)


def _decide(approval_id: str, decision: Any) -> None:
    from touchpoint import approvals
    from worker import connect

    config = settings()

    async def go() -> Any:
        client = await connect(config)
        return await approvals.decide(client, config.task_queue, _sessions(), config.home / "templates", approval_id, decision)

    try:
        row = run_async(go())
    except (approvals.ApprovalNotFound, approvals.ApprovalConflict, ValueError) as exc:
        if isinstance(exc, approvals.EditRefused):
            err.print(f"[red]the edit cannot be sent[/] ({plural(len(exc.problems), 'problem')}):")
            for part, message in exc.problems:
                err.print(f"  {part}: {message}", markup=False, soft_wrap=True)
        else:
            err.print(f"[red]error:[/] {exc}", markup=False, soft_wrap=True)
        raise typer.Exit(1) from None
    edited = f", edited: {', '.join(p for p in ('subject', 'html') if getattr(row, p) is not None)}" if (row.subject or row.html) else ""
    console.print(f"{row.status} {row.id} by {row.decided_by}{edited}", markup=False)
