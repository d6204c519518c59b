"""The interpreter: a run's state plus an input gives the new state, its effects and its timeline.

`start` makes a run's state; `step` feeds it one input — `Tick` (the clock moved), an event
(`EventIn`), `AccountChanged`, an `EffectDone`, `Pause`, `Resume`, `Cancel` or `Stop` — and returns
an `Output`: the effects the host must perform (answered later by an `EffectDone`), the timeline
lines, and whether the run ended. `next_wake` says when the host must `Tick` next. Everything is
a deterministic function of the state, the program, the account, the input and `now`; nothing
here imports Temporal, so the same code runs in a workflow, in `simulate` and in `forecast`.

A run has a `main` thread (its steps) and, with a scorecard, a `card` thread (checkpoints and the
`by_day` judgement, in parallel with whatever the steps wait for). An unexpected exception never
escapes: the run ends as ``failed`` with the reason (its account's other runs go on).
"""

from __future__ import annotations

import traceback
from datetime import datetime, timedelta
from typing import Any

from touchpoint.dsl import expressions as ex
from touchpoint.dsl.runtime import (
    Data,
    EventIn,
    NoteInput,
    ReserveSlotInput,
    RunView,
    SendEmailInput,
    SendEmailResult,
    StartRequest,
    StepRecord,
    TaskInput,
    TaskResult,
    UpdateInput,
    WebhookInput,
    build_context,
    initial_scorecard,
    plain,
)
from touchpoint.dsl.schema import (
    INTERNAL_RECIPIENTS,
    AccountDoc,
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
from touchpoint.dsl.timing import is_holiday, local_midnight, next_opening, run_day, zone
from touchpoint.dsl.yamlpos import format_path
from touchpoint.engine.people import recipients, variant_of
from touchpoint.engine.program import CONFIGURATION_ERROR, Effect, EffectDone, Output, Program
from touchpoint.engine.state import RECENT_LIMIT, SEEN_LIMIT, Frame, Part, PathPart, RunState, Thread, Wait

STEP_BUDGET = 10_000
"""Steps one input may run before the run fails: a playbook always waits somewhere; a loop that
never does is a bug in it, and must not hang its host."""
WARNED_LIMIT = 50


class Tick(Data):
    """The clock moved: wake what is due."""


class AccountChanged(Data):
    """The account document changed (fields, metrics, dates): re-check what reads it."""


class Pause(Data):
    reason: str | None = None


class Resume(Data):
    pass


class Cancel(Data):
    pass


class Stop(Data):
    """End the run from outside with ``outcome`` (a simulation's horizon: ``running``)."""

    outcome: str
    because: str


Input = Tick | EventIn | AccountChanged | EffectDone | Pause | Resume | Cancel | Stop


def start(
    program: Program,
    account: AccountDoc | None,
    *,
    run_id: str,
    event: EventIn,
    now: datetime,
    simulation: bool = False,
) -> tuple[RunState, Output]:
    """A new run at its first step (it runs until it first waits or asks for an effect)."""
    playbook = program.playbook
    state = RunState(
        run_id=run_id,
        playbook=playbook.playbook,
        version=program.version,
        account_id=account.id if account else None,
        started_at=now,
        event=event,
        scorecard=initial_scorecard(playbook),
        judged=playbook.scorecard is None,
        simulation=simulation,
        threads=[Thread(name="main", frames=[Frame(path=["steps"])])],
    )
    if playbook.scorecard is not None:
        state.threads.append(Thread(name="card"))
    machine = _Machine(program, state, account, now)
    machine.guarded(machine.begin)
    return state, machine.out


def step(program: Program, state: RunState, account: AccountDoc | None, now: datetime, message: Input) -> Output:
    """Feed ``message`` to the run; ``state`` is updated in place."""
    machine = _Machine(program, state, account, now)
    if state.ended:
        if isinstance(message, EffectDone):
            machine.guarded(lambda: machine.late_result(message))
        return machine.out
    machine.guarded(lambda: machine.handle(message))
    return machine.out


def next_wake(state: RunState) -> datetime | None:
    """When the host must `Tick` the run next (None: nothing is timed)."""
    if state.ended:
        return None
    times: list[datetime] = []
    for thread in state.threads:
        wait = thread.wait
        if wait is None:
            continue
        if wait.ready:
            return state.started_at  # due now
        if wait.kind == "email" and thread.frames:
            times.extend(p.until for p in thread.frames[-1].parts or [] if p.until is not None and p.phase in ("window", "slot"))
        elif wait.until is not None and wait.kind != "paused":
            times.append(wait.until)
    return min(times) if times else None


class _Machine:
    """One call of the interpreter: the program, the state, the account and the clock."""

    def __init__(self, program: Program, state: RunState, account: AccountDoc | None, now: datetime) -> None:
        self.program = program
        self.playbook = program.playbook
        self.workspace = program.workspace
        self.state = state
        self.account = account
        self.now = now
        self.out = Output()
        self.thread: Thread | None = None
        self.budget = STEP_BUDGET

    # ------------------------------------------------------------------ entry points

    def guarded(self, action: Any) -> None:
        status = self.state.status
        try:
            action()
        except Exception as exc:  # a bug, or a value no rule anticipated: this run fails alone
            where = traceback.extract_tb(exc.__traceback__)[-1]
            self._end("failed", f"internal error at {self.state.step or 'start'}: {type(exc).__name__}: {exc} ({where.name}:{where.lineno})")
        self.out.ended = self.state.ended
        self.out.status_changed = self.out.status_changed or self.state.status != status

    def begin(self) -> None:
        self._score(None)
        self._check_end(None)
        self._drive()

    def handle(self, message: Input) -> None:
        if isinstance(message, EventIn):
            self._on_event(message)
        elif isinstance(message, EffectDone):
            self._on_effect(message)
        elif isinstance(message, AccountChanged):
            self._on_account()
        elif isinstance(message, Pause):
            if self.state.status == "running":
                self.state.status, self.state.paused_reason = "paused", message.reason or "paused by a user"
        elif isinstance(message, Resume):
            self._resume()
        elif isinstance(message, Cancel):
            self._end("cancelled", "cancelled")
        elif isinstance(message, Stop):
            self._end(message.outcome, message.because)
        self._drive()

    def late_result(self, done: EffectDone) -> None:
        """An email that was in flight when the run ended still went out: say so."""
        if done.error is None and isinstance(done.result, (dict, SendEmailResult)):
            result = SendEmailResult.model_validate(done.result)
            if result.status == "sent":
                self._record(self.state.step or "-", "email", to=result.to, template=result.template, subject=result.subject, locale=result.locale, after_end=True)

    # ------------------------------------------------------------------ context

    @property
    def tz(self) -> str:
        return (self.account.timezone if self.account else None) or self.workspace.timezone

    def _rounds(self, thread: Thread | None) -> list[int]:
        if thread is None:
            return []
        return [f.round for f in thread.frames if f.round is not None and f.phase == "inside"]

    def _view(self) -> RunView:
        main = next((t for t in self.state.threads if t.name == "main"), None)
        rounds = self._rounds(self.thread or main)
        return RunView(
            id=self.state.run_id,
            playbook=self.state.playbook,
            version=self.state.version,
            started_at=self.state.started_at,
            day=run_day(self.state.started_at, self.now),
            round=rounds[-1] if rounds else 1,
            step=self.state.step,
            vars=self.state.vars,
            scorecard=self.state.scorecard,
        )

    def _context(self, event: EventIn | None = None) -> dict[str, Any]:
        return build_context(account=self.account, event=event or self.state.event, run=self._view(), now=self.now, tz=self.tz)

    def _check(self, source: str | None, event: EventIn | None = None) -> bool:
        return ex.is_true(source, self._context(event))

    def _safe(self, source: str | None, event: EventIn | None) -> bool:
        """A condition that cannot be evaluated counts as false and leaves a warning (section 2)."""
        try:
            return self._check(source, event)
        except ex.ExpressionError as exc:
            self._warn(f"`{source}` could not be evaluated and counts as false: {exc}")
            return False

    def _warn(self, text: str) -> None:
        self.out.warnings.append(text)
        if not any(r.action == "warning" and r.detail.get("text") == text for r in self.state.recent):
            self._record(self.state.step or "-", "warning", text=text)

    def _record(self, step: str, action: str, **detail: Any) -> None:
        record = StepRecord(at=self.now, day=run_day(self.state.started_at, self.now), step=step, action=action, detail=plain(detail))
        self.out.records.append(record)
        recent = self.state.recent
        recent.append(record)
        if len(recent) > RECENT_LIMIT:
            self.state.recent_dropped += len(recent) - RECENT_LIMIT
            del recent[:-RECENT_LIMIT]

    def _name(self, path: list[PathPart], step: StepBase) -> str:
        return step.id or format_path(tuple(path))

    # ------------------------------------------------------------------ ending and scoring

    def _end(self, outcome: str, because: str) -> None:
        state = self.state
        if state.ended:
            return
        state.status, state.outcome, state.because, state.ended_at = "ended", outcome, because, self.now
        state.threads = []
        state.step = None

    def _check_end(self, event: EventIn | None) -> None:
        if self.state.ended:
            return
        if self.playbook.exit_when and self._safe(self.playbook.exit_when, event):
            self._end("exited", f"exit_when `{self.playbook.exit_when}`")
        elif self.playbook.goal and self._safe(self.playbook.goal, event):
            self._end("converted", f"goal `{self.playbook.goal}`")

    def _score(self, event: EventIn | None) -> None:
        card, scorecard = self.playbook.scorecard, self.state.scorecard
        if card is None or scorecard is None:
            return
        changed = False
        for milestone in card.milestones:
            mark = scorecard["milestones"][milestone.id]
            if mark["done"]:
                continue
            if milestone.event:
                hit = event is not None and event.type == milestone.event and self._safe(milestone.when, event)
            else:
                hit = self._safe(milestone.when, event)
            if hit:
                mark["done"], mark["day"] = True, run_day(self.state.started_at, self.now)
                changed = True
                self._record("scorecard", "milestone", kind="milestone", milestone=milestone.id)
        if changed:
            total = sum(m.weight for m in card.milestones)
            done = sum(m.weight for m in card.milestones if scorecard["milestones"][m.id]["done"])
            scorecard["score"] = round(done / total * 100) if total else 0

    # ------------------------------------------------------------------ inputs

    def _on_event(self, event: EventIn) -> None:
        state = self.state
        state.seen.append(event)
        if len(state.seen) > SEEN_LIMIT:
            state.seen_dropped += len(state.seen) - SEEN_LIMIT
            del state.seen[:-SEEN_LIMIT]
        for thread in state.threads:
            wait, frame = thread.wait, thread.frames[-1] if thread.frames else None
            if wait is None or frame is None or wait.ready:
                continue
            step = self.program.step_at([*frame.path, frame.index])
            if wait.kind == "task" and event.type == "task.completed" and frame.task_id:
                if self._completes(event, frame.task_id, self._name([*frame.path, frame.index], step)):
                    wait.ready = True
            elif wait.kind == "event" and isinstance(step, WaitForStep):
                spec = step.wait_for
                if event.type in spec.event and self._safe(spec.when, event):
                    wait.matched, wait.ready = event, True
        self._score(event)
        self._check_end(event)

    def _on_account(self) -> None:
        for thread in self.state.threads:
            if thread.wait is not None and thread.wait.kind == "date":
                thread.wait.ready = True  # re-evaluate the date: a moved renewal moves the wait
        self._score(None)
        self._check_end(None)

    def _resume(self) -> None:
        state = self.state
        if state.status != "paused":
            return
        state.status, state.paused_reason = "running", None
        for thread in state.threads:
            if thread.wait is None:
                continue
            if thread.wait.kind == "paused":
                thread.wait = None
            elif thread.wait.kind == "email":
                thread.wait.ready = True

    def _completes(self, event: EventIn, task_id: str, step: str) -> bool:
        """A `task.completed` names the task by id or (CRM syncs, simulations) by step."""
        data = event.data
        if str(data.get("task_id", "")) == task_id:
            return True
        return data.get("task_id") is None and data.get("step") == step and data.get("playbook") in (None, self.playbook.playbook)

    # ------------------------------------------------------------------ the scheduler

    def _drive(self) -> None:
        """Run every thread that can move until each waits; end the run when all is done."""
        state = self.state
        moved = True
        while moved and not state.ended:
            moved = False
            for thread in list(state.threads):
                if state.ended:
                    return
                if thread.wait is not None:
                    if not (thread.wait.ready or self._due(thread)):
                        continue
                    self.thread = thread
                    self._wake(thread)
                if thread.wait is None:
                    self.thread = thread
                    self._run(thread)
                moved = True
            self._finish_if_done()

    def _due(self, thread: Thread) -> bool:
        wait = thread.wait
        assert wait is not None
        if wait.kind == "email":
            parts = thread.frames[-1].parts or [] if thread.frames else []
            return any(p.until is not None and p.until <= self.now and p.phase in ("window", "slot") for p in parts)
        return wait.kind != "paused" and wait.until is not None and wait.until <= self.now

    def _finish_if_done(self) -> None:
        state = self.state
        if state.ended:
            return
        main = next((t for t in state.threads if t.name == "main"), None)
        if main is not None and not main.frames and main.wait is None:
            state.threads.remove(main)
            main = None
        card = next((t for t in state.threads if t.name == "card"), None)
        if card is not None and state.judged and not card.frames:
            state.threads.remove(card)
        if main is None and state.judged:
            self._end("completed", "the last step ran")

    def _run(self, thread: Thread) -> None:
        """Move ``thread`` forward until it waits, ends, or has no step left."""
        while thread.wait is None and not self.state.ended:
            self.budget -= 1
            if self.budget < 0:
                raise RuntimeError(f"more than {STEP_BUDGET} steps ran without waiting: a loop that never waits")
            if not thread.frames:
                if thread.name == "card" and self._card(thread):
                    continue
                return
            frame = thread.frames[-1]
            steps = self.program.steps_at(frame.path)
            if frame.index >= len(steps):
                thread.frames.pop()
                if thread.frames:
                    self._child_done(thread, thread.frames[-1])
                continue
            if frame.phase == "after":
                _next(frame)
                continue
            path = [*frame.path, frame.index]
            step = steps[frame.index]
            if frame.phase == "enter":
                self._enter(thread, frame, step, path)
            elif frame.phase == "effect" and frame.effect is None:  # retried after a pause
                self._attempt(thread, frame, step, path)
            else:
                raise RuntimeError(f"thread {thread.name} at {format_path(tuple(path))} in phase {frame.phase} without a wait")

    def _set_wait(self, thread: Thread, kind: Any, until: datetime | None = None) -> None:
        thread.wait = Wait(kind=kind, until=until)

    # ------------------------------------------------------------------ stepping

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

    def _failed(self, thread: Thread, frame: Frame, step: StepBase, name: str, error: str) -> None:
        self._record(name, step_kind(step) or "step", status="failed", error=error)
        if step.on_error == "stop":
            self._end("failed", f"step {name} failed: {error}")
        else:
            frame.phase = "after"
            thread.wait = None

    def _begin(self, thread: Thread, frame: Frame, step: StepBase, path: list[PathPart], name: str) -> None:
        if isinstance(step, SetStep):
            values = {key: plain(ex.evaluate(source, self._context())) for key, source in step.set.items()}
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

    # ------------------------------------------------------------------ waking

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

    # ------------------------------------------------------------------ waits

    def _wait_until(self, thread: Thread, frame: Frame, step: WaitUntilStep, name: str) -> None:
        spec = step.wait_until
        frame.phase = "wait"
        if spec.day is not None:
            until = self.state.started_at + timedelta(days=spec.day)
            self._record(name, "wait_until", until=until)
            self._set_wait(thread, "time", until)
            return
        value = ex.evaluate(str(spec.date), self._context())
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
        self._set_wait(thread, "event", self.now + spec.timeout)

    # ------------------------------------------------------------------ effects

    def _effect_fields(self, thread: Thread, path: list[PathPart], name: str, recipient: str = "-") -> dict[str, Any]:
        return {
            "key": self._key(thread, path, recipient),
            "run": self._view(),
            "step": name,
            "path": format_path(tuple(path)),
            "account": self.account,
            "event": self.state.event,
            "now": self.now,
            "simulation": self.state.simulation,
        }

    def _key(self, thread: Thread, path: list[PathPart], recipient: str = "-") -> str:
        """The ledger key of a side effect: (run id, step path, recipient, rounds)."""
        rounds = ".".join(str(r) for r in self._rounds(thread)) or "1"
        return f"{self.state.run_id}|{format_path(tuple(path))}|{recipient}|{rounds}"

    def _new_effect(self, kind: Any, input: Any) -> Effect:
        self.state.seq += 1
        effect = Effect(id=f"{self.state.run_id}#{self.state.seq}", run_id=self.state.run_id, kind=kind, input=input)
        self.out.effects.append(effect)
        return effect

    def _effect(self, thread: Thread, frame: Frame, kind: Any, input: Any, *, track: bool = True) -> None:
        effect = self._new_effect(kind, input)
        if track:
            frame.phase, frame.effect = "effect", effect.id
            self._set_wait(thread, "effect")

    def _field_value(self, value: Any) -> Any:
        if isinstance(value, dict) and set(value) == {"expr"}:
            return {"value": plain(ex.evaluate(str(value["expr"]), self._context()))}
        return value

    def _on_effect(self, done: EffectDone) -> None:
        for thread in self.state.threads:
            frame = thread.frames[-1] if thread.frames else None
            if frame is None:
                continue
            if frame.effect == done.id:
                self.thread = thread
                self._effect_result(thread, frame, done)
                return
            for part in frame.parts or []:
                if part.effect == done.id:
                    self.thread = thread
                    self._part_result(thread, frame, part, done)
                    return

    def _effect_result(self, thread: Thread, frame: Frame, done: EffectDone) -> None:
        path = [*frame.path, frame.index]
        step = self.program.step_at(path)
        name = self._name(path, step)
        frame.effect = None
        thread.wait = None
        if done.error is not None:
            if done.error_type == CONFIGURATION_ERROR:
                # Only a human can fix this: pause, say why, and try the step again on resume.
                self.state.status, self.state.paused_reason = "paused", f"{name}: {done.error}"
                self._record(name, "paused", reason=done.error)
                self._set_wait(thread, "paused")
                return
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

    # ------------------------------------------------------------------ email

    def _email(self, thread: Thread, frame: Frame, step: EmailStep, path: list[PathPart], name: str) -> None:
        found = recipients(step, self.playbook, self.workspace, self.account, lambda source: ex.evaluate(source, self._context()))
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
        locale_override = str(ex.evaluate(mail.locale, self._context())) if mail.locale else None
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

    # ------------------------------------------------------------------ the scorecard's clock

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


def _next(frame: Frame) -> None:
    """Move a frame to the next step of its list, forgetting the last step's working data."""
    frame.index += 1
    frame.phase = "enter"
    frame.until = frame.round_start = frame.due_at = None
    frame.effect = frame.task_id = None
    frame.round = None
    frame.recorded = False
    frame.parts = None
