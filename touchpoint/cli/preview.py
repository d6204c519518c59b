"""`touchpoint preview`: render every email a playbook can send for an account, optionally test-send."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import typer
from rich.text import Text

from touchpoint.cli.main import app, console, err
from touchpoint.cli.tables import Cell, Column, plural, print_table


@app.command()
def preview(
    playbook_file: Path = typer.Argument(..., help="The playbook file (its workspace.yaml and templates/ are used)."),
    account: Path = typer.Option(..., "--account", help="An account document (YAML or JSON)."),
    out: Path = typer.Option(
        Path(".touchpoint/preview"), "--out", help="Folder for the files: each account gets its own folder inside it."
    ),
    send_to: str | None = typer.Option(
        None, "--send-to", help="Also send each email to this one address, subject prefixed [TEST]."
    ),
    as_json: bool = typer.Option(False, "--json", help="Print one JSON object per email instead of a table."),
) -> None:
    """Render every email of a playbook (each branch and locale) for one account.

    Files go to OUT/<account id>/<step>.<locale>.html and .txt; each row names the contacts who
    receive that locale variant.
    """
    from touchpoint import cache
    from touchpoint.config import ConfigError, load_settings
    from touchpoint.dsl.errors import ContractError
    from touchpoint.dsl.validate import load_project
    from touchpoint.email.errors import EmailConfigurationError
    from touchpoint.preview import preview_playbook
    from touchpoint.simulate import load_account

    if not playbook_file.is_file():
        err.print(f"[red]error:[/] {playbook_file}: no such playbook file")
        raise typer.Exit(2)
    if not account.is_file():
        err.print(f"[red]error:[/] {account}: no such account file")
        raise typer.Exit(2)
    with cache.using():  # template checks and compiled templates from earlier runs
        project = load_project(playbook_file)
    if project.problems or not project.playbooks:
        for problem in project.problems:
            console.print(str(problem), markup=False, soft_wrap=True)
        err.print(
            f"[red]{playbook_file} is not valid:[/] fix the problems above (`touchpoint validate {playbook_file}`)"
        )
        raise typer.Exit(1)
    (loaded,) = project.playbooks.values()
    try:
        doc = load_account(account, project.workspace)
        settings = load_settings()
    except ContractError as exc:
        for problem in exc.problems:
            console.print(str(problem), markup=False, soft_wrap=True)
        raise typer.Exit(1) from None
    except ConfigError as exc:
        err.print(str(exc), markup=False)
        raise typer.Exit(2) from None

    backend: Any = None
    if send_to:
        from touchpoint.email.backends import make_backend

        try:
            backend = make_backend(
                settings.email_backend,
                outbox_dir=settings.outbox_dir,
                sendgrid_api_key=settings.sendgrid_api_key.get_secret_value() if settings.sendgrid_api_key else None,
                sendgrid_url=settings.sendgrid_url,
                smtp_url=settings.smtp_url.get_secret_value() if settings.smtp_url else None,
            )
        except EmailConfigurationError as exc:
            err.print(f"[red]error:[/] {exc}", markup=False)
            raise typer.Exit(2) from None

    book: list[Any] | None = None
    changes: list[Any] = []
    if loaded.playbook.trigger_kind == "schedule":
        # A schedule playbook reviews many accounts: the sample folder's accounts and changes.
        from touchpoint.email.check import sample_accounts
        from touchpoint.preview import sample_changes

        samples = project.root / "samples"
        book = [doc] + [a for _, a in sample_accounts(project, samples)[0] if a.id != doc.id]
        try:
            changes = sample_changes(samples)
        except ValueError as exc:
            err.print(f"[red]error:[/] {exc}", markup=False)
            raise typer.Exit(1) from None
    with cache.using():
        result = preview_playbook(
            loaded,
            doc,
            project.workspace,
            project.templates_dir,
            out,
            unsubscribe_base=settings.public_url,
            secret_key=settings.secret_key.get_secret_value(),
            send_to=send_to,
            backend=backend,
            book=book,
            changes=changes,
        )
        reviews = {} if book is not None else _approvals(loaded, doc, project, result.out_dir, settings)
        from touchpoint.preview_drafts import preview_drafts

        drafts = [] if book is not None else preview_drafts(loaded, doc, project.workspace, project.templates_dir, result.out_dir)
    if as_json:
        for email in result.emails:
            item = {
                "step": email.step,
                "line": email.step_line,
                "template": email.template,
                "locale": email.locale,
                "receives": list(email.receives),
                "recipient": email.recipient,
                "subject": email.subject,
                "html": str(email.html_path) if email.html_path else None,
                "text": str(email.text_path) if email.text_path else None,
                "sent_to": email.sent_to,
                "error": email.error,
                "approval": reviews.get(email.step),
            }
            typer.echo(json.dumps(item, ensure_ascii=False))
    else:
        title = f"{result.playbook} for {doc.id}: {plural(len(result.emails), 'email')} in {result.out_dir}"
        columns = [Column("step", key=True), Column("locale"), Column("receives"), Column("subject"), Column("files", drop=1)]
        if send_to:
            columns.append(Column("test send"))
        rows: list[list[Cell]] = []
        for email in result.emails:
            # Text cells: subjects and errors may contain brackets that Rich would read as markup.
            files = f"{email.html_path.name} {email.text_path.name}" if email.html_path and email.text_path else ""
            subject = Text(email.subject) if email.subject else Text(email.error or "", style="red")
            receives = Text(", ".join(email.receives)) if email.receives else Text("(no contact)", style="dim")
            row: list[Cell] = [email.step, email.locale, receives, subject, files]
            if send_to:
                sent = f"sent to {email.sent_to}" if email.sent_to else (email.error or "" if email.subject else "")
                row.append(Text(sent, style="" if email.sent_to else "red"))
            rows.append(row)
        print_table(console, columns, rows, title=title)
        for step, review in reviews.items():
            console.print(f"approval of {step}: by {review['by']} within {review['timeout']} (then {review['on_timeout']}), as the approver sees it: {review['file']}", markup=False, soft_wrap=True)
    for draft in drafts:
        if draft.error:
            err.print(f"[red]draft {draft.step} failed:[/] {draft.error}", markup=True, soft_wrap=True)
        elif not as_json:
            console.print(f"draft {draft.step} -> run.vars.{draft.into}: its prompt and the draft without a model ({draft.words} words): {draft.path}", markup=False, soft_wrap=True)
    if not result.emails:
        err.print(f"{playbook_file} has no email steps: nothing to preview")
    if result.failed:
        err.print(f"[red]{len(result.failed)} of {plural(len(result.emails), 'email')} failed[/]")
        raise typer.Exit(1)
    if any(d.error for d in drafts):
        raise typer.Exit(1)


def _approvals(loaded: Any, doc: Any, project: Any, out_dir: Path, settings: Any) -> dict[str, dict[str, Any]]:
    """The approver's view of each approval step (`touchpoint.preview_approvals`), by step."""
    from touchpoint.preview_approvals import preview_approvals

    found = preview_approvals(
        loaded, doc, project.workspace, project.templates_dir, out_dir,
        unsubscribe_base=settings.public_url, secret_key=settings.secret_key.get_secret_value(),
    )
    return {
        a.step: {"by": a.by, "timeout": a.timeout, "on_timeout": a.on_timeout, "recipients": list(a.recipients), "file": str(a.path), "errors": list(a.errors)}
        for a in found
    }
