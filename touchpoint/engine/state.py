"""A run's state as plain data: where it is, what it waits for, what it has seen.

Everything the interpreter (`touchpoint.engine.machine`) needs to continue a run lives in a
`RunState`: the position of each of its threads in the step tree, its vars and scorecard, what
it waits for and until when (absolute times), the events a `wait_for` with `seen` may count,
the last event, and a short recent history. It serializes to JSON (pydantic), so a run survives
continue-as-new, can move to another version at the same step, and runs without a server.

Sizes are bounded however long a run lives: `seen` and `recent` keep the newest entries and
count what they dropped.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

from pydantic import Field

from touchpoint.dsl.runtime import Data, EventIn, Recipient, SendEmailResult, StepRecord

SEEN_LIMIT = 200
"""Events kept for `wait_for: {seen: true}` and `task.completed` matching."""
RECENT_LIMIT = 10
"""Timeline lines kept in the state for `status`; the full timeline goes to the host's sink."""

PathPart = str | int


class Part(Data):
    """One recipient of an email step, on its way through window, cap and send."""

    recipient: Recipient
    key: str
    tz: str
    country: str | None = None
    internal: bool = False
    phase: Literal["window", "reserve", "slot", "send", "held", "done"] = "window"
    until: datetime | None = None
    """When a `window` or `slot` phase wakes."""
    effect: str | None = None
    """The effect in flight (`reserve` and `send`)."""
    held_since: datetime | None = None
    held_reason: str | None = None
    result: SendEmailResult | None = None


class Frame(Data):
    """One level of a thread's position: step ``index`` of the step list at ``path``.

    ``phase`` says where that step is: ``enter`` (not begun), ``wait`` (a timer or an event),
    ``effect`` (an activity in flight), ``inside`` (running a nested step list pushed above it),
    ``between`` (a `repeat` between rounds), ``after`` (a nested list ran: the step is done).
    """

    path: list[PathPart]
    index: int = 0
    phase: Literal["enter", "wait", "effect", "inside", "between", "email", "after"] = "enter"
    until: datetime | None = None
    effect: str | None = None
    round: int | None = None
    round_start: datetime | None = None
    task_id: str | None = None
    due_at: datetime | None = None
    recorded: bool = False
    parts: list[Part] | None = None


class Wait(Data):
    """What a thread waits for: a time, an event, a task's completion, an effect, a resume."""

    kind: Literal["time", "date", "event", "task", "effect", "email", "paused"]
    until: datetime | None = None
    matched: EventIn | None = None
    ready: bool = False
    """The awaited thing happened; the thread resumes at the next drive."""


class Thread(Data):
    """A line of execution: ``main`` (the steps) or ``card`` (checkpoints and `by_day`)."""

    name: Literal["main", "card"]
    frames: list[Frame] = Field(default_factory=list)
    wait: Wait | None = None
    stage: int = 0
    """``card``: checkpoints passed so far (then the `by_day` judgement)."""


class RunState(Data):
    """Everything about one run that the interpreter needs to continue it."""

    run_id: str
    playbook: str
    version: str
    account_id: str | None = None
    started_at: datetime
    status: Literal["running", "paused", "ended"] = "running"
    paused_reason: str | None = None
    outcome: str | None = None
    because: str | None = None
    ended_at: datetime | None = None
    step: str | None = None
    """The step the run is at (its id, else its path)."""
    vars: dict[str, Any] = Field(default_factory=dict)
    scorecard: dict[str, Any] | None = None
    judged: bool = True
    event: EventIn = Field(default_factory=lambda: EventIn(type="manual"))
    seen: list[EventIn] = Field(default_factory=list)
    seen_dropped: int = 0
    recent: list[StepRecord] = Field(default_factory=list)
    recent_dropped: int = 0
    threads: list[Thread] = Field(default_factory=list)
    seq: int = 0
    """Effects issued so far: each effect's id is ``<run_id>#<seq>``."""
    simulation: bool = False

    @property
    def ended(self) -> bool:
        return self.status == "ended"


class Waiting(Data):
    """What `status` says a run waits for: ``kind``, ``until`` and the step."""

    step: str | None
    kind: str
    until: datetime | None = None
    detail: str | None = None


def waiting_of(state: RunState) -> list[Waiting]:
    """What each of the run's threads waits for now (empty once it ended)."""
    found: list[Waiting] = []
    if state.ended:
        return found
    for thread in state.threads:
        wait = thread.wait
        if wait is None:
            continue
        frame = thread.frames[-1] if thread.frames else None
        until = wait.until
        detail = None
        if wait.kind == "email" and frame is not None and frame.parts:
            held = [p for p in frame.parts if p.phase in ("window", "slot", "held")]
            times = [p.until for p in held if p.until is not None]
            until = min(times) if times else None
            reasons = sorted({p.held_reason for p in held if p.held_reason})
            detail = ", ".join(reasons) or None
        elif wait.kind == "paused":
            detail = state.paused_reason
        step = state.step if thread.name == "main" else "scorecard"
        found.append(Waiting(step=step, kind=wait.kind, until=until, detail=detail))
    return found
