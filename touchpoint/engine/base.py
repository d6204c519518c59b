"""What every part of the interpreter shares: the run's context, its timeline, ending, effects.

`touchpoint.engine.machine` builds the interpreter from this base and the email mixin
(`touchpoint.engine.emailing`); see the machine's docstring for what the interpreter is.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from touchpoint.dsl import expressions as ex
from touchpoint.dsl.accounts import AccountDoc
from touchpoint.dsl.runtime import (
    EventIn,
    RunView,
    StepRecord,
    build_context,
    plain,
    run_values,
)
from touchpoint.dsl.schema import StepBase, step_kind
from touchpoint.dsl.timing import run_day
from touchpoint.dsl.yamlpos import format_path
from touchpoint.engine.program import Effect, Output, Program
from touchpoint.engine.state import RECENT_LIMIT, Frame, PathPart, RunState, Thread, Wait

_ACCOUNT_NAMES = frozenset({"account", "contacts"})
_memo: tuple[AccountDoc, dict[str, Any]] | None = None


def _account_memo(account: AccountDoc) -> dict[str, Any]:
    """The values of account-only expressions for this account document (the last one asked for)."""
    global _memo
    memo = _memo
    if memo is None or memo[0] is not account:
        memo = _memo = (account, {})
    return memo[1]


STEP_BUDGET = 10_000
"""Steps one input may run before the run fails: a playbook always waits somewhere; a loop that
never does is a bug in it, and must not hang its host."""


class Base:
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


    @property
    def tz(self) -> str:
        return (self.account.timezone if self.account else None) or self.workspace.timezone


    def _rounds(self, thread: Thread | None) -> list[int]:
        if thread is None:
            return []
        return [f.round for f in thread.frames if f.round is not None and f.phase == "inside"]


    def _view(self) -> RunView:
        return RunView(**self._run_fields())


    def _run_fields(self) -> dict[str, Any]:
        state = self.state
        main = next((t for t in state.threads if t.name == "main"), None)
        rounds = self._rounds(self.thread or main)
        return {
            "id": state.run_id,
            "playbook": state.playbook,
            "version": state.version,
            "started_at": state.started_at,
            "day": run_day(state.started_at, self.now),
            "round": rounds[-1] if rounds else 1,
            "step": state.step,
            "vars": state.vars,
            "scorecard": state.scorecard,
        }


    def _context(self, event: EventIn | None = None, source: str | None = None) -> dict[str, Any]:
        """What expressions see; for one expression ``source``, only the names it reads."""
        names = ex.root_names(source) if source is not None else None
        if names is None:
            return build_context(account=self.account, event=event or self.state.event, run=self._view(), now=self.now, tz=self.tz)
        context = build_context(account=self.account, event=event or self.state.event, run=None, now=self.now, tz=self.tz, names=names)
        if "run" in names:
            context["run"] = run_values(**self._run_fields())
        return context


    def _evaluate(self, source: str, event: EventIn | None = None) -> Any:
        """Evaluate an expression of the playbook for this run.

        One that reads nothing but the account is evaluated once per account document (they
        are frozen): `exit_when: account.properties.churned` is checked before every step.
        """
        names = ex.root_names(source)
        observe = self.program.observe
        if observe is None:
            if names is not None and names <= _ACCOUNT_NAMES and self.account is not None:
                memo = _account_memo(self.account)
                if source not in memo:
                    memo[source] = ex.evaluate(source, self._context(event, source))
                return memo[source]
            return ex.evaluate(source, self._context(event, source))
        context = self._context(event, source)
        try:
            value = ex.evaluate(source, context)
        except ex.ExpressionError as exc:
            observe(source, context, exc)
            raise
        observe(source, context, value)
        return value


    def _check(self, source: str | None, event: EventIn | None = None) -> bool:
        return True if source is None else bool(self._evaluate(source, event))


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
        self.state.recorded += 1
        record = StepRecord(at=self.now, day=run_day(self.state.started_at, self.now), step=step, action=action, detail=plain(detail), seq=self.state.recorded)
        self.out.records.append(record)
        if action == "skipped":
            return  # in the timeline the host keeps; the state's recent lines are steps that ran
        recent = self.state.recent
        recent.append(record)
        if len(recent) > RECENT_LIMIT:
            self.state.recent_dropped += len(recent) - RECENT_LIMIT
            del recent[:-RECENT_LIMIT]


    def _name(self, path: list[PathPart], step: StepBase) -> str:
        return step.id or format_path(tuple(path))


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


    def _set_wait(self, thread: Thread, kind: Any, until: datetime | None = None) -> None:
        thread.wait = Wait(kind=kind, until=until)


    def _failed(self, thread: Thread, frame: Frame, step: StepBase, name: str, error: str) -> None:
        self._record(name, step_kind(step) or "step", status="failed", error=error)
        if step.on_error == "stop":
            self._end("failed", f"step {name} failed: {error}")
        else:
            frame.phase = "after"
            thread.wait = None


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
            return {"value": plain(self._evaluate(str(value["expr"])))}
        return value

    def _completes(self, event: EventIn, task_id: str, step: str) -> bool:
        """A `task.completed` names the task by id or (CRM syncs, simulations) by step."""
        data = event.data
        if str(data.get("task_id", "")) == task_id:
            return True
        return data.get("task_id") is None and data.get("step") == step and data.get("playbook") in (None, self.playbook.playbook)
