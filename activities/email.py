"""The `email` step's side effects: frequency-cap slots and exactly-one sends.

Ledger states for a send key: none -> ``reserved`` (provider call in flight) -> ``done``. A retry
that finds ``done`` returns the recorded result. A retry that finds ``reserved`` means a worker
died between the provider call and the ledger write: the outbox and SMTP backends are idempotent
by message id and simply send again; SendGrid has no idempotency key, so the message is recorded
as ``uncertain`` and not sent again (at most once: a duplicate in a customer's inbox is worse
than a message an operator can check in SendGrid's activity feed).
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import os
import shutil
import tempfile
from datetime import datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

from sqlalchemy.orm import Session, sessionmaker
from temporalio import activity
from temporalio.exceptions import ApplicationError

from activities.deps import Deps
from activities.render import context_of
from activities.store import project_runs
from touchpoint.dsl.runtime import Recipient, ReserveSlotInput, SendEmailInput, SendEmailResult
from touchpoint.observability.metrics import email_outcome
from touchpoint.store import repo, write_tx
from touchpoint.store.rollups import RunOf
from touchpoint.unsubscribe import unsubscribe_url
from workflows import names

if TYPE_CHECKING:
    from touchpoint.email.render import RenderedEmail

SEND_TIMEOUT = 20.0
log = logging.getLogger(__name__)


def message_id_for(key: str) -> str:
    """Our message id, derived from the ledger key so every retry reuses it."""
    return "m" + hashlib.sha256(key.encode()).hexdigest()[:31]


def materialize_templates(deps: Deps, playbook: str, version: str) -> Path:
    """The templates of a deployed playbook version, as files in the worker's cache.

    The store holds every version's templates, so a run keeps rendering the templates it started
    with even after the folder changes.
    """
    return materialize(deps.sessions, deps.template_cache, playbook, version)


def materialize(sessions: sessionmaker[Session], cache: Path, playbook: str, version: str) -> Path:
    """`materialize_templates` for any process with a store and a cache folder (the API's too)."""
    target = cache / playbook / version
    if target.is_dir():
        return target
    with sessions() as s:
        deployment = repo.get_deployment(s, "playbook", playbook, version)
        templates = dict((deployment.content or {}).get("templates", {})) if deployment else None
    if templates is None:
        raise ApplicationError(
            f"playbook {playbook} version {version} is not deployed in this store: run `touchpoint deploy`",
            type=names.CONFIGURATION_ERROR,
            non_retryable=True,
        )
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(dir=target.parent, prefix=f".{version}-"))
    for name, source in templates.items():
        (staging / name).parent.mkdir(parents=True, exist_ok=True)
        (staging / name).write_text(source, encoding="utf-8")
    try:
        os.rename(staging, target)
    except OSError:  # another activity won the race: same content
        shutil.rmtree(staging, ignore_errors=True)
    return target


class EmailActivities:
    """Renders in the activity (never in workflow code) and sends through the configured backend."""

    def __init__(self, deps: Deps) -> None:
        self.deps = deps

    @activity.defn(name=names.RESERVE_SEND_SLOT)
    async def reserve_send_slot(self, input: ReserveSlotInput) -> datetime:
        """The earliest moment the contact may get another email under the cap (idempotent)."""

        def work() -> datetime:
            with write_tx(self.deps.sessions) as s:
                slot = repo.reserve_send_slot(s, input.contact_email, input.key, input.desired_at, input.emails, input.per)
                if slot < input.desired_at - timedelta(seconds=1):
                    # An earlier reservation of this send that could not be used (it fell outside
                    # the send window): move it, so the cap counts the time the email really goes.
                    repo.release_send_slot(s, input.key)
                    slot = repo.reserve_send_slot(s, input.contact_email, input.key, input.desired_at, input.emails, input.per)
                return slot

        return await asyncio.to_thread(work)

    @activity.defn(name=names.SEND_EMAIL)
    async def send_email(self, input: SendEmailInput) -> SendEmailResult:
        """Render and send one email to one recipient, once (the run projections it carries are
        written in the transaction that reserves the send)."""
        return await self.deliver(input, carried=True)

    async def deliver(self, input: SendEmailInput, context: dict[str, Any] | None = None, *, carried: bool = False) -> SendEmailResult:
        """Render and send once; ``context`` adds names that must not travel in the input
        (a schedule run's `accounts` and `changes` come from the store, not from history);
        ``carried`` writes the input's run projections (`write_carried`) in the first transaction."""
        from touchpoint.email.errors import (
            EmailConfigurationError,
            RecipientRejected,
            TemplateError,
            TransientEmailError,
        )
        from touchpoint.email.message import EmailMessage
        from touchpoint.email.render import render_email

        to = input.recipient.email
        message_id = message_id_for(input.key)
        backend = self.deps.email_backend
        backend_name = getattr(backend, "name", "outbox")
        # An account workflow's run has its row in the store: the message counts under the run
        # the input names, without reading the row again.
        run = RunOf(input.run.playbook, input.run.version, input.run.started_at) if carried and not input.simulation else None

        def check(s: Session) -> SendEmailResult | None:
            if carried and input.projections and not input.simulation:
                project_runs(s, input.projections)
            found = repo.ledger_claim(s, input.key, "email")  # None: reserved by this attempt
            if found is not None and found.status in ("done", "skipped"):
                return SendEmailResult.model_validate(found.result)
            if found is not None and found.status == "reserved" and backend_name == "sendgrid":
                result = SendEmailResult(status="uncertain", to=to, message_id=message_id, template=input.template, error="the worker stopped between the provider call and the ledger write; not sent again")
                self._record(s, input, message_id, result, backend_name, run=run)
                repo.ledger_finish(s, input.key, "done", result.model_dump(mode="json"))
                return result
            reason = repo.is_suppressed(s, to)
            if reason:
                result = SendEmailResult(status="suppressed", to=to, template=input.template, error=f"{to} is on the suppression list ({reason})")
                self._record(s, input, message_id, result, backend_name, run=run)
                repo.ledger_finish(s, input.key, "skipped", result.model_dump(mode="json"))
                return result
            if found is not None and found.status == "failed":
                repo.ledger_finish(s, input.key, "reserved")  # a known-unsent earlier attempt: try again
            return None

        earlier = await self.deps.db(check)
        if earlier is not None:
            return earlier

        context = {**context_of(input, contact=_contact(input.recipient), **input.extra_context), **(context or {})}
        link = unsubscribe_url(self.deps.settings.public_url, self.deps.settings.secret_key.get_secret_value(), to)

        def prepare() -> tuple[Path, RenderedEmail | None]:
            """The version's templates on disk, and the email rendered (one thread hop for both)."""
            folder = materialize_templates(self.deps, input.run.playbook, input.run.version)
            if input.approval_id:
                return folder, None  # rendered below: the approver's edit, or what the request rendered
            return folder, render_email(folder, input.template, context, locales=input.locales, unsubscribe_url=link)

        try:
            templates, plain = await asyncio.to_thread(prepare)
            approved = await self._approved(input, templates, context, link) if input.approval_id else None
            if approved is not None:
                rendered = approved
            elif plain is not None:
                rendered = plain
            else:
                rendered = await asyncio.to_thread(render_email, templates, input.template, context, locales=input.locales, unsubscribe_url=link)
        except TemplateError as exc:
            result = SendEmailResult(status="failed", to=to, template=input.template, error=str(exc))
            await self.deps.db(lambda s: self._finish(s, input, message_id, result, backend_name, None, run=run))
            raise ApplicationError(str(exc), type="Rejected", non_retryable=True) from None
        message = EmailMessage(
            message_id=message_id,
            from_email=input.sender_email,
            from_name=input.sender_name or "",
            to_email=to,
            to_name=input.recipient.name or "",
            subject=rendered.subject,
            html=rendered.html,
            text=rendered.text,
            categories=[*input.categories, input.run.playbook][:10],
            custom_args={
                "touchpoint_account": input.account.id if input.account else "",
                "touchpoint_playbook": input.run.playbook,
                "touchpoint_run": input.run.id,
                "touchpoint_step": input.step,
                "touchpoint_message": message_id,
            },
            unsubscribe_group_id=input.unsubscribe_group,
            headers={"List-Unsubscribe": f"<{link}>", "List-Unsubscribe-Post": "List-Unsubscribe=One-Click"},
        )
        locale = rendered.locale_used.html if hasattr(rendered.locale_used, "html") else None
        try:
            sent = await asyncio.wait_for(asyncio.to_thread(backend.send, message), timeout=SEND_TIMEOUT + 5)
        except TransientEmailError as exc:
            error = str(exc)
            if not exc.maybe_delivered:
                # Known not sent (refused, 429, 5xx): the retry may send. Otherwise the ledger
                # stays `reserved` and the retry records the message as uncertain instead.
                await self.deps.db(lambda s: repo.ledger_finish(s, input.key, "failed", {"error": error}))
            delay = timedelta(seconds=exc.retry_after) if exc.retry_after else None
            raise ApplicationError(str(exc), type="EmailTransient", next_retry_delay=delay) from None
        except TimeoutError:
            raise ApplicationError(f"sending to {to} timed out", type="EmailTransient") from None
        except EmailConfigurationError as exc:
            error = str(exc)
            await self.deps.db(lambda s: repo.ledger_finish(s, input.key, "failed", {"error": error}))
            raise ApplicationError(str(exc), type=names.CONFIGURATION_ERROR, non_retryable=True) from None
        except RecipientRejected as exc:
            result = SendEmailResult(status="failed", to=to, template=input.template, subject=rendered.subject, error=str(exc))
            await self.deps.db(lambda s: self._finish(s, input, message_id, result, backend_name, rendered, run=run))
            return result
        result = SendEmailResult(status="sent", to=to, message_id=message_id, subject=rendered.subject, template=input.template, locale=locale)
        provider_id = sent.provider_message_id
        await self.deps.db(lambda s: self._finish(s, input, message_id, result, backend_name, rendered, provider_id, run=run))
        return result

    async def _approved(self, input: SendEmailInput, templates: Path, context: dict[str, Any], link: str) -> RenderedEmail | None:
        """What an approved email sends: the approver's edit rendered for this recipient, else what
        the request rendered (None when it could not: the template renders again)."""
        from touchpoint.email.render import RenderedEmail, render_edited

        if input.edit_subject is not None or input.edit_html is not None:
            return await asyncio.to_thread(
                render_edited, templates, input.template, context, locales=input.locales, unsubscribe_url=link,
                subject=input.edit_subject, html=input.edit_html,
            )
        approval_id, to = str(input.approval_id), input.recipient.email.lower()

        def held(s: Session) -> dict[str, Any] | None:
            found = repo.get_approval(s, approval_id)
            return next((e for e in (found.emails if found else []) if str(e.get("to", "")).lower() == to), None)

        email = await self.deps.read(held)
        return RenderedEmail.model_validate(email["rendered"]) if email and email.get("rendered") else None

    def _finish(
        self, s: Session, input: SendEmailInput, message_id: str, result: SendEmailResult, backend: str, rendered: Any, provider_id: str | None = None,
        *, run: RunOf | None = None,
    ) -> None:
        self._record(s, input, message_id, result, backend, rendered, provider_id, run=run)
        repo.ledger_finish(s, input.key, "done", result.model_dump(mode="json"))

    def _record(
        self, s: Session, input: SendEmailInput, message_id: str, result: SendEmailResult, backend: str, rendered: Any = None, provider_id: str | None = None,
        *, run: RunOf | None = None,
    ) -> None:
        repo.add_message(
            s,
            run=run,
            id=message_id,
            ledger_key=input.key,
            run_id=input.run.id,
            account_id=input.account.id if input.account else None,
            playbook_id=input.run.playbook,
            step=input.step,
            template=input.template,
            to_email=input.recipient.email,
            subject=(rendered.subject if rendered else result.subject) or "",
            html=rendered.html if rendered else "",
            text=rendered.text if rendered else "",
            locale=result.locale,
            backend=backend,
            provider_message_id=provider_id,
            status=result.status,
            error=result.error,
            sent_at=input.now,
        )
        email_outcome(input.run.playbook, input.step, result.status, session=s)
        # The activity's log context adds account, playbook, run and step; never the address or the body.
        log.info("email %s (message %s, template %s, via %s)", result.status, message_id, input.template, backend)
        if input.writes_timeline:
            detail = {"to": result.to, "template": input.template, "status": result.status}
            repo.add_run_step(s, input.run.id, input.now, input.run.day, input.step, "email", detail)


def _contact(r: Recipient) -> dict[str, Any]:
    return r.model_dump()
