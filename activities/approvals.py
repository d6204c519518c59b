"""The `approval` of an email step: render every recipient's email, store the request, tell the approver.

One request per (run, step path, round): its id and its approver's task id derive from the
request's ledger key, so a retry stores nothing twice. The approver is told by a CRM task (in
the local store, and in the CRM when one is configured) that links to the request, and the
account hears `approval.requested` (an event playbooks may `wait_for`). Emails render here, in
the sandbox, never in workflow code; a recipient whose email fails to render is stored with the
error (an edit may fix it, else its send fails as it would without approval).
"""

from __future__ import annotations

import asyncio
from typing import Any

from sqlalchemy.orm import Session
from temporalio import activity

from activities.crm import CrmActivities
from activities.deps import Deps
from activities.email import materialize_templates
from activities.render import context_of
from activities.store import write_carried
from touchpoint.approvals import review_link
from touchpoint.dsl.runtime import ApprovalInput, ApprovalResult, EventIn
from touchpoint.engine.effects import approval_task, task_result
from touchpoint.store import repo
from touchpoint.unsubscribe import unsubscribe_url
from workflows import names


class ApprovalActivities:
    """`request_approval`: the request of an email step with `approval`."""

    def __init__(self, deps: Deps, crm: CrmActivities) -> None:
        self.deps = deps
        self.crm = crm

    @activity.defn(name=names.REQUEST_APPROVAL)
    async def request_approval(self, input: ApprovalInput) -> ApprovalResult:
        """Render, store, and tell the approver, once per request."""
        await write_carried(self.deps, input)
        link = review_link(self.deps.settings.public_url, input.approval_id)
        task_input = approval_task(input, link)
        task_id = task_result(task_input)[0].task_id
        stored = await self.deps.read(lambda s: repo.get_approval(s, input.approval_id) is not None)
        if not stored:
            emails = await asyncio.to_thread(self._render_all, input)
            await self.deps.db(lambda s: self._store(s, input, emails, task_id))
        await self.crm.create_task(task_input)
        if not input.simulation and input.account is not None and self.deps.client is not None:
            from touchpoint.ingest import send_event

            data = {"approval_id": input.approval_id, "playbook": input.run.playbook, "step": input.step, "to": [r.recipient.email for r in input.recipients], "by": input.approver}
            event = EventIn(id=f"{input.approval_id}:requested", type="approval.requested", at=input.now, data=data)
            await send_event(self.deps.client, activity.info().task_queue, self.deps.sessions, input.account.id, event)
        return ApprovalResult(approval_id=input.approval_id, approver=input.approver, task_id=task_id, to=[r.recipient.email for r in input.recipients])

    def _render_all(self, input: ApprovalInput) -> list[dict[str, Any]]:
        from touchpoint.email.errors import TemplateError
        from touchpoint.email.render import render_email

        templates = materialize_templates(self.deps, input.run.playbook, input.run.version)
        secret = self.deps.settings.secret_key.get_secret_value()
        emails: list[dict[str, Any]] = []
        for send in input.send_inputs():
            to = send.recipient.email
            email: dict[str, Any] = {"to": to, "name": send.recipient.name}
            context = context_of(send, contact=send.recipient.model_dump(), **send.extra_context)
            try:
                rendered = render_email(templates, send.template, context, locales=send.locales, unsubscribe_url=unsubscribe_url(self.deps.settings.public_url, secret, to))
            except TemplateError as exc:
                email["error"] = str(exc)
            else:
                email["rendered"] = rendered.model_dump(mode="json")
            emails.append(email)
        return emails

    def _store(self, s: Session, input: ApprovalInput, emails: list[dict[str, Any]], task_id: str) -> None:
        repo.add_approval(
            s,
            id=input.approval_id,
            ledger_key=input.key,
            run_id=input.run.id,
            account_id=input.account.id if input.account else None,
            playbook_id=input.run.playbook,
            version=input.run.version,
            step=input.step,
            template=input.template,
            approver=input.approver,
            on_timeout=input.on_timeout,
            requested_at=input.now,
            expires_at=input.expires_at,
            emails=emails,
            request=input.model_dump(mode="json", exclude={"projections"}),
            task_id=task_id,
        )
