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
from datetime import datetime
from typing import Any, Literal

from touchpoint.dsl.accounts import AccountDoc
from touchpoint.dsl.runtime import (
    Data,
    EventIn,
    SendEmailResult,
    initial_scorecard,
)
from touchpoint.dsl.schema import WaitForStep
from touchpoint.dsl.yamlpos import format_path
from touchpoint.engine.base import STEP_BUDGET
from touchpoint.engine.people import held_out
from touchpoint.engine.program import EffectDone, Output, Program
from touchpoint.engine.state import SEEN_LIMIT, Frame, RunState, Thread, Wait
from touchpoint.engine.steps import Steps, advance_frame

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
    holdout: Literal["in", "out"] | None = None,
) -> tuple[RunState, Output]:
    """A new run at its first step (it runs until it first waits or asks for an effect).

    With a playbook `holdout`, the run is held out when the stable per-account choice says so
    (``holdout`` forces it: ``in`` holds the run out, ``out`` treats it); a held-out run takes
    no steps and waits out the `for` window, keeping its milestones and its goal and exit checks.
    """
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
    if playbook.holdout is not None:
        state.enrolled_until = now + playbook.holdout.for_
        chosen = held_out(playbook.holdout.percent, account.id if account else run_id, playbook.playbook)
        state.held_out = holdout == "in" if holdout is not None else chosen
        if state.held_out:
            # No steps, no checkpoints, no `by_day`: only the window, the milestones and the end checks.
            state.threads = [Thread(name="main", wait=Wait(kind="time", until=state.enrolled_until, detail="held out"))]
            state.judged = True
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


def effect_in_flight(state: RunState) -> bool:
    """Whether the run waits for an answer from its host (an activity it asked for)."""
    for thread in state.threads:
        for frame in thread.frames:
            if frame.effect is not None or any(part.effect is not None for part in frame.parts or []):
                return True
            if frame.approval is not None and frame.approval.effect is not None:
                return True
    return False


class _Machine(Steps):
    """The interpreter's entry points and scheduler (the steps are in `Steps`)."""

    def guarded(self, action: Any) -> None:
        state = self.state
        status, step, recorded = state.status, state.step, state.recorded
        try:
            action()
        except Exception as exc:  # a bug, or a value no rule anticipated: this run fails alone
            where = traceback.extract_tb(exc.__traceback__)[-1]
            self._end("failed", f"internal error at {state.step or 'start'}: {type(exc).__name__}: {exc} ({where.name}:{where.lineno})")
        self.out.ended = state.ended
        if state.status != status or state.step != step or state.recorded != recorded:
            state.position += 1
            self.out.moved = True

    def begin(self) -> None:
        if self.state.held_out:
            self.state.step = "holdout"
            self._record("holdout", "held_out", until=self.state.enrolled_until)
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



    def _on_event(self, event: EventIn) -> None:
        state = self.state
        state.seen.append(event)
        if len(state.seen) > SEEN_LIMIT:
            state.seen_dropped += len(state.seen) - SEEN_LIMIT
            del state.seen[:-SEEN_LIMIT]
        self._approval_event(event)
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
            until = state.enrolled_until
            if until is not None and until > self.now:
                # A treated run stays enrolled, taking no more steps, until the holdout window ends.
                state.threads.insert(0, Thread(name="main", wait=Wait(kind="time", until=until, detail="enrolled until the holdout window ends")))
                state.step = "holdout"
                self._record("holdout", "enrolled", until=until)
                return
            if state.held_out:
                self._end("completed", "held out for the holdout window")
            else:
                self._end("completed", "the holdout window ended" if state.step == "holdout" else "the last step ran")



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
                advance_frame(frame)
                continue
            path = [*frame.path, frame.index]
            step = steps[frame.index]
            if frame.phase == "enter":
                self._enter(thread, frame, step, path)
            elif frame.phase == "effect" and frame.effect is None:  # retried after a pause
                self._attempt(thread, frame, step, path)
            else:
                raise RuntimeError(f"thread {thread.name} at {format_path(tuple(path))} in phase {frame.phase} without a wait")



    def _on_effect(self, done: EffectDone) -> None:
        for thread in self.state.threads:
            frame = thread.frames[-1] if thread.frames else None
            if frame is None:
                continue
            if frame.effect == done.id:
                self.thread = thread
                self._effect_result(thread, frame, done)
                return
            if frame.approval is not None and frame.approval.effect == done.id:
                self.thread = thread
                self._approval_result(thread, frame, done)
                return
            for part in frame.parts or []:
                if part.effect == done.id:
                    self.thread = thread
                    self._part_result(thread, frame, part, done)
                    return


