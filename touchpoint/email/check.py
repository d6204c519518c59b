"""Render every email template against the sample accounts, for `touchpoint validate`.

Static checks catch unknown names; only rendering catches what depends on the data: a filter
applied to a missing value, an attribute of `none`, a division by zero. Each email step's
template is rendered in every locale it has, for every sample account in `playbooks/samples/`
and every contact the step would write to, as `touchpoint preview` renders it.
"""

from __future__ import annotations

import os
from datetime import UTC, datetime
from pathlib import Path

import yaml

from touchpoint.dsl.accounts import AccountDoc
from touchpoint.dsl.errors import ContractError, Problem
from touchpoint.dsl.validate import Project

__all__ = ["check_templates", "sample_accounts"]

_UNSUBSCRIBE = "https://touchpoint.invalid/unsubscribe/sample"
# One sample render may take this long: a template too costly for the samples fails fast here
# (it would fail at the full `RENDER_SECONDS` in a worker).
_SAMPLE_SECONDS = 1.0
_ACCOUNT_SUFFIXES = (".yaml", ".yml", ".json")


def _shown(path: Path) -> str:
    try:
        return os.path.relpath(path)
    except ValueError:  # another drive (Windows)
        return str(path)


def sample_accounts(project: Project, samples_dir: Path) -> tuple[list[tuple[Path, AccountDoc]], list[Problem]]:
    """The account documents in ``samples_dir`` (YAML/JSON mappings with `id` and `name`).

    Event files (lists) and other files are ignored; an account document that breaks the
    contract is reported instead of used.

    Returns:
        The accounts with their files, and the problems of the invalid ones.
    """
    from touchpoint.simulate import load_account

    accounts: list[tuple[Path, AccountDoc]] = []
    problems: list[Problem] = []
    if not samples_dir.is_dir():
        return accounts, problems
    for path in sorted(samples_dir.iterdir()):
        if path.suffix.lower() not in _ACCOUNT_SUFFIXES or not path.is_file():
            continue
        try:
            data = yaml.safe_load(path.read_text(encoding="utf-8"))
        except (yaml.YAMLError, UnicodeDecodeError):
            continue  # not an account document; `validate` does not own sample files' syntax
        if not (isinstance(data, dict) and "id" in data and "name" in data):
            continue
        try:
            accounts.append((path, load_account(path, project.workspace)))
        except ContractError as exc:
            problems.extend(
                Problem(_shown(path), p.line, p.field, f"{p.message} (sample account)") for p in exc.problems
            )
    return accounts, problems


def check_templates(project: Project, samples_dir: Path) -> list[Problem]:
    """Render every template of every playbook against every sample account; report failures.

    Args:
        project: A loaded project (playbooks with problems are skipped: `validate` reports them).
        samples_dir: The folder of sample account documents, usually ``<project>/samples``.

    Returns:
        One problem per failing template line and message, at the template's ``file:line``,
        naming the sample account and the playbook step (``file:line``) that uses it.
    """
    from touchpoint.email.errors import TemplateNotFound, TemplateRenderError
    from touchpoint.email.render import render_email
    from touchpoint.preview import (
        email_steps,
        preview_context,
        preview_vars,
        sample_changes,
        schedule_targets,
        schedule_view,
        step_recipients,
        template_locales,
    )

    accounts, problems = sample_accounts(project, samples_dir)
    try:
        changes = sample_changes(samples_dir)
    except ValueError as exc:
        problems.append(Problem(_shown(samples_dir / "changes.yaml"), 1, "", str(exc)))
        changes = []
    book = [account for _, account in accounts]
    templates_dir = project.templates_dir
    now = datetime.now(UTC)
    reported: set[tuple[str, int, str]] = set()
    for loaded in project.playbooks.values():
        playbook_file = _shown(loaded.file)
        for path, step in email_steps(loaded.playbook):
            step_where = f"{playbook_file}:{loaded.positions.line_of(path)}"
            template = step.email.template
            locales = template_locales(templates_dir, template)
            if loaded.playbook.trigger_kind == "schedule":
                # One render per recipient (each CSM's book, or every sample account for `to:`).
                whole = schedule_view(book, changes)
                run_vars = preview_vars(loaded, None, project.workspace, now=now, path=path, schedule=whole)
                for contact, csm in schedule_targets(step, book):
                    view = schedule_view(book, changes, csm=csm) if csm else whole
                    for locale in locales:
                        reader = contact if locale is None else contact.model_copy(update={"locale": locale})
                        context = preview_context(loaded, None, project.workspace, now=now, contact=reader, run_vars=run_vars, schedule=view)
                        try:
                            render_email(templates_dir, template, context, locales=[locale] if locale else [], unsubscribe_url=_UNSUBSCRIBE, seconds=_SAMPLE_SECONDS)
                        except TemplateNotFound:
                            break
                        except TemplateRenderError as exc:
                            where = (templates_dir.parent / exc.template) if exc.template else templates_dir / template
                            key = (str(where), exc.lineno or 1, exc.detail)
                            if key not in reported:
                                reported.add(key)
                                whose = f"the book of {csm}" if csm else "every sample account"
                                problems.append(Problem(_shown(where), exc.lineno or 1, "", f"{exc.detail} when rendered over {whose} for {contact.email} (used by the step at {step_where})"))
                continue
            for account_file, account in accounts:
                base = preview_context(loaded, account, project.workspace, now=now)
                run_vars = preview_vars(loaded, account, project.workspace, now=now, path=path)
                for contact in step_recipients(step, loaded.playbook, account, project.workspace, base):
                    for locale in locales:
                        reader = contact if locale is None else contact.model_copy(update={"locale": locale})
                        context = preview_context(
                            loaded, account, project.workspace, now=now, contact=reader, run_vars=run_vars
                        )
                        try:
                            render_email(
                                templates_dir,
                                template,
                                context,
                                locales=[locale] if locale else [],
                                unsubscribe_url=_UNSUBSCRIBE,
                                seconds=_SAMPLE_SECONDS,
                            )
                        except TemplateNotFound:
                            break  # a missing template is `validate`'s own finding
                        except TemplateRenderError as exc:
                            where = (templates_dir.parent / exc.template) if exc.template else templates_dir / template
                            key = (str(where), exc.lineno or 1, exc.detail)
                            if key in reported:
                                continue
                            reported.add(key)
                            problems.append(
                                Problem(
                                    _shown(where),
                                    exc.lineno or 1,
                                    "",
                                    f"{exc.detail} when rendered for sample account `{account.id}`"
                                    f" ({_shown(account_file)}, contact {contact.email})"
                                    f" (used by the step at {step_where})",
                                )
                            )
    return sorted(problems)
