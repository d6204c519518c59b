"""A host without a server: runs one playbook for one account on a simulated clock.

The clock jumps from one moment to the next (the run's next wake, the next scripted event), and
effects are performed in memory (`LocalEffects`) at the moment they are asked for, so a 90-day
onboarding takes milliseconds and an endless `repeat` simulated for years needs no more memory
than one round: the timeline streams to ``sink`` as it happens. The interpreter is the same one
the workflows host (`touchpoint.engine.machine`), so both hosts print the same timeline.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from touchpoint.dsl.runtime import EventIn, StepRecord
from touchpoint.dsl.schema import AccountDoc
from touchpoint.dsl.timing import run_day
from touchpoint.engine import machine
from touchpoint.engine.accounts import apply_event, changes, patched
from touchpoint.engine.effects import LocalEffects
from touchpoint.engine.program import Output, Program
from touchpoint.engine.state import RunState


@dataclass
class Scripted:
    """An events-file entry: an event, or (``account``) fields merged into the account."""

    after: timedelta
    type: str | None = None
    data: dict[str, Any] = field(default_factory=dict)
    account: dict[str, Any] | None = None


@dataclass
class LocalResult:
    """How the run stands when the host stopped: ended, or still running at the horizon."""

    state: RunState
    account: AccountDoc
    outcome: str
    because: str
    at: datetime
    day: int


def run_local(
    program: Program,
    account: AccountDoc,
    *,
    templates: Path,
    start: datetime,
    horizon: timedelta,
    trigger: EventIn,
    events: Sequence[Scripted] = (),
    run_id: str = "sim",
    sink: Callable[[StepRecord], None] | None = None,
    warn: Callable[[str], None] | None = None,
    reload: Callable[[RunState], RunState] | None = None,
    effects: LocalEffects | None = None,
) -> LocalResult:
    """Run until the run ends or ``horizon`` has passed (then the outcome is ``running``).

    ``reload`` replaces the state between any two inputs (tests pass a JSON round trip: a run
    restored from its serialized state must go on exactly as if it had never stopped).
    ``effects`` performs the effects (default: `LocalEffects` on ``templates``, drafts by `none`).
    """
    host = _LocalHost(program, account, templates, sink, warn)
    if effects is not None:
        host.effects = effects
    host.reload = reload
    return host.run(start=start, horizon=horizon, trigger=trigger, events=events, run_id=run_id)


class _LocalHost:
    def __init__(self, program: Program, account: AccountDoc, templates: Path, sink: Callable[[StepRecord], None] | None, warn: Callable[[str], None] | None) -> None:
        self.program = program
        self.account = account
        self.effects = LocalEffects(templates)
        self.sink = sink
        self.warn = warn
        self.now = datetime.min
        self.state: RunState | None = None
        self.reload: Callable[[RunState], RunState] | None = None

    def run(self, *, start: datetime, horizon: timedelta, trigger: EventIn, events: Sequence[Scripted], run_id: str) -> LocalResult:
        start = start.astimezone(UTC)  # the run's clock counts real hours: 7d is 168 h across DST
        self.now = start
        end = start + horizon
        script = sorted(enumerate(events), key=lambda item: (item[1].after, item[0]))
        trigger = trigger.model_copy(update={"at": trigger.at or start})
        self.state, out = machine.start(self.program, self.account, run_id=run_id, event=trigger, now=start, simulation=True)
        self._absorb(out)
        position = 0
        while not self.state.ended:
            wake = machine.next_wake(self.state)
            due = start + script[position][1].after if position < len(script) else None
            if (wake is None or wake > end) and (due is None or due > end):
                self.now = end
                self._feed(machine.Stop(outcome="running", because="horizon"))
                break
            if wake is not None and (due is None or wake <= due):
                self.now = max(self.now, wake)
                self._feed(machine.Tick())
                continue
            assert due is not None
            index, entry = script[position]
            position += 1
            self.now = max(self.now, due)
            self._scripted(index, entry)
        state = self.state
        at = state.ended_at or self.now
        return LocalResult(state=state, account=self.account, outcome=state.outcome or "running", because=state.because or "", at=at, day=run_day(state.started_at, at))

    def _scripted(self, index: int, entry: Scripted) -> None:
        if entry.account is not None:
            previous = self.account
            self.account = patched(previous, entry.account)
            self._feed(machine.AccountChanged())
            for event in changes(previous, self.account, self.now, f"sim-{index}"):
                self._feed(event)
            return
        event = EventIn(id=f"sim-{index}", type=str(entry.type), at=self.now, data=dict(entry.data))
        changed = apply_event(self.account, event)
        if changed is not None:
            self.account = changed
        self._feed(event)

    def _step(self, message: machine.Input) -> Output:
        assert self.state is not None
        if self.reload is not None:
            self.state = self.reload(self.state)
        return machine.step(self.program, self.state, self.account, self.now, message)

    def _feed(self, message: machine.Input) -> None:
        self._absorb(self._step(message))

    def _absorb(self, out: Output) -> None:
        """Take an output's timeline and perform its effects as one batch, answering them in the
        order asked; the answers' effects form the next batch (as the workflow host does)."""
        assert self.state is not None
        batch = [out]
        while batch:
            for current in batch:
                for record in current.records:
                    if self.sink is not None:
                        self.sink(record)
                for text in current.warnings:
                    if self.warn is not None:
                        self.warn(text)
            effects = [effect for current in batch for effect in current.effects]
            answers = [answer for effect in effects if (answer := self.effects.perform(effect)) is not None]
            batch = [self._step(answer) for answer in answers]
