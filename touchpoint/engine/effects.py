"""Side effects without a server: what `simulate` and `forecast` do instead of activities.

The pure parts of each effect (the render context, a task's title and owner, an update's field
values, a webhook's URL) live here and are shared with the activities (`activities/`), so a
simulated step shows what the real one would. `LocalEffects` performs an `Effect` in memory:
emails are rendered from the playbook's `templates/` and not sent, tasks and notes are not
stored, webhooks are not called, and the frequency cap is counted per contact in memory.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

from touchpoint.dsl import expressions as ex
from touchpoint.dsl.runtime import (
    ApprovalInput,
    ApprovalResult,
    DraftInput,
    EffectInput,
    EffectResult,
    NoteInput,
    ReserveSlotInput,
    SendEmailInput,
    SendEmailResult,
    TaskInput,
    TaskResult,
    UpdateInput,
    WebhookInput,
    build_context,
)
from touchpoint.dsl.timing import earliest_free_slot
from touchpoint.engine.people import stable_id, task_owner
from touchpoint.engine.program import CONFIGURATION_ERROR, Effect, EffectDone

SIMULATED_UNSUBSCRIBE = "https://touchpoint.invalid/unsubscribe/simulated"
LOCAL_DRAFT_TRIES = 3
"""Calls a simulation makes to a real AI backend for one draft before it keeps the fallback."""


def context_of(input: EffectInput, workspace_tz: str = "UTC", **extra: Any) -> dict[str, Any]:
    """The names a template sees for this step, on the run's clock."""
    tz = (input.account.timezone if input.account else None) or workspace_tz
    return build_context(account=input.account, event=input.event, run=input.run, now=input.now, tz=tz, extra=extra or None)


def render_tree(value: Any, context: Mapping[str, Any]) -> Any:
    """Render every string of a JSON-like value as an inline template.

    Raises:
        ExpressionError: a template failed (the step fails; retrying would fail the same way).
    """
    if isinstance(value, str):
        return ex.render_text(value, context)
    if isinstance(value, dict):
        return {k: render_tree(v, context) for k, v in value.items()}
    if isinstance(value, list):
        return [render_tree(v, context) for v in value]
    return value


def update_values(fields: Mapping[str, Any], context: Mapping[str, Any]) -> dict[str, Any]:
    """An `update` step's field values: strings are templates, ``{value}`` was evaluated in the run."""
    out: dict[str, Any] = {}
    for name, value in fields.items():
        if isinstance(value, str):
            out[name] = ex.render_text(value, context)
        elif isinstance(value, dict) and set(value) == {"value"}:
            out[name] = value["value"]
        else:
            out[name] = value
    return out


def task_result(input: TaskInput) -> tuple[TaskResult, str | None]:
    """The task a `task` step creates (before any CRM says otherwise) and its rendered notes
    (without the line saying why a fallback owner has it: `with_note` adds that)."""
    context = context_of(input)
    title = ex.render_text(input.title, context)
    notes = ex.render_text(input.notes, context) if input.notes else None
    owner, owner_note = task_owner(input.owner, input.account, input.fallback_owner)
    result = TaskResult(task_id=stable_id("task", input.key), title=title, owner=owner, due_at=input.due_at, owner_note=owner_note)
    return result, notes


def approval_task(input: ApprovalInput, link: str | None = None) -> TaskInput:
    """The CRM task that tells the approver of a request (its ledger key derives from the request's)."""
    count = len(input.recipients)
    where = f"Review it at {link}" if link else "Review it"
    notes = (
        f"{where}, or run `touchpoint approvals show {input.approval_id}`, then approve (optionally editing the subject"
        f" and HTML) or reject it. Without a decision by {input.expires_at.isoformat(timespec='minutes')} it is"
        f" {'sent as rendered' if input.on_timeout == 'send' else 'not sent'}."
    )
    fields = {name: getattr(input, name) for name in EffectInput.model_fields if name != "projections"}
    return TaskInput(
        **{**fields, "key": f"{input.key}|approval"},
        title=f"Approve the {input.template} email for {{{{ account.name }}}} ({count} recipient{'s' if count != 1 else ''})",
        notes=notes,
        owner=input.approver_spec,
        fallback_owner=input.fallback_owner,
        due_at=input.expires_at,
        priority="high",
    )


class LocalEffects:
    """Performs effects in memory for a run without a server (see the module docstring)."""

    def __init__(self, templates: Path, *, ai: Any = None, ai_name: str = "none") -> None:
        self.templates = templates
        self.ai = ai
        """The AI backend `draft` steps ask (None: the `none` backend, the default)."""
        self.ai_name = ai_name
        self.slots: dict[str, dict[str, datetime]] = {}
        self.approvals: dict[str, dict[str, Any]] = {}
        """What each approval request rendered, by recipient (an edit renders anew)."""

    def perform(self, effect: Effect) -> EffectDone | None:
        """The answer to ``effect`` (None for `start_playbook`, which has none)."""
        if effect.kind == "draft_text":
            assert isinstance(effect.input, DraftInput)
            return self.draft(effect.id, effect.input)
        try:
            result = self._perform(effect)
        except ex.ExpressionError as exc:
            return EffectDone(id=effect.id, error=str(exc), error_type="Rejected")
        if result is None:
            return None
        return EffectDone(id=effect.id, result=result)

    def _perform(self, effect: Effect) -> Any:
        kind, input = effect.kind, effect.input
        if kind == "send_email":
            return self.send_email(input)
        if kind == "reserve_send_slot":
            return self.reserve(input)
        if kind == "request_approval":
            assert isinstance(input, ApprovalInput)
            return self.request_approval(input)
        if kind == "create_task":
            assert isinstance(input, TaskInput)
            return task_result(input)[0]
        if kind == "add_note":
            assert isinstance(input, NoteInput)
            return EffectResult(detail={"text": ex.render_text(input.text, context_of(input))})
        if kind == "update_fields":
            assert isinstance(input, UpdateInput)
            return EffectResult(detail={"fields": update_values(input.fields, context_of(input))})
        if kind == "call_webhook":
            assert isinstance(input, WebhookInput)
            context = context_of(input)
            url = ex.render_text(input.url, context)
            render_tree(input.json_body, context)
            render_tree(dict(input.headers), context)
            return EffectResult(detail={"url": url, "status": None, "simulated": True})
        return None

    def send_email(self, input: SendEmailInput) -> SendEmailResult | EffectDone:
        held = self.approvals.get(input.approval_id or "", {}).get(input.recipient.email.lower())
        rendered = held if held is not None and input.edit_subject is None and input.edit_html is None else self.render(input)
        locale = rendered.locale_used.html if hasattr(rendered.locale_used, "html") else None
        return SendEmailResult(status="sent", to=input.recipient.email, message_id=None, subject=rendered.subject, template=input.template, locale=locale)

    def render(self, input: SendEmailInput) -> Any:
        """The recipient's email as the send renders it (with an approved edit, if any)."""
        from touchpoint.email.errors import TemplateError
        from touchpoint.email.render import render_edited, render_email

        context = context_of(input, contact=input.recipient.model_dump(), **input.extra_context)
        try:
            if input.edit_subject is not None or input.edit_html is not None:
                return render_edited(
                    self.templates, input.template, context, locales=input.locales, unsubscribe_url=SIMULATED_UNSUBSCRIBE,
                    subject=input.edit_subject, html=input.edit_html,
                )
            return render_email(self.templates, input.template, context, locales=input.locales, unsubscribe_url=SIMULATED_UNSUBSCRIBE)
        except TemplateError as exc:
            raise ex.ExpressionError(str(exc)) from None

    def request_approval(self, input: ApprovalInput) -> ApprovalResult:
        """Render every recipient's email and keep it for the send; the approver's task is not stored."""
        rendered: dict[str, Any] = {}
        for send in input.send_inputs():
            try:
                rendered[send.recipient.email.lower()] = self.render(send)
            except ex.ExpressionError:
                continue  # the send renders again, and fails as it would without approval
        self.approvals[input.approval_id] = rendered
        task, _ = task_result(approval_task(input))
        return ApprovalResult(approval_id=input.approval_id, approver=input.approver, task_id=task.task_id, to=[r.recipient.email for r in input.recipients])

    def draft(self, effect_id: str, input: DraftInput) -> EffectDone:
        """A draft as the `draft_text` activity writes it; a real backend's transient errors are
        tried `LOCAL_DRAFT_TRIES` times (waiting out its retry hint, at most 30 s)."""
        import time

        from touchpoint.ai.base import AiConfigurationError, AiTransientError
        from touchpoint.ai.drafts import write_draft
        from touchpoint.email.errors import TemplateError

        backend = self.ai if input.use_model else None
        for attempt in range(1, LOCAL_DRAFT_TRIES + 1):
            try:
                return EffectDone(id=effect_id, result=write_draft(input, self.templates, backend, self.ai_name))
            except TemplateError as exc:
                return EffectDone(id=effect_id, error=str(exc), error_type="Rejected")
            except AiConfigurationError as exc:
                return EffectDone(id=effect_id, error=str(exc), error_type=CONFIGURATION_ERROR)
            except AiTransientError as exc:
                if attempt == LOCAL_DRAFT_TRIES:
                    return EffectDone(id=effect_id, error=str(exc), error_type="AiTransient")
                time.sleep(min(exc.retry_after if exc.retry_after is not None else float(attempt), 30.0))
        raise AssertionError("unreachable")  # pragma: no cover

    def reserve(self, input: ReserveSlotInput) -> datetime:
        """The store's cap rule (`earliest_free_slot`), per contact, in memory."""
        slots = self.slots.setdefault(input.contact_email.lower(), {})
        existing = slots.get(input.key)
        if existing is not None and existing >= input.desired_at - timedelta(seconds=1):
            return existing
        slots.pop(input.key, None)
        others = [t for t in slots.values() if t > input.desired_at - input.per]
        slot = earliest_free_slot(others, input.desired_at, input.emails, input.per)
        slots[input.key] = slot
        return slot
