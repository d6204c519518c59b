"""Hosts without a server: one playbook, or every playbook of one account, on a simulated clock.

The clock jumps from one moment to the next (the run's next wake, the next scripted event), and
effects are performed in memory (`LocalEffects`) at the moment they are asked for, so a 90-day
onboarding takes milliseconds and an endless `repeat` simulated for years needs no more memory
than one round: the timeline streams to ``sink`` as it happens. The interpreter is the same one
the workflows host (`touchpoint.engine.machine`), so both hosts print the same timeline.

`run_local` hosts one run started as if its trigger had fired. `run_account` hosts every run of
one account as its workflow does (`workflows/account.py`): event triggers fire on the account's
derived events (`trigger.when` and `reenroll` checked, one run of a playbook at a time), timed
starts (a date trigger's sweep, a manual start) and `start` steps start runs, every event reaches
every run, and one `LocalEffects` performs every run's effects, so the frequency cap is shared.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, Literal

from touchpoint.dsl import expressions as ex
from touchpoint.dsl.accounts import AccountDoc
from touchpoint.dsl.runtime import EventIn, StartRequest, StepRecord, build_context
from touchpoint.dsl.schema import EventTrigger
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
    holdout: Literal["in", "out"] | None = None,
) -> LocalResult:
    """Run until the run ends or ``horizon`` has passed (then the outcome is ``running``).

    ``reload`` replaces the state between any two inputs (tests pass a JSON round trip: a run
    restored from its serialized state must go on exactly as if it had never stopped).
    ``effects`` performs the run's effects (default: `LocalEffects` over ``templates``, drafts by
    `none`; the forecast passes one that renders nothing). ``holdout`` forces a playbook
    holdout's choice (``in``: held out, ``out``: treated); else it is the stable choice.
    """
    host = _LocalHost(program, account, effects or LocalEffects(templates), sink, warn)
    host.reload = reload
    return host.run(start=start, horizon=horizon, trigger=trigger, events=events, run_id=run_id, holdout=holdout)


class _LocalHost:
    def __init__(self, program: Program, account: AccountDoc, effects: LocalEffects, sink: Callable[[StepRecord], None] | None, warn: Callable[[str], None] | None) -> None:
        self.program = program
        self.account = account
        self.effects = effects
        self.sink = sink
        self.warn = warn
        self.now = datetime.min
        self.state: RunState | None = None
        self.reload: Callable[[RunState], RunState] | None = None

    def run(self, *, start: datetime, horizon: timedelta, trigger: EventIn, events: Sequence[Scripted], run_id: str, holdout: Literal["in", "out"] | None = None) -> LocalResult:
        start = start.astimezone(UTC)  # the run's clock counts real hours: 7d is 168 h across DST
        self.now = start
        end = start + horizon
        script = sorted(enumerate(events), key=lambda item: (item[1].after, item[0]))
        trigger = trigger.model_copy(update={"at": trigger.at or start})
        self.state, out = machine.start(self.program, self.account, run_id=run_id, event=trigger, now=start, simulation=True, holdout=holdout)
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


# ---------------------------------------------------------------------------- one account, many runs


@dataclass
class TimedStart:
    """A start at a moment, whatever the events: a date trigger's sweep, a manual start.

    ``when`` (a date trigger's) is checked at that moment, as the sweep checks it; a run of the
    playbook in flight then means no start, as for a `StartRequest` to the account workflow.
    """

    at: datetime
    playbook: str
    event: EventIn
    when: str | None = None


@dataclass
class HostedRun:
    """One run the account host started, and where it stands when the host stopped."""

    state: RunState
    trigger: str
    """What started it: its event's type (``account.created``, ``date.reached``, ``manual``), or
    ``start step of <playbook>``."""
    outcome: str = "running"
    because: str = ""
    at: datetime = datetime.min
    day: int = 0


@dataclass
class AccountResult:
    """Every run the account host started (in start order), and why playbooks did not start."""

    runs: list[HostedRun]
    account: AccountDoc
    refused: dict[str, str]
    """By playbook: why the last trigger (or start) that named it started no run."""
    at: datetime


def run_account(
    programs: Mapping[str, Program],
    account: AccountDoc,
    *,
    templates: Path,
    start: datetime,
    horizon: timedelta,
    events: Sequence[Scripted] = (),
    starts: Sequence[TimedStart] = (),
    new: bool = True,
    run_prefix: str = "sim",
    sink: Callable[[RunState, StepRecord], None] | None = None,
    warn: Callable[[str], None] | None = None,
    effects: LocalEffects | None = None,
) -> AccountResult:
    """Host every run of one account until ``horizon`` has passed or nothing is left to happen.

    ``programs`` are the account playbooks (event, date and manual triggers) by id; ``new``
    upserts ``account`` at ``start`` as a new account (it derives `account.created`). Runs
    still live at the horizon end as ``running``. ``effects`` is shared by every run (default:
    `LocalEffects` over ``templates``), so one frequency cap counts every run's emails.
    """
    host = _AccountHost(programs, account, effects or LocalEffects(templates), sink, warn, run_prefix)
    return host.run(start=start, horizon=horizon, events=events, starts=starts, new=new)


class _AccountHost:
    """The account workflow's rules for its runs, on a simulated clock (see the module docstring)."""

    def __init__(
        self,
        programs: Mapping[str, Program],
        account: AccountDoc,
        effects: LocalEffects,
        sink: Callable[[RunState, StepRecord], None] | None,
        warn: Callable[[str], None] | None,
        run_prefix: str,
    ) -> None:
        self.programs = dict(programs)
        self.account = account
        self.effects = effects
        self.sink = sink
        self.warn = warn
        self.prefix = run_prefix
        self.start = self.now = datetime.min.replace(tzinfo=UTC)
        self.live: dict[str, RunState] = {}
        self.hosted: list[HostedRun] = []
        self.last_started: dict[str, datetime] = {}
        self.refused: dict[str, str] = {}
        self.requests: list[tuple[StartRequest, str | None, str]] = []
        """Starts asked for: the request, the `when` to check then, what to call the trigger."""

    def run(self, *, start: datetime, horizon: timedelta, events: Sequence[Scripted], starts: Sequence[TimedStart], new: bool) -> AccountResult:
        self.start = self.now = start.astimezone(UTC)
        end = self.now + horizon
        script = sorted(enumerate(events), key=lambda item: (item[1].after, item[0]))
        timed = sorted(starts, key=lambda s: s.at)
        if new:
            self._apply(changes(None, self.account, self.now, "sim-created"), changed=False)
            self._settle()
        position = timed_position = 0
        while True:
            wakes = [w for run in self.live.values() if (w := machine.next_wake(run)) is not None]
            wake = min(wakes) if wakes else None
            due = self.start + script[position][1].after if position < len(script) else None
            dated = max(timed[timed_position].at, self.start) if timed_position < len(timed) else None
            moments = [t for t in (wake, due, dated) if t is not None and t <= end]
            if not moments:
                break
            self.now = max(self.now, min(moments))
            if wake is not None and wake <= self.now:
                for run in list(self.live.values()):
                    when = machine.next_wake(run)
                    if when is not None and when <= self.now:
                        self._feed(run, machine.Tick())
            elif due is not None and due <= self.now:
                index, entry = script[position]
                position += 1
                self._scripted(index, entry)
            else:
                item = timed[timed_position]
                timed_position += 1
                request = StartRequest(playbook=item.playbook, event=item.event.model_copy(update={"at": item.event.at or self.now}))
                self.requests.append((request, item.when, item.event.type))
            self._settle()
        if self.live:
            self.now = max(self.now, end)
            for run in list(self.live.values()):
                self._feed(run, machine.Stop(outcome="running", because="horizon"))
            self._settle()
        for hosted in self.hosted:
            state = hosted.state
            hosted.outcome, hosted.because = state.outcome or "running", state.because or ""
            hosted.at = state.ended_at or self.now
            hosted.day = run_day(state.started_at, hosted.at)
        return AccountResult(runs=self.hosted, account=self.account, refused=self.refused, at=self.now)

    # ------------------------------------------------------------------ events and starts

    def _scripted(self, index: int, entry: Scripted) -> None:
        previous = self.account
        if entry.account is not None:
            self.account = patched(previous, entry.account)
            self._apply(changes(previous, self.account, self.now, f"sim-{index}"), changed=self.account != previous)
            return
        event = EventIn(id=f"sim-{index}", type=str(entry.type), at=self.now, data=dict(entry.data))
        self.account = apply_event(previous, event) or previous
        self._apply([event], changed=self.account != previous)

    def _apply(self, derived: list[EventIn], *, changed: bool) -> None:
        """As the account workflow applies an event: plan the starts of every derived event
        first (a run in flight takes its playbook), then deliver each and start its runs."""
        taken = {run.playbook for run in self.live.values()}
        plan: list[list[str]] = []
        for item in derived:
            found = []
            for playbook in self._triggered(item):
                if playbook in taken:
                    self._refuse(playbook, f"a run of it was in flight on {item.type} (day {self._day()})")
                else:
                    found.append(playbook)
            taken.update(found)
            plan.append(found)
        if changed:
            for run in list(self.live.values()):
                self._feed(run, machine.AccountChanged())
        for item, playbooks in zip(derived, plan, strict=True):
            for run in list(self.live.values()):
                self._feed(run, item)
            for playbook in playbooks:
                self._begin(playbook, item, item.type)

    def _triggered(self, event: EventIn) -> list[str]:
        """The playbooks whose event trigger fires for ``event`` (`when` and `reenroll` checked)."""
        found: list[str] = []
        for name in sorted(self.programs):
            playbook = self.programs[name].playbook
            trigger = playbook.trigger
            if not isinstance(trigger, EventTrigger) or event.type not in trigger.events:
                continue
            if not self._holds(name, trigger.when, event):
                continue
            last = self.last_started.get(name)
            if last is not None:
                after = playbook.reenroll_after()
                if playbook.reenroll == "never" or (after is not None and self.now - last < after):
                    self._refuse(name, f"reenroll: {playbook.reenroll} (started on day {self._day(last)})")
                    continue
            found.append(name)
        return found

    def _holds(self, name: str, when: str | None, event: EventIn) -> bool:
        if when is None:
            return True
        context = build_context(account=self.account, event=event, run=None, now=self.now, tz=self.account.timezone or "UTC")
        try:
            if ex.is_true(when, context):
                return True
            self._refuse(name, f"trigger.when `{when}` was false on {event.type} (day {self._day()})")
        except ex.ExpressionError as exc:
            self._refuse(name, f"trigger.when failed on {event.type} (day {self._day()}): {exc}")
        return False

    def _refuse(self, playbook: str, why: str) -> None:
        self.refused[playbook] = why

    def _day(self, at: datetime | None = None) -> int:
        return run_day(self.start, at or self.now)

    def _requested(self, request: StartRequest, when: str | None, trigger: str) -> None:
        """A timed start or a `start` step: no second run of a playbook."""
        name = request.playbook
        if name not in self.programs:
            if self.warn is not None:
                self.warn(f"cannot start {name}: no account playbook of that id in the folder")
            return
        if any(run.playbook == name for run in self.live.values()):
            self._refuse(name, f"a run of it was in flight (day {self._day()})")
            return
        event = request.event or EventIn(type="manual", at=self.now)
        if not self._holds(name, when, event):
            return
        self._begin(name, event if event.at else event.model_copy(update={"at": self.now}), trigger)

    def _begin(self, name: str, event: EventIn, trigger: str) -> None:
        run_id = f"{self.prefix}-{len(self.hosted) + 1}"
        state, out = machine.start(self.programs[name], self.account, run_id=run_id, event=event, now=self.now, simulation=True)
        self.live[run_id] = state
        self.hosted.append(HostedRun(state=state, trigger=trigger))
        self.last_started[name] = self.now
        self.refused.pop(name, None)
        self._absorb(state, out)

    def _settle(self) -> None:
        """Start what `start` steps and timed starts asked for, then let go of ended runs."""
        while self.requests:
            self._requested(*self.requests.pop(0))
        for run_id, run in list(self.live.items()):
            if run.ended:
                del self.live[run_id]

    # ------------------------------------------------------------------ runs and effects

    def _feed(self, run: RunState, message: machine.Input) -> None:
        self._absorb(run, machine.step(self.programs[run.playbook], run, self.account, self.now, message))

    def _absorb(self, run: RunState, out: Output) -> None:
        """As `_LocalHost._absorb`, for one of the account's runs; its `start` steps queue
        start requests (handled once the current input is done, as the workflow does)."""
        program = self.programs[run.playbook]
        batch = [out]
        while batch:
            for current in batch:
                for record in current.records:
                    if self.sink is not None:
                        self.sink(run, record)
                for text in current.warnings:
                    if self.warn is not None:
                        self.warn(f"{run.playbook}: {text}")
            answers = []
            for effect in (effect for current in batch for effect in current.effects):
                if effect.kind == "start_playbook" and isinstance(effect.input, StartRequest):
                    self.requests.append((effect.input, None, f"start step of {run.playbook}"))
                elif (answer := self.effects.perform(effect)) is not None:
                    answers.append(answer)
            batch = [machine.step(program, run, self.account, self.now, answer) for answer in answers]
