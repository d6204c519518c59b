"""An email step's `approval`: every recipient's email rendered and held until a person decides.

Before its recipients (`Part`) reach the send window, an email step with `approval` asks its
host to render each recipient's email and store them as one request (`request_approval`: an
activity, or in memory under `simulate`) that tells the approver. The parts then wait in the
``approval`` phase, as one `Hold` on the step's frame, for an `approval.decided` event naming
the request, or for the timeout (counted from the request). Approved (or timed out with
`on_timeout: send`), the parts go on through window, cap and send as any email does, each send
carrying the approval id and the approver's edit; rejected (or timed out with `skip`), the step
completes as skipped and nothing is sent.

A decision may also name the step instead of the request (an events file of `simulate`:
`{type: approval.decided, data: {step, decision}}`): the n-th such decision for a step decides
that step's n-th request, whether it comes while the request waits or before it is made.
"""

from __future__ import annotations

from datetime import timedelta

from touchpoint.dsl.runtime import ApprovalInput, ApprovalRecipient, ApprovalResult, EventIn, SendEmailInput
from touchpoint.dsl.schema import EmailStep, StepBase
from touchpoint.dsl.walk import all_steps, step_name
from touchpoint.engine.emailing import Emailing
from touchpoint.engine.people import stable_id, task_owner
from touchpoint.engine.program import CONFIGURATION_ERROR, EffectDone
from touchpoint.engine.state import Decisions, Frame, Hold, Part, PathPart, Thread, Wait

DECIDED = "approval.decided"


class Approving(Emailing):
    """The approval phase of the email step (the interpreter's `Steps` build on it)."""

    def _email_progress(self, thread: Thread, frame: Frame, step: EmailStep) -> None:
        hold = frame.approval
        if (hold is None and step.email.approval is None) or (hold is not None and hold.settled):
            super()._email_progress(thread, frame, step)
            return
        if hold is None:
            hold = self._hold_for_approval(thread, frame, step)
        if not hold.requested:
            if hold.effect is None:
                if self.state.status == "paused":
                    thread.wait = Wait(kind="email")  # asked again on resume
                    return
                hold.effect = self._new_effect("request_approval", self._approval_input(thread, frame, step, hold)).id
                self.state.asked_approval = True
            thread.wait = Wait(kind="approval", detail=f"approval by {hold.by}")
            return
        if hold.decision is None:
            until = hold.asked_at + timedelta(seconds=hold.timeout_seconds)
            thread.wait = Wait(kind="approval", until=until, detail=f"approval by {hold.by}")
            return
        self._settle(thread, frame, step, hold)

    def _hold_for_approval(self, thread: Thread, frame: Frame, step: EmailStep) -> Hold:
        """Hold every recipient for a new request of this step."""
        spec = step.email.approval
        assert spec is not None
        path = [*frame.path, frame.index]
        name = self._name(path, step)
        by, _ = task_owner(spec.by, self.account, self.workspace.crm.fallback_owner)
        book = self.state.decisions.setdefault(name, Decisions())
        book.made += 1
        hold = Hold(
            id=stable_id("apr", self._key(thread, path)), step=name, number=book.made, by=by, asked_at=self.now,
            timeout_seconds=spec.timeout.total_seconds(), on_timeout=spec.on_timeout,
        )
        for part in frame.parts or []:
            part.phase, part.held_since, part.held_reason = "approval", self.now, "approval"
        frame.approval = hold
        early = book.early.pop(hold.number, None)
        if early is not None:
            self._take(thread, hold, early)
        return hold

    def _approval_input(self, thread: Thread, frame: Frame, step: EmailStep, hold: Hold) -> ApprovalInput:
        spec = step.email.approval
        path = [*frame.path, frame.index]
        name = self._name(path, step)
        sends = [self._send_input(thread, step, path, name, part) for part in frame.parts or []]
        fields = {
            **dict(sends[0]),
            "key": self._key(thread, path),
            "approval_id": hold.id,
            "approver": hold.by,
            "approver_spec": spec.by if spec else hold.by,
            "fallback_owner": self.workspace.crm.fallback_owner,
            "expires_at": hold.asked_at + timedelta(seconds=hold.timeout_seconds),
            "on_timeout": hold.on_timeout,
            "recipients": [ApprovalRecipient(recipient=s.recipient, key=s.key, locales=s.locales) for s in sends],
        }
        return ApprovalInput(**fields)

    def _send_input(self, thread: Thread, step: EmailStep, path: list[PathPart], name: str, part: Part) -> SendEmailInput:
        sent = super()._send_input(thread, step, path, name, part)
        hold = thread.frames[-1].approval if thread.frames else None
        if hold is None or not hold.settled:
            return sent
        return sent.model_copy(update={"approval_id": hold.id, "edit_subject": hold.subject, "edit_html": hold.html})

    def _approval_result(self, thread: Thread, frame: Frame, done: EffectDone) -> None:
        """The request is stored and its approver told (or it failed)."""
        hold = frame.approval
        assert hold is not None
        path = [*frame.path, frame.index]
        step = self.program.step_at(path)
        assert isinstance(step, EmailStep)
        name = self._name(path, step)
        hold.effect = None
        if done.error is not None:
            if done.error_type == CONFIGURATION_ERROR:
                self.state.status, self.state.paused_reason = "paused", f"{name}: {done.error}"
                self._record(name, "paused", reason=done.error)
                thread.wait = Wait(kind="email")
                return
            frame.parts, frame.approval = None, None
            self._failed(thread, frame, step, name, done.error)
            return
        result = ApprovalResult.model_validate(done.result)
        hold.requested = True
        self._record(name, "approval", status="requested", by=hold.by, approval_id=hold.id, to=result.to, task_id=result.task_id)
        self._email_progress(thread, frame, step)

    def _approval_wake(self, thread: Thread) -> None:
        """The request's timeout passed, or a decision came: apply it."""
        thread.wait = None
        frame = thread.frames[-1]
        step = self.program.step_at([*frame.path, frame.index])
        assert isinstance(step, EmailStep)
        hold = frame.approval
        if hold is None:  # pragma: no cover - an approval wait always has its hold
            frame.phase = "after"
            return
        if hold.decision is None and hold.requested and hold.asked_at + timedelta(seconds=hold.timeout_seconds) <= self.now:
            hold.decision, hold.decided_by, hold.decided_at = "timed_out", hold.by, self.now
        self._email_progress(thread, frame, step)

    def _settle(self, thread: Thread, frame: Frame, step: EmailStep, hold: Hold) -> None:
        """Put the decision on the timeline; then send (approved, or `on_timeout: send`) or skip."""
        hold.settled = True
        name = self._name([*frame.path, frame.index], step)
        detail: dict[str, object] = {"status": hold.decision, "by": hold.decided_by, "approval_id": hold.id}
        if hold.reason:
            detail["reason"] = hold.reason
        if hold.subject is not None:
            detail["subject"] = hold.subject
        if hold.html is not None:
            detail["html"] = hold.html
        self._record(name, "approval", **detail)
        if hold.decision == "approved" or (hold.decision == "timed_out" and hold.on_timeout == "send"):
            for part in frame.parts or []:
                part.phase = "window"
            super()._email_progress(thread, frame, step)
            return
        frame.parts, frame.approval, thread.wait = None, None, None
        frame.phase = "after"

    # ------------------------------------------------------------------ decisions

    def _approval_event(self, event: EventIn) -> None:
        """An `approval.decided`: decide the request it names, or (naming a step) the step's n-th."""
        if event.type != DECIDED:
            return
        data = event.data
        approval_id = data.get("approval_id")
        if approval_id is not None:
            for thread in self.state.threads:
                hold = thread.frames[-1].approval if thread.frames else None
                if hold is not None and hold.id == str(approval_id):
                    self._take(thread, hold, event)
            return
        step = data.get("step")
        if not isinstance(step, str) or data.get("playbook") not in (None, self.playbook.playbook):
            return
        if step not in self._approval_steps():
            known = ", ".join(sorted(self._approval_steps())) or "none"
            self._warn(f"{DECIDED} names step {step}, which is not an email step with approval in {self.playbook.playbook} (those: {known}): ignored")
            return
        book = self.state.decisions.setdefault(step, Decisions())
        book.given += 1
        number = book.given
        if number > book.made:
            book.early[number] = event  # decides that request when the step makes it
            return
        for thread in self.state.threads:
            hold = thread.frames[-1].approval if thread.frames else None
            if hold is not None and hold.step == step and hold.number == number:
                self._take(thread, hold, event)
                return
        self._warn(f"{DECIDED} for step {step} came after its request #{number} was decided or timed out: ignored")

    def _approval_steps(self) -> set[str]:
        return {step_name(s, path) for path, s in all_steps(self.playbook) if _asks_approval(s)}

    def _take(self, thread: Thread, hold: Hold, event: EventIn) -> None:
        """Keep the decision on the request; the thread applies it when it next moves."""
        data = event.data
        decision = data.get("decision")
        if hold.decision is not None:
            self._warn(f"approval {hold.id} was already {hold.decision}: a second decision ({decision}) was ignored")
            return
        if decision not in ("approved", "rejected"):
            self._warn(f"{DECIDED} for approval {hold.id} has decision {decision!r}: expected approved or rejected")
            return
        hold.decision = "approved" if decision == "approved" else "rejected"
        hold.decided_by, hold.decided_at = str(data.get("by") or hold.by), self.now
        if decision == "approved":
            hold.subject = str(data["subject"]) if data.get("subject") else None
            hold.html = str(data["html"]) if data.get("html") else None
        else:
            hold.reason = str(data["reason"]) if data.get("reason") else None
        if hold.requested and thread.wait is not None and thread.wait.kind == "approval":
            thread.wait.ready = True


def _asks_approval(step: StepBase) -> bool:
    return isinstance(step, EmailStep) and step.email.approval is not None
