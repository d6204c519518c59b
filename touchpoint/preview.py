"""`touchpoint preview`: render every email a playbook can send for one account, to files.

Every email step anywhere in the playbook (branches, split variants, timeouts, overdue steps,
repeat rounds, checkpoints and `on_miss`) is rendered once per locale its template has (the
plain parts, then each ``<name>.<locale>.*`` variant), with the same context a run would give it
(`touchpoint.dsl.runtime.build_context`, run id ``preview``, a manual event). With a test
address, each rendered email also goes through the configured backend to that address only.
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from touchpoint.dsl import expressions as ex
from touchpoint.dsl.accounts import AccountDoc
from touchpoint.dsl.runtime import EventIn, Recipient, RunView, account_context, build_context, initial_scorecard, plain
from touchpoint.dsl.sandbox import FreeMap
from touchpoint.dsl.schedule import changes_root
from touchpoint.dsl.schema import INTERNAL_RECIPIENTS, DraftStep, EmailStep, Playbook, SetStep, SplitStep, is_address
from touchpoint.dsl.templates import template_files
from touchpoint.dsl.validate import LoadedPlaybook
from touchpoint.dsl.walk import all_steps, step_name
from touchpoint.dsl.workspace import Workspace
from touchpoint.dsl.yamlpos import Path as YPath

__all__ = [
    "DEFAULT_LOCALE",
    "PLACEHOLDER",
    "PreviewEmail",
    "PreviewResult",
    "email_steps",
    "preview_context",
    "preview_playbook",
    "preview_vars",
    "received_locale",
    "sample_changes",
    "schedule_targets",
    "step_recipients",
    "template_locales",
]

#: How the plain (locale-less) parts are named in output files and reports.
DEFAULT_LOCALE = "default"
#: The recipient used when a step targets nobody in the account (or an address expression).
PLACEHOLDER = Recipient(email="recipient@example.com", name="Preview Recipient")
PREVIEW_RUN_ID = "preview"
_UNSAFE = re.compile(r"[^A-Za-z0-9_.-]+")


@dataclass(frozen=True)
class PreviewEmail:
    """One rendered email of a preview.

    Attributes:
        step: The step's name (its `id`, else its path such as ``steps[2].then[0]``).
        step_line: The step's line in the playbook file.
        template: The template name.
        locale: The locale variant rendered, or ``default`` for the plain parts.
        recipient: The contact the email was rendered for.
        subject: The rendered subject (without the ``[TEST]`` prefix).
        html_path: The HTML file written (None when rendering failed).
        text_path: The text file written (None when rendering failed).
        error: Why rendering or the test send failed, else None.
        sent_to: The test address it was sent to, else None.
        provider_message_id: The backend's id for the test send, when it gave one.
        receives: The account's recipients of the step who get this locale variant when a run
            sends it (their locale, else the account's, picks the variant); empty when nobody
            does.
    """

    step: str
    step_line: int
    template: str
    locale: str
    recipient: str
    subject: str = ""
    html_path: Path | None = None
    text_path: Path | None = None
    error: str | None = None
    sent_to: str | None = None
    provider_message_id: str | None = None
    receives: tuple[str, ...] = ()


@dataclass
class PreviewResult:
    """Everything a preview produced, in playbook order; ``out_dir`` is the account's folder."""

    playbook: str
    out_dir: Path
    emails: list[PreviewEmail] = field(default_factory=list)

    @property
    def failed(self) -> list[PreviewEmail]:
        """The emails that could not be rendered or sent."""
        return [e for e in self.emails if e.error]


def email_steps(playbook: Playbook) -> Iterator[tuple[YPath, EmailStep]]:
    """Every email step of a playbook, nested ones included, with its YAML path."""
    for path, step in all_steps(playbook):
        if isinstance(step, EmailStep):
            yield path, step


def template_locales(templates_dir: Path, name: str) -> list[str | None]:
    """The locales template ``name`` can render in: None (the plain parts) first, then each variant.

    A locale counts when any part has a variant for it; the other parts fall back per part,
    as they do when a run sends the email.
    """
    locales: list[str | None] = [None]
    for files in template_files(templates_dir, name).values():
        for file in files:
            parts = file.name.split(".")
            # <name>.<locale>.<part>.j2: the locale is the third piece from the end.
            if len(parts) == name.count(".") + 4:
                locale = parts[-3]
                if locale not in locales:
                    locales.append(locale)
    return [None, *sorted(loc for loc in locales if loc is not None)]


def received_locale(templates_dir: Path, name: str, locales: Sequence[str]) -> str | None:
    """The locale variant of template ``name`` a recipient with these preferred locales gets.

    The same choice a run makes (`touchpoint.email.render.resolve_parts`): the variant of the
    first part that has one, else None for the plain parts (also when the template is missing).
    """
    from touchpoint.email.errors import TemplateError
    from touchpoint.email.render import resolve_parts

    try:
        resolved = resolve_parts(templates_dir, name, locales)
    except TemplateError:
        return None
    parts = (resolved.html, resolved.subject, resolved.text)
    return next((part.locale for part in parts if part is not None and part.locale), None)


def _contact(contact: Any) -> Recipient:
    return Recipient(**contact.model_dump())


# ---------------------------------------------------------------------------- schedule playbooks


@dataclass(frozen=True)
class SampleChange:
    """One event of ``samples/changes.yaml``: what a schedule playbook's `changes` show in
    previews, `validate` and tests (``{type, account, at?, data}``)."""

    type: str
    account: str
    at: datetime
    data: dict[str, Any]


def sample_changes(samples_dir: Path, *, now: datetime | None = None) -> list[SampleChange]:
    """The sample events in ``samples_dir/changes.yaml`` (none when the file is absent).

    Raises:
        ValueError: naming the entry, when an entry is not ``{type, account, at?, data?}``.
    """
    import yaml

    path = samples_dir / "changes.yaml"
    if not path.is_file():
        return []
    moment = now or datetime.now(UTC)
    items = yaml.safe_load(path.read_text(encoding="utf-8")) or []
    out: list[SampleChange] = []
    for index, item in enumerate(items if isinstance(items, list) else [items]):
        if not (isinstance(item, dict) and isinstance(item.get("type"), str) and isinstance(item.get("account"), str)):
            raise ValueError(f"{path}: entry {index + 1} needs `type` and `account` (an account id of the samples)")
        at = item.get("at")
        when = at if isinstance(at, datetime) else moment
        out.append(SampleChange(item["type"], item["account"], when if when.tzinfo else when.replace(tzinfo=UTC), dict(item.get("data") or {})))
    return out


def schedule_view(book: Sequence[AccountDoc], changes: Sequence[SampleChange], *, csm: str | None = None) -> dict[str, Any]:
    """`accounts` and `changes` of a schedule run over ``book`` (one CSM's part with ``csm``)."""
    mine = [a for a in book if csm is None or (a.csm is not None and (a.csm.email or "").lower() == csm.lower())]
    views = {a.id: account_context(a)[0] for a in mine}

    def load(event_type: str) -> list[Any]:
        return [
            {"id": None, "type": c.type, "at": c.at, "data": FreeMap(c.data), "account": views[c.account]}
            for c in changes
            if c.type == event_type and c.account in views
        ]

    return {"accounts": list(views.values()), "changes": changes_root(load)}


def schedule_targets(step: EmailStep, book: Sequence[AccountDoc]) -> list[tuple[Recipient, str | None]]:
    """Who a schedule playbook's email goes to over ``book``: (recipient, CSM whose book it is)."""
    found: dict[str, tuple[Recipient, str | None]] = {}
    if step.email.for_each == "csm":
        for account in book:
            if account.csm is not None and account.csm.email:
                key = account.csm.email.lower()
                found.setdefault(key, (Recipient(email=account.csm.email, name=account.csm.name, role="csm"), key))
    for target in step.email.to or []:
        if is_address(target):
            found.setdefault(target.lower(), (Recipient(email=target), None))
    return list(found.values()) or [(PLACEHOLDER, None)]


def step_recipients(
    step: EmailStep, playbook: Playbook, account: AccountDoc, workspace: Workspace, context: dict[str, Any]
) -> list[Recipient]:
    """Who the step would email for this account, as a run chooses them (never empty).

    Role names pick the account's contacts with that role, `csm`/`owner` the account's people,
    other entries are evaluated as address expressions; with no `to:` and no `audience:` every
    contact is a recipient. When that finds nobody, :data:`PLACEHOLDER` stands in.
    """
    roles = workspace.known_roles()
    targets = step.email.to if step.email.to is not None else (playbook.audience or None)
    found: list[Recipient] = []

    def add(r: Recipient) -> None:
        if all(x.email.lower() != r.email.lower() for x in found):
            found.append(r)

    if targets is None:
        for c in account.contacts:
            add(_contact(c))
    for target in targets or []:
        if target in INTERNAL_RECIPIENTS:
            who = getattr(account, target, None)
            if who is not None and who.email:
                add(Recipient(email=who.email, name=who.name, role=target, timezone=account.timezone))
        elif target in roles:
            for c in account.contacts:
                if c.role == target:
                    add(_contact(c))
        else:
            try:
                value = ex.evaluate(target, context)
            except ex.ExpressionError:
                continue  # the run would fail this recipient; the preview still shows the email
            for address in value if isinstance(value, (list, tuple)) else [value]:
                if address:
                    known = next((c for c in account.contacts if c.email.lower() == str(address).lower()), None)
                    add(_contact(known) if known else Recipient(email=str(address)))
    return found or [PLACEHOLDER]


def preview_vars(
    loaded: LoadedPlaybook,
    account: AccountDoc | None,
    workspace: Workspace,
    *,
    now: datetime,
    path: YPath = (),
    schedule: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """A plausible `run.vars` for an email at ``path``: every `set` step evaluated, splits chosen.

    A run's `set` steps fill `run.vars` before later emails render; without them a template
    using `run.vars.workflows | length` would fail in the preview only. Each `set` is evaluated
    in playbook order on the preview context (a value that fails is left out); a split's
    variant is the one the email sits in, else its first.
    """
    values: dict[str, Any] = {}
    for step_path, step in all_steps(loaded.playbook):
        if isinstance(step, SplitStep):
            here = len(step_path)
            inside = path[: here + 1] == (*step_path, "split") and len(path) > here + 1
            values[step.id or step_name(step, step_path)] = path[here + 1] if inside else next(iter(step.split))
        elif isinstance(step, DraftStep) and account is not None:
            # What the `none` backend keeps, so emails that show the draft render it.
            from touchpoint.email.errors import TemplateError
            from touchpoint.preview_drafts import draft_text

            try:
                prompt, fallback = draft_text(step, loaded.file.parent / "templates", preview_context(loaded, account, workspace, now=now, run_vars=values))
            except TemplateError:
                continue
            values[step.draft.into] = fallback if fallback is not None else prompt
        elif isinstance(step, SetStep):
            context = preview_context(loaded, account, workspace, now=now, run_vars=values, schedule=schedule)
            for key, source in step.set.items():
                try:
                    values[key] = plain(ex.evaluate(source, context))
                except ex.ExpressionError:
                    continue
    return values


def preview_context(
    loaded: LoadedPlaybook,
    account: AccountDoc | None,
    workspace: Workspace,
    *,
    now: datetime,
    contact: Recipient | None = None,
    run_vars: dict[str, Any] | None = None,
    schedule: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """What a template sees on a run's first day: run id ``preview``, a manual event.

    A schedule playbook has no account: pass ``account=None`` and its `accounts` and `changes`
    as ``schedule`` (from `schedule_view`); its event is a tick covering the past week.
    """
    run = RunView(
        id=PREVIEW_RUN_ID,
        playbook=loaded.playbook.playbook,
        version=loaded.version or "preview",
        started_at=now,
        vars=dict(run_vars or {}),
        scorecard=initial_scorecard(loaded.playbook),
    )
    extra: dict[str, Any] = {"contact": contact.model_dump()} if contact is not None else {}
    extra.update(schedule or {})
    tz = (account.timezone if account else None) or workspace.timezone
    event = EventIn(type="manual")
    if loaded.playbook.trigger_kind == "schedule":
        since = now - timedelta(days=7)
        event = EventIn(type="schedule", at=now, data={"since": since.isoformat(), "tick": now.isoformat()})
    return build_context(account=account, event=event, run=run, now=now, tz=tz, extra=extra or None)


def _pick(recipients: Sequence[Recipient], locale: str | None, account: AccountDoc) -> Recipient:
    """The recipient to render a locale for: one who reads it, else the first."""
    if locale is not None:
        for r in recipients:
            if (r.locale or account.locale or "").lower().split("-")[0] == locale.lower().split("-")[0]:
                return r
    return recipients[0]


def _file_stem(step: str, locale: str) -> str:
    return f"{_UNSAFE.sub('_', step).strip('_') or 'step'}.{_UNSAFE.sub('_', locale)}"


def preview_playbook(
    loaded: LoadedPlaybook,
    account: AccountDoc,
    workspace: Workspace,
    templates_dir: Path,
    out_dir: Path,
    *,
    unsubscribe_base: str = "http://127.0.0.1:8000",
    secret_key: str = "preview",
    send_to: str | None = None,
    backend: Any = None,
    now: datetime | None = None,
    book: Sequence[AccountDoc] | None = None,
    changes: Sequence[SampleChange] = (),
) -> PreviewResult:
    """Render every email of a playbook for one account into ``out_dir``.

    A schedule playbook renders for the CSM of ``account`` over ``book`` (default: the account
    alone) and the sample ``changes``; its `to:` addresses see the whole book.

    Writes ``<out_dir>/<account id>/<step>.<locale>.html`` and ``.txt`` per email step and
    locale (``default`` for the plain parts), so previews of several accounts sit side by side.
    Each email lists the recipients who get that variant. A render failure is recorded on that
    email and the others still render.

    Args:
        loaded: The validated playbook.
        account: The account, with workspace defaults applied.
        workspace: The playbook's workspace settings (sender, roles, time zone).
        templates_dir: The ``templates/`` folder beside the playbook.
        out_dir: The folder under which the account's folder is written (both created).
        unsubscribe_base: The public URL the unsubscribe links point to.
        secret_key: The key that signs unsubscribe links.
        send_to: Also send each email to this address only, subject prefixed ``[TEST] ``.
        backend: The email backend for ``send_to`` (anything with ``send(EmailMessage)``).
        now: The moment to render at; now (UTC) when omitted.

    Returns:
        The emails rendered, in playbook order.

    Raises:
        ValueError: ``send_to`` without a backend.
    """
    from touchpoint.email.errors import EmailError, TemplateError
    from touchpoint.email.message import EmailMessage, new_message_id
    from touchpoint.email.render import render_email
    from touchpoint.unsubscribe import unsubscribe_url

    if send_to and backend is None:
        raise ValueError("send_to needs a backend: pass the one make_backend() builds from the settings")
    moment = now or datetime.now(UTC)
    out_dir = out_dir / (_UNSAFE.sub("_", account.id).strip("._") or "account")
    out_dir.mkdir(parents=True, exist_ok=True)
    result = PreviewResult(playbook=loaded.playbook.playbook, out_dir=out_dir)
    scheduled = loaded.playbook.trigger_kind == "schedule"
    books = list(book or [account])
    whole = schedule_view(books, changes) if scheduled else None
    base_context = preview_context(loaded, account, workspace, now=moment, schedule=whole)
    for path, step in email_steps(loaded.playbook):
        name = step_name(step, path)
        line = loaded.positions.line_of(path)
        template = step.email.template
        view: dict[str, Any] | None = whole
        if scheduled:
            targets = schedule_targets(step, books)
            mine = [t for t in targets if t[1] and account.csm and t[1] == (account.csm.email or "").lower()]
            recipient, csm = (mine or targets)[0]
            recipients = [recipient]
            view = schedule_view(books, changes, csm=csm) if csm else whole
        else:
            recipients = step_recipients(step, loaded.playbook, account, workspace, base_context)
        run_vars = preview_vars(loaded, None if scheduled else account, workspace, now=moment, path=path, schedule=whole)
        receivers = _receivers(step, recipients, None if scheduled else account, templates_dir, base_context)
        for locale in template_locales(templates_dir, template):
            label = locale or DEFAULT_LOCALE
            receives = tuple(r.email for r in receivers.get(locale, []))
            contact = (receivers.get(locale) or [_pick(recipients, locale, account)])[0]
            shown = contact if locale is None else contact.model_copy(update={"locale": locale})
            context = preview_context(
                loaded, None if scheduled else account, workspace, now=moment, contact=shown, run_vars=run_vars, schedule=view
            )
            # The plain parts render with no locale at all, a variant with only its own.
            locales = [locale] if locale else []
            link = unsubscribe_url(unsubscribe_base, secret_key, send_to or contact.email)
            try:
                rendered = render_email(templates_dir, template, context, locales=locales, unsubscribe_url=link)
            except TemplateError as exc:
                result.emails.append(PreviewEmail(name, line, template, label, contact.email, error=str(exc), receives=receives))
                continue
            stem = _file_stem(name, label)
            html_path, text_path = out_dir / f"{stem}.html", out_dir / f"{stem}.txt"
            html_path.write_text(rendered.html, encoding="utf-8")
            text_path.write_text(rendered.text, encoding="utf-8")
            email = PreviewEmail(name, line, template, label, contact.email, rendered.subject, html_path, text_path, receives=receives)
            if send_to:
                message = EmailMessage(
                    message_id=new_message_id(),
                    from_email=workspace.sender.email,
                    from_name=workspace.sender.name or "",
                    to_email=send_to,
                    subject=f"[TEST] {rendered.subject}",
                    html=rendered.html,
                    text=rendered.text,
                    categories=["touchpoint-test", loaded.playbook.playbook],
                    custom_args={
                        "touchpoint_account": account.id,
                        "touchpoint_playbook": loaded.playbook.playbook,
                        "touchpoint_run": PREVIEW_RUN_ID,
                        "touchpoint_step": name,
                    },
                )
                try:
                    sent = backend.send(message)
                except EmailError as exc:
                    email = _replace(email, error=f"test send to {send_to} failed: {exc}")
                else:
                    email = _replace(email, sent_to=send_to, provider_message_id=sent.provider_message_id)
            result.emails.append(email)
    return result


def _receivers(
    step: EmailStep, recipients: Sequence[Recipient], account: AccountDoc | None, templates_dir: Path, context: dict[str, Any]
) -> dict[str | None, list[Recipient]]:
    """The step's real recipients by the locale variant each gets (None: the plain parts).

    As a run chooses: the step's `locale` expression, else the recipient's locale, else the
    account's. The stand-in recipient of a step that finds nobody receives nothing.
    """
    override: str | None = None
    if step.email.locale:
        try:
            override = str(ex.evaluate(step.email.locale, context))
        except ex.ExpressionError:
            override = None
    out: dict[str | None, list[Recipient]] = {}
    for r in recipients:
        if r is PLACEHOLDER:
            continue
        locales = [x for x in (override, r.locale, account.locale if account else None) if x]
        out.setdefault(received_locale(templates_dir, step.email.template, locales), []).append(r)
    return out


def _replace(email: PreviewEmail, **changes: Any) -> PreviewEmail:
    from dataclasses import replace

    return replace(email, **changes)
