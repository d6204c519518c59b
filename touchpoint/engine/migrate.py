"""Moving a run to another version of its playbook, at the step with the same id (contract §13).

`plan` computes what a move would do on a copy of the run's state and says it in a `Move`;
`apply` is `plan` followed by putting the copy in place and recording the move on the run's
timeline. The dry run and the real run call the same function, so a dry run prints exactly what
the real one does. Like the interpreter, this is a deterministic function of its inputs and
imports no Temporal: the account workflow calls it in a handler, tests call it directly.

How a position carries over:
- each thread's innermost frame is the step it stands at: the step with the same ``id`` in the
  new version (of the same kind), or, for a step without an id, the step at the same path with
  the same kind. The frames above it are rebuilt from the new version's nesting, keeping a
  container's working data (a `repeat`'s round) when the container is the same step;
- time already spent in a wait is kept: a `wait`, a `wait_for` timeout, a task's due date and a
  `repeat`'s next round move by the change of their duration (at once if that has passed); a
  `wait_until` is evaluated again; a `wait_for` keeps the events it has seen; a held email keeps
  its recipients and what was decided for them;
- milestones that the new version also has keep their state; the scorecard's checkpoints that
  fall before now count as passed (they are not run late);
- a run whose step has no counterpart stays where it is, with the reason.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from datetime import datetime, timedelta

from touchpoint.dsl.accounts import AccountDoc
from touchpoint.dsl.runtime import Data, initial_scorecard
from touchpoint.dsl.schema import (
    IfStep,
    Playbook,
    RepeatStep,
    SplitStep,
    StepBase,
    TaskStep,
    WaitForStep,
    WaitStep,
    WaitUntilStep,
    step_kind,
)
from touchpoint.dsl.yamlpos import format_path
from touchpoint.engine.base import Base
from touchpoint.engine.program import Output, Program
from touchpoint.engine.state import Frame, PathPart, RunState, Thread, Wait

Location = tuple[PathPart, ...]
"""A step's own path: its list's path plus its index, e.g. ``("steps", 3, "then", 0)``."""


class Move(Data):
    """What moving one run does (or did): where it stands before and after, or why it stays."""

    run_id: str
    account_id: str | None = None
    playbook: str
    status: str
    from_version: str
    to_version: str
    from_step: str | None = None
    to_step: str | None = None
    moved: bool
    reason: str | None = None


class _Stay(Exception):
    """The run has no counterpart position in the new version."""


def step_lists(playbook: Playbook) -> Iterator[tuple[Location, Sequence[StepBase]]]:
    """Every step list of a playbook with its path, nested lists included."""
    roots: list[tuple[Location, Sequence[StepBase]]] = [(("steps",), playbook.steps)]
    card = playbook.scorecard
    if card is not None:
        roots += [(("scorecard", "checkpoints", i, "steps"), c.steps) for i, c in enumerate(card.checkpoints)]
        roots.append((("scorecard", "on_miss"), card.on_miss))
    stack = list(reversed(roots))
    while stack:
        path, steps = stack.pop()
        yield path, steps
        for index, step in enumerate(steps):
            here = (*path, index)
            if isinstance(step, IfStep):
                stack += [((*here, "then"), step.then), ((*here, "else"), step.else_)]
            elif isinstance(step, RepeatStep):
                stack.append(((*here, "repeat", "steps"), step.repeat.steps))
            elif isinstance(step, WaitForStep):
                stack.append(((*here, "wait_for", "on_timeout"), step.wait_for.on_timeout))
            elif isinstance(step, TaskStep):
                stack.append(((*here, "task", "on_overdue"), step.task.on_overdue))
            elif isinstance(step, SplitStep):
                stack += [((*here, "split", name, "steps"), variant.steps) for name, variant in step.split.items()]


class _Counterparts:
    """Finds, for a step of the old version, the same step in the new one."""

    def __init__(self, old: Program, new: Program) -> None:
        self.old, self.new = old, new
        self.by_id: dict[str, Location] = {}
        for path, steps in step_lists(new.playbook):
            for index, step in enumerate(steps):
                if step.id:
                    self.by_id[step.id] = (*path, index)

    def name(self, program: Program, location: Location) -> str:
        step = program.step_at(location)
        return step.id or format_path(location)

    def find(self, location: Location) -> Location:
        """The new location of the old step at ``location``.

        Raises:
            _Stay: when the new version has no such step, or has it as another kind of step.
        """
        step = self.old.step_at(location)
        kind = step_kind(step)
        if step.id:
            found = self.by_id.get(step.id)
            if found is None:
                raise _Stay(f"step `{step.id}` is not in version {self.new.version}")
            if step_kind(self.new.step_at(found)) != kind:
                raise _Stay(f"step `{step.id}` is a `{step_kind(self.new.step_at(found))}` step in version {self.new.version}, not a `{kind}`")
            return found
        try:
            other = self.new.step_at(location)
        except (KeyError, IndexError):
            other = None
        if other is None or other.id or step_kind(other) != kind:
            raise _Stay(f"step {format_path(location)} has no id and version {self.new.version} has no `{kind}` step at its path")
        return location

    def same(self, old_location: Location, new_location: Location) -> bool:
        """Whether two containers are one step (by id, else by path and kind)."""
        try:
            return self.find(old_location) == new_location
        except (_Stay, KeyError, IndexError):
            return False


def plan(old: Program, new: Program, run: RunState, now: datetime) -> tuple[Move, RunState | None]:
    """What moving ``run`` from ``old`` to ``new`` does, and the run's state after (on a copy).

    The state is None when the run stays where it is (``Move.reason`` says why) or is already on
    ``new``.
    """
    move = Move(
        run_id=run.run_id, account_id=run.account_id, playbook=run.playbook, status=run.status,
        from_version=run.version, to_version=new.version, from_step=run.step, moved=False,
    )
    if run.version == new.version:
        return move.model_copy(update={"to_step": run.step, "reason": "already on this version"}), None
    if run.ended:
        return move.model_copy(update={"reason": "the run has ended"}), None
    state = run.model_copy(deep=True)
    counterparts = _Counterparts(old, new)
    try:
        threads = [thread for thread in (_move_thread(counterparts, thread, state, now) for thread in state.threads) if thread is not None]
    except _Stay as stay:
        return move.model_copy(update={"reason": str(stay)}), None
    state.threads = threads
    _move_scorecard(old.playbook, new.playbook, state, now)
    state.version = new.version
    main = next((t for t in threads if t.name == "main"), None)
    if main is not None and main.frames:
        frame = main.frames[-1]
        state.step = counterparts.name(new, (*frame.path, frame.index))
    return move.model_copy(update={"to_step": state.step, "moved": True}), state


def apply(old: Program, new: Program, run: RunState, account: AccountDoc | None, now: datetime) -> tuple[Move, RunState | None, Output]:
    """`plan`, then the moved state with the move on its timeline (``run.migrated``)."""
    move, state = plan(old, new, run, now)
    if state is None:
        return move, None, Output()
    recorder = Base(new, state, account, now)
    recorder._record(
        state.step or "-", "migrated", event="run.migrated", from_version=move.from_version, to_version=move.to_version,
        from_step=move.from_step, to_step=move.to_step,
    )
    state.position += 1
    recorder.out.moved = True
    return move, state, recorder.out


def _move_thread(counterparts: _Counterparts, thread: Thread, state: RunState, now: datetime) -> Thread | None:
    old, new = counterparts.old, counterparts.new
    if thread.name == "card" and new.playbook.scorecard is None:
        return None  # the new version keeps no scorecard
    if not thread.frames:
        if thread.name == "card":
            thread.wait = None  # its next moment is computed again from the new checkpoints
            thread.stage = _card_stage(new.playbook, state, now, None)
        return thread
    innermost = thread.frames[-1]
    old_location = (*innermost.path, innermost.index)
    location = counterparts.find(old_location)
    root = "steps" if thread.name == "main" else "scorecard"
    if location[0] != root:
        raise _Stay(f"step {counterparts.name(old, old_location)} moved between the steps and the scorecard")
    frames: list[Frame] = []
    for cut in [i + 1 for i, part in enumerate(location[:-1]) if isinstance(part, int)]:
        container = location[:cut]
        kept = next((f for f in thread.frames[:-1] if counterparts.same((*f.path, f.index), container)), None)
        frame = kept.model_copy(update={"path": list(container[:-1]), "index": container[-1]}) if kept else None
        if frame is None:
            frame = Frame(path=list(container[:-1]), index=int(container[-1]), phase="inside")
            if isinstance(new.step_at(container), RepeatStep):
                frame.round, frame.round_start = 1, now
        frames.append(frame)
    moved = innermost.model_copy(update={"path": list(location[:-1]), "index": location[-1]})
    frames.append(moved)
    thread.frames = frames
    _carry_wait(old.step_at(old_location), new.step_at(location), thread, moved)
    if thread.name == "card":
        thread.stage = _card_stage(new.playbook, state, now, location)
    return thread


def _carry_wait(before: StepBase, after: StepBase, thread: Thread, frame: Frame) -> None:
    """Keep the time already spent in the step's wait; follow the new duration."""
    wait = thread.wait
    if wait is None or wait.ready or wait.kind == "paused":
        return
    if isinstance(before, WaitStep) and isinstance(after, WaitStep) and wait.kind == "time" and wait.until:
        wait.until += after.wait - before.wait
    elif isinstance(before, WaitForStep) and isinstance(after, WaitForStep) and wait.kind == "event":
        if wait.until is not None:
            wait.until += after.wait_for.timeout - before.wait_for.timeout
        wait.detail = " or ".join(after.wait_for.event)
    elif isinstance(before, WaitUntilStep) and isinstance(after, WaitUntilStep) and wait.kind in ("time", "date"):
        thread.wait = Wait(kind="date", ready=True)  # evaluated again when the run next moves
    elif isinstance(before, TaskStep) and isinstance(after, TaskStep) and wait.kind == "task":
        if frame.due_at is not None and before.task.due and after.task.due:
            frame.due_at += after.task.due - before.task.due
        elif not after.task.due:
            frame.due_at = None
        wait.until = frame.due_at
    elif isinstance(before, RepeatStep) and isinstance(after, RepeatStep) and frame.phase == "between" and frame.round_start:
        wait.until = frame.round_start + after.repeat.every


def _card_stage(playbook: Playbook, state: RunState, now: datetime, location: Location | None) -> int:
    """The checkpoints of the new scorecard already behind the run (run, or skipped as past)."""
    card = playbook.scorecard
    assert card is not None
    if location is not None and location[:2] == ("scorecard", "on_miss"):
        return len(card.checkpoints) + 1
    return sum(1 for c in card.checkpoints if state.started_at + timedelta(days=c.day) <= now)


def _move_scorecard(old: Playbook, new: Playbook, state: RunState, now: datetime) -> None:
    before = state.scorecard
    fresh = initial_scorecard(new)
    if fresh is None:
        state.scorecard, state.judged = None, True
        return
    if before is not None:
        for name, mark in fresh["milestones"].items():
            if name in before.get("milestones", {}):
                mark.update(before["milestones"][name])
        fresh["met"] = bool(before.get("met"))
    assert new.scorecard is not None
    total = sum(m.weight for m in new.scorecard.milestones)
    done = sum(m.weight for m in new.scorecard.milestones if fresh["milestones"][m.id]["done"])
    fresh["score"] = round(done / total * 100) if total else 0
    state.scorecard = fresh
    if old.scorecard is None:
        state.judged = False
        state.threads.append(Thread(name="card", stage=_card_stage(new, state, now, None)))


