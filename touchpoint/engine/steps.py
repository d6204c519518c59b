"""Each step kind, and how a waiting step wakes: the part of the interpreter that reads the playbook.

A step is entered (`when` checked, a pause held), begun (its action: a value set, a branch
pushed, a wait set, an effect asked for), and finished when its wait wakes, its effect answers
or the nested list it pushed has run (`_child_done`: a `repeat` then plans its next round).
"""

from __future__ import annotations

from datetime import datetime, timedelta

from touchpoint.dsl import expressions as ex
from touchpoint.dsl.runtime import (
    NoteInput,
    StartRequest,
    TaskInput,
    TaskResult,
    UpdateInput,
    WebhookInput,
    plain,
)
from touchpoint.dsl.schema import (
    DraftStep,
    EmailStep,
    ExitStep,
    IfStep,
    NoteStep,
    RepeatStep,
    SetStep,
    SplitStep,
    StartStep,
    StepBase,
    TaskStep,
    UpdateStep,
    WaitForStep,
    WaitStep,
    WaitUntilStep,
    WebhookStep,
    step_kind,
)
from touchpoint.dsl.timing import local_midnight
from touchpoint.engine.approving import Approving
from touchpoint.engine.drafting import Drafting
from touchpoint.engine.people import variant_of
from touchpoint.engine.program import CONFIGURATION_ERROR, EffectDone
from touchpoint.engine.state import Frame, PathPart, Thread, Wait


class Steps(Drafting, Approving):
    """The steps of the interpreter (on `Base`, `Emailing`, `Approving` and `Drafting`)."""

    def _enter(self, thread: Thread, frame: Frame, step: StepBase, path: list[PathPart]) -> None:
        self._check_end(None)
        if self.state.ended:
            return
        name = self._name(path, step)
        self.state.step = name
        if self.state.status == "paused":
            self._set_wait(thread, "paused")
            return
        try:
            if not self._check(step.when):
                # Kept in the run's history (analytics count it as skipped by `when`); `simulate`
                # prints only steps that ran.
                self._record(name, "skipped", status="skipped", because="when")
                frame.phase = "after"
                return
        except ex.ExpressionError as exc:
            self._record(name, "when", status="failed", error=str(exc))
            frame.phase = "after"
            return
        self._attempt(thread, frame, step, path)



    def _attempt(self, thread: Thread, frame: Frame, step: StepBase, path: list[PathPart]) -> None:
        name = self._name(path, step)
        try:
            self._begin(thread, frame, step, path, name)
        except ex.ExpressionError as exc:
            # A value that fails at run time (e.g. a division by zero): the step has failed.
            self._failed(thread, frame, step, name, str(exc))



    def _begin(self, thread: Thread, frame: Frame, step: StepBase, path: list[PathPart], name: str) -> None:
        if isinstance(step, SetStep):
            values = {key: plain(self._evaluate(source)) for key, source in step.set.items()}
            self.state.vars.update(values)
            self._record(name, "set", vars=values)
            frame.phase = "after"
        elif isinstance(step, IfStep):
            branch = "then" if self._check(step.if_) else "else"
            self._record(name, "if", branch=branch)
            self._push(thread, frame, [*path, branch])
        elif isinstance(step, SplitStep):
            subject = self.account.id if self.account else self.state.run_id
            variant = variant_of({k: v.weight for k, v in step.split.items()}, subject, self.playbook.playbook, name)
            self.state.vars[step.id or name] = variant
            self.state.variants[step.id or name] = variant
            self._record(name, "split", variant=variant)
            self._push(thread, frame, [*path, "split", variant, "steps"])
        elif isinstance(step, RepeatStep):
            frame.round, frame.round_start = 1, self.now
            self._record(name, "repeat", round=1)
            self._push(thread, frame, [*path, "repeat", "steps"])
        elif isinstance(step, StartStep):
            if self._check(step.start.when):
                self._record(name, "start", playbook=step.start.playbook)
                self._effect(thread, frame, "start_playbook", StartRequest(playbook=step.start.playbook, by=self.state.run_id), track=False)
            frame.phase = "after"
        elif isinstance(step, ExitStep):
            self._record(name, "exit", outcome=step.exit.outcome)
            self._end(step.exit.outcome, f"exit step {name}")
        elif isinstance(step, WaitStep):
            until = self.now + step.wait
            self._record(name, "wait", until=until)
            frame.phase = "wait"
            self._set_wait(thread, "time", until)
        elif isinstance(step, WaitUntilStep):
            self._wait_until(thread, frame, step, name)
        elif isinstance(step, WaitForStep):
            self._wait_for(thread, frame, step, name)
        elif isinstance(step, EmailStep):
            self._email(thread, frame, step, path, name)
        elif isinstance(step, TaskStep):
            task = step.task
            frame.due_at = self.now + task.due if task.due else None
            request = TaskInput(
                **self._effect_fields(thread, path, name),
                title=task.title,
                notes=task.notes,
                owner=task.owner,
                fallback_owner=self.workspace.crm.fallback_owner,
                due_at=frame.due_at,
                priority=task.priority,
            )
            self._effect(thread, frame, "create_task", request)
        elif isinstance(step, NoteStep):
            self._effect(thread, frame, "add_note", NoteInput(**self._effect_fields(thread, path, name), text=step.note.text))
        elif isinstance(step, UpdateStep):
            fields = {k: self._field_value(v) for k, v in step.update.fields.items()}
            self._effect(thread, frame, "update_fields", UpdateInput(**self._effect_fields(thread, path, name), fields=fields, crm_fields=self.workspace.crm.fields))
        elif isinstance(step, WebhookStep):
            hook = step.webhook
            call = WebhookInput(**self._effect_fields(thread, path, name), url=hook.url, method=hook.method, json_body=hook.json_, headers=hook.headers)
            self._effect(thread, frame, "call_webhook", call)
        elif isinstance(step, DraftStep):
            self._draft(thread, frame, step, path, name)
        else:  # pragma: no cover - the registry of step kinds is closed
            raise RuntimeError(f"no rule for step kind {type(step).__name__}")



    def _push(self, thread: Thread, frame: Frame, path: list[PathPart]) -> None:
        frame.phase = "inside"
        thread.frames.append(Frame(path=path))



    def _child_done(self, thread: Thread, frame: Frame) -> None:
        """The nested list a step pushed has run: finish the step, or (repeat) plan the next round."""
        step = self.program.step_at([*frame.path, frame.index])
        if isinstance(step, RepeatStep):
            spec = step.repeat
            assert frame.round is not None and frame.round_start is not None
            name = self._name([*frame.path, frame.index], step)
            try:
                finished = (spec.times is not None and frame.round >= spec.times) or (spec.until is not None and self._check(spec.until))
            except ex.ExpressionError as exc:
                frame.round = None
                self._failed(thread, frame, step, name, str(exc))
                return
            if finished:
                frame.round, frame.round_start, frame.phase = None, None, "after"
                return
            frame.phase = "between"
            self._set_wait(thread, "time", frame.round_start + spec.every)
            return
        frame.phase = "after"



    def _wake(self, thread: Thread) -> None:
        wait = thread.wait
        assert wait is not None
        if not thread.frames:  # the card thread between its moments
            thread.wait = None
            return
        frame = thread.frames[-1]
        path = [*frame.path, frame.index]
        step = self.program.step_at(path)
        name = self._name(path, step)
        if wait.kind == "email":
            wait.ready = False
            self._email_progress(thread, frame, step)  # type: ignore[arg-type]
            return
        if wait.kind == "approval":
            self._approval_wake(thread)
            return
        thread.wait = None
        if wait.kind == "paused":
            return
        if isinstance(step, RepeatStep) and frame.phase == "between":
            assert frame.round is not None
            frame.round += 1
            frame.round_start = self.now
            self._record(name, "repeat", round=frame.round)
            self._push(thread, frame, [*path, "repeat", "steps"])
        elif isinstance(step, WaitUntilStep) and wait.kind == "date":
            if wait.until is not None and wait.until <= self.now:
                frame.phase = "after"
            else:
                try:
                    self._wait_until(thread, frame, step, name)
                except ex.ExpressionError as exc:
                    self._failed(thread, frame, step, name, str(exc))
        elif isinstance(step, WaitForStep):
            if wait.matched is not None:
                self.state.event = wait.matched
                self._record(name, "wait_for", event=wait.matched.type, timeout=False)
                frame.phase = "after"
            else:
                self._record(name, "wait_for", timeout=True)
                self._push(thread, frame, [*path, "wait_for", "on_timeout"])
        elif isinstance(step, TaskStep):
            if wait.ready:
                frame.phase = "after"
            else:
                self._record(name, "task_overdue", task_id=frame.task_id)
                self._push(thread, frame, [*path, "task", "on_overdue"])
        else:
            frame.phase = "after"



    def _wait_until(self, thread: Thread, frame: Frame, step: WaitUntilStep, name: str) -> None:
        spec = step.wait_until
        frame.phase = "wait"
        if spec.day is not None:
            until = self.state.started_at + timedelta(days=spec.day)
            self._record(name, "wait_until", until=until)
            self._set_wait(thread, "time", until)
            return
        value = self._evaluate(str(spec.date))
        if value is None:
            self._record(name, "wait_until", status="skipped", reason=f"`{spec.date}` has no value")
            frame.phase = "after"
            return
        day = value.date() if isinstance(value, datetime) else value
        until = local_midnight(day, self.tz) + spec.offset
        if not frame.recorded:
            self._record(name, "wait_until", until=until)
            frame.recorded = True
        self._set_wait(thread, "date", until)



    def _wait_for(self, thread: Thread, frame: Frame, step: WaitForStep, name: str) -> None:
        spec = step.wait_for
        frame.phase = "wait"
        if spec.seen:
            for event in self.state.seen:
                if event.type in spec.event and self._safe(spec.when, event):
                    thread.wait = Wait(kind="event", matched=event, ready=True)
                    return
        thread.wait = Wait(kind="event", until=self.now + spec.timeout, detail=" or ".join(spec.event))



    def _effect_result(self, thread: Thread, frame: Frame, done: EffectDone) -> None:
        path = [*frame.path, frame.index]
        step = self.program.step_at(path)
        name = self._name(path, step)
        frame.effect = None
        thread.wait = None
        if done.error is not None and done.error_type == CONFIGURATION_ERROR:
            # Only a human can fix this: pause, say why, and try the step again on resume.
            self.state.status, self.state.paused_reason = "paused", f"{name}: {done.error}"
            self._record(name, "paused", reason=done.error)
            self._set_wait(thread, "paused")
            return
        if isinstance(step, DraftStep):
            self._draft_done(thread, frame, step, path, name, done)
            return
        if done.error is not None:
            self._failed(thread, frame, step, name, done.error)
            return
        if isinstance(step, TaskStep):
            result = TaskResult.model_validate(done.result)
            extra = {"owner_note": result.owner_note} if result.owner_note else {}
            self._record(name, "task", task_id=result.task_id, title=result.title, owner=result.owner, due=result.due_at, **extra)
            if not step.task.await_:
                frame.phase = "after"
                return
            frame.task_id, frame.phase = result.task_id, "wait"
            if any(e.type == "task.completed" and self._completes(e, result.task_id, name) for e in self.state.seen):
                frame.phase = "after"
                return
            self._set_wait(thread, "task", frame.due_at)
            return
        detail = dict((done.result or {}).get("detail", {})) if isinstance(done.result, dict) else dict(getattr(done.result, "detail", {}))
        self._record(name, step_kind(step) or "step", **detail)
        frame.phase = "after"



    def _card(self, thread: Thread) -> bool:
        """The card thread's next moment: a checkpoint's day, then `by_day`. False when judged."""
        card = self.playbook.scorecard
        scorecard = self.state.scorecard
        assert card is not None and scorecard is not None
        order = sorted(range(len(card.checkpoints)), key=lambda i: card.checkpoints[i].day)
        if thread.stage > len(order):
            self.state.judged = True
            return False
        moment = card.checkpoints[order[thread.stage]].day if thread.stage < len(order) else card.target.by_day
        until = self.state.started_at + timedelta(days=moment)
        if until > self.now:
            self._set_wait(thread, "time", until)
            return True
        stage = thread.stage
        thread.stage += 1
        if stage < len(order):
            index = order[stage]
            if scorecard["score"] < card.checkpoints[index].below:
                thread.frames.append(Frame(path=["scorecard", "checkpoints", index, "steps"]))
            return True
        scorecard["met"] = scorecard["score"] >= card.target.score
        if not scorecard["met"] and card.on_miss:
            thread.frames.append(Frame(path=["scorecard", "on_miss"]))
        return True




_WORKING = ("until", "round_start", "due_at", "effect", "task_id", "round", "parts", "approval")


def advance_frame(frame: Frame) -> None:
    """Move a frame to the next step of its list, forgetting the last step's working data."""
    frame.index += 1
    frame.phase = "enter"
    values = frame.__dict__
    for name in _WORKING:  # most are unset already: a model's attribute write is not free
        if values[name] is not None:
            setattr(frame, name, None)
    if frame.recorded:
        frame.recorded = False
