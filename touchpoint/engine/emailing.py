"""The `email` step: each recipient on its own way through send window, frequency cap and send.

A recipient (`Part`) is held until its window opens in its own time zone (holidays of its
country included), then reserves a slot under the workspace's frequency cap (an effect: the
store counts sends across runs), waits for that slot if it is later (and for the window again if
the slot falls outside it), holds while the run is paused, and is sent (an effect keyed on run,
step path, recipient and round). The step ends when every recipient is sent, skipped or failed.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

from touchpoint.dsl.runtime import (
    ReserveSlotInput,
    SendEmailInput,
    SendEmailResult,
)
from touchpoint.dsl.schema import (
    INTERNAL_RECIPIENTS,
    EmailStep,
)
from touchpoint.dsl.timing import is_holiday, next_opening, zone
from touchpoint.engine.base import Base
from touchpoint.engine.people import recipients
from touchpoint.engine.program import CONFIGURATION_ERROR, EffectDone
from touchpoint.engine.state import Frame, Part, PathPart, Thread, Wait


class Emailing(Base):
    """The email step of the interpreter."""

    def _email(self, thread: Thread, frame: Frame, step: EmailStep, path: list[PathPart], name: str) -> None:
        found = recipients(step, self.playbook, self.workspace, self.account, self._evaluate)
        if not found:
            self._record(name, "email", status="skipped", reason="no recipients")
            frame.phase = "after"
            return
        account = self.account
        parts = []
        for r in found:
            parts.append(
                Part(
                    recipient=r,
                    key=self._key(thread, path, r.email.lower()),
                    tz=r.timezone or (account.timezone if account else None) or self.workspace.timezone,
                    country=r.country or (account.country if account else None),
                    internal=r.role in INTERNAL_RECIPIENTS,
                )
            )
        frame.phase, frame.parts = "email", parts
        self._email_progress(thread, frame, step)


    def _opening(self, part: Part) -> datetime:
        window = self.playbook.send_window or self.workspace.send_window
        with self.program.unrestricted():
            return next_opening(self.now, part.tz, window, country=part.country, holidays=tuple(self.workspace.holidays))


    def _hold(self, part: Part, until: datetime, reason: str) -> None:
        part.until = until
        if part.held_since is None:
            part.held_since, part.held_reason = self.now, reason


    def _window_reason(self, part: Part) -> str:
        local = self.now.astimezone(zone(part.tz)).date()
        with self.program.unrestricted():
            holiday = is_holiday(local, part.country, tuple(self.workspace.holidays))
        return "holiday" if holiday else "send_window"


    def _email_progress(self, thread: Thread, frame: Frame, step: EmailStep) -> None:
        """Move each recipient on: window, frequency-cap slot, send; finish when all are done."""
        cap = self.workspace.frequency_cap
        path = [*frame.path, frame.index]
        name = self._name(path, step)
        for part in frame.parts or []:
            if part.effect is not None or part.phase == "done":
                continue
            if part.phase in ("window", "slot") and part.until is not None and part.until > self.now:
                continue
            if part.phase == "slot":
                part.phase = "window" if self._opening(part) > self.now else "send"
            if part.phase == "window":
                due = self._opening(part)
                if due > self.now:
                    self._hold(part, due, self._window_reason(part))
                    continue
                part.until = None
                if cap and not part.internal:
                    part.phase = "reserve"
                    request = ReserveSlotInput(key=part.key, contact_email=part.recipient.email.lower(), desired_at=self.now, emails=cap.emails, per=cap.per)
                    part.effect = self._new_effect("reserve_send_slot", request).id
                    continue
                part.phase = "send"
            if part.phase == "held" and self.state.status != "paused":
                part.phase = "send"
            if part.phase == "send":
                if self.state.status == "paused":
                    part.phase = "held"
                    continue
                part.effect = self._new_effect("send_email", self._send_input(thread, step, path, name, part)).id
        self._email_wait(thread, frame, step, name)


    def _send_input(self, thread: Thread, step: EmailStep, path: list[PathPart], name: str, part: Part) -> SendEmailInput:
        mail, account, workspace = step.email, self.account, self.workspace
        locale_override = str(self._evaluate(mail.locale)) if mail.locale else None
        cc = [account.csm.email] if mail.cc_csm and account and account.csm and account.csm.email else []
        locales = [x for x in (locale_override, part.recipient.locale, account.locale if account else None) if x]
        return SendEmailInput(
            **{**self._effect_fields(thread, path, name, part.recipient.email.lower()), "key": part.key},
            recipient=part.recipient,
            template=mail.template,
            locales=locales,
            cc=cc,
            sender_email=workspace.sender.email,
            sender_name=workspace.sender.name,
            categories=list(workspace.sendgrid.categories),
            unsubscribe_group=workspace.sendgrid.unsubscribe_group,
        )


    def _part_result(self, thread: Thread, frame: Frame, part: Part, done: EffectDone) -> None:
        path = [*frame.path, frame.index]
        step = self.program.step_at(path)
        assert isinstance(step, EmailStep)
        name = self._name(path, step)
        part.effect = None
        if part.phase == "reserve":
            if done.error is not None:  # the cap could not be checked: send, as without a cap
                part.phase = "send"
            else:
                slot = done.result if isinstance(done.result, datetime) else datetime.fromisoformat(str(done.result))
                if slot > self.now + timedelta(seconds=1):
                    part.phase = "slot"
                    self._hold(part, slot, "frequency_cap")
                else:
                    part.phase = "send"
            self._email_progress(thread, frame, step)
            return
        if done.error is not None and done.error_type == CONFIGURATION_ERROR:
            self.state.status, self.state.paused_reason = "paused", f"{name}: {done.error}"
            self._record(name, "paused", reason=done.error)
            part.phase = "held"
            self._email_wait(thread, frame, step, name)
            return
        if done.error is not None:
            result = SendEmailResult(status="failed", to=part.recipient.email, template=step.email.template, error=done.error)
        else:
            result = SendEmailResult.model_validate(done.result)
        part.result, part.phase, part.until = result, "done", None
        detail: dict[str, Any] = {"to": result.to, "template": step.email.template}
        if result.status in ("sent", "uncertain"):
            detail.update(subject=result.subject, locale=result.locale)
        if result.status != "sent":
            detail.update(status=result.status, **({"error": result.error} if result.error else {}))
        if part.held_since is not None:
            detail["held"] = {"since": part.held_since, "reason": part.held_reason}
        self._record(name, "email", **detail)
        self._email_wait(thread, frame, step, name)


    def _email_wait(self, thread: Thread, frame: Frame, step: EmailStep, name: str) -> None:
        parts = frame.parts or []
        if all(p.phase == "done" for p in parts):
            failures = [p for p in parts if p.result is not None and p.result.status == "failed"]
            frame.parts, thread.wait = None, None
            if failures and len(failures) == len(parts) and step.on_error == "stop":
                self._end("failed", f"step {name} failed: {failures[0].result.error if failures[0].result else 'email failed'}")
                return
            frame.phase = "after"
            return
        thread.wait = Wait(kind="email")

