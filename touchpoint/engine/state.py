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


def _none(value: Any) -> bool:
    return value is None


def _unset(default: Any = None) -> Any:
    """A field left out of the serialized state while it holds its default (None, False or
    empty): most frames and runs never use most fields, and the state travels in every
    continue-as-new and query."""
    if default is None:
        return Field(default=None, exclude_if=_none)
    return Field(default_factory=type(default), exclude_if=lambda value: not value) if isinstance(default, (dict, list)) else Field(default=default, exclude_if=lambda value: value == default)


class Part(Data):
    """One recipient of an email step, on its way through window, cap and send."""

    recipient: Recipient
    key: str
    tz: str
    country: str | None = None
    internal: bool = False
    phase: Literal["approval", "window", "reserve", "slot", "send", "held", "done"] = "window"
    until: datetime | None = None
    """When a `window` or `slot` phase wakes."""
    effect: str | None = None
    """The effect in flight (`reserve` and `send`)."""
    held_since: datetime | None = None
    held_reason: str | None = None
    result: SendEmailResult | None = None


class Hold(Data):
    """An email step's approval request (`touchpoint.engine.approving`): who, until when, the decision."""

    id: str
    step: str
    number: int
    """The n-th request of this step in the run (an events file's n-th decision for it decides it)."""
    by: str
    asked_at: datetime
    timeout_seconds: float
    on_timeout: Literal["send", "skip"] = "skip"
    effect: str | None = None
    """The request in flight (rendering, storing, telling the approver)."""
    requested: bool = False
    decision: Literal["approved", "rejected", "timed_out"] | None = None
    decided_by: str | None = None
    decided_at: datetime | None = None
    subject: str | None = None
    """An approved edit of the subject (template source)."""
    html: str | None = None
    """An approved edit of the HTML (template source)."""
    reason: str | None = None
    settled: bool = False
    """The decision is on the timeline and applied: the parts go on (or the step was skipped)."""


class Decisions(Data):
    """Per step name: requests made, decisions given without an approval id (an events file's
    `{type: approval.decided, data: {step}}`), and those given before their request."""

    made: int = 0
    given: int = 0
    early: dict[int, EventIn] = Field(default_factory=dict)


class Frame(Data):
    """One level of a thread's position: step ``index`` of the step list at ``path``.

    ``phase`` says where that step is: ``enter`` (not begun), ``wait`` (a timer or an event),
    ``effect`` (an activity in flight), ``inside`` (running a nested step list pushed above it),
    ``between`` (a `repeat` between rounds), ``after`` (a nested list ran: the step is done).
    """

    path: list[PathPart]
    index: int = 0
    phase: Literal["enter", "wait", "effect", "inside", "between", "email", "after"] = "enter"
    until: datetime | None = _unset()
    effect: str | None = _unset()
    round: int | None = _unset()
    round_start: datetime | None = _unset()
    task_id: str | None = _unset()
    due_at: datetime | None = _unset()
    recorded: bool = _unset(False)
    parts: list[Part] | None = _unset()
    approval: Hold | None = _unset()


class Wait(Data):
    """What a thread waits for: a time, an event, a task's completion, an effect, a resume."""

    kind: Literal["time", "date", "event", "task", "effect", "email", "approval", "paused"]
    until: datetime | None = None
    matched: EventIn | None = None
    detail: str | None = None
    """What is awaited, in words (the event types of a `wait_for`)."""
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
    recorded: int = 0
    """Timeline lines so far (each line's `StepRecord.seq`)."""
    position: int = 0
    """Bumped by every input that changed the run: orders its projections in the store."""
    threads: list[Thread] = Field(default_factory=list)
    seq: int = 0
    """Effects issued so far: each effect's id is ``<run_id>#<seq>``."""
    simulation: bool = False
    decisions: dict[str, Decisions] = Field(default_factory=dict)
    """Approval decisions that name a step, not a request (`touchpoint.engine.approving`)."""
    asked_approval: bool = False
    """The run has asked for an approval: the store closes what it left pending when it ends."""
    held_out: bool = _unset(False)
    """The playbook's `holdout` chose this run: it takes no steps (contract section 13)."""
    enrolled_until: datetime | None = _unset()
    """With a `holdout`: the end of its `for` window; the run stays enrolled until then."""
    variants: dict[str, str] = _unset({})
    """The `split` variants this run took, by split step (its id, else its path)."""

    @property
    def variant(self) -> str | None:
        """The run's split variants as one label (``step=variant``, comma-separated), for analytics."""
        return ",".join(f"{step}={variant}" for step, variant in self.variants.items()) or None

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
        else:
            detail = wait.detail
        step = state.step if thread.name == "main" else "scorecard"
        found.append(Waiting(step=step, kind=wait.kind, until=until, detail=detail))
    return found
