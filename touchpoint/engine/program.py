"""What a run executes and asks of its host: the frozen playbook, effects, and their answers.

`Program` is one deployed playbook version with its workspace, with the step lists addressed by
path (`("steps", 3, "then")`). `Effect` is a side effect the interpreter asks its host to perform
(the host runs it as an activity, or performs it locally in a simulation) and `EffectDone` the
answer it feeds back. `Output` is what one call of the interpreter produced.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass, field
from typing import Any, Literal

from touchpoint.dsl.runtime import Data, StepRecord
from touchpoint.dsl.schema import IfStep, Playbook, RepeatStep, SplitStep, StepBase, TaskStep, WaitForStep
from touchpoint.dsl.workspace import Workspace
from touchpoint.engine.state import PathPart

EffectKind = Literal[
    "send_email", "reserve_send_slot", "request_approval", "create_task", "add_note", "update_fields", "call_webhook", "draft_text",
    "start_playbook",
]
"""The activities a run may ask for (their registered names), and `start_playbook`, which the
host handles itself (it enrolls the account in another playbook)."""
CONFIGURATION_ERROR = "ConfigurationError"
"""`EffectDone.error_type` of a failure only a human can fix (401/403, missing secret): the run pauses."""


class Effect(Data):
    """A side effect the run asks its host for; answered by an `EffectDone` with the same id."""

    id: str
    run_id: str
    kind: EffectKind
    input: Any


class EffectDone(Data):
    """The answer to an `Effect`: its result, or the error it failed with after its retries."""

    id: str
    result: Any = None
    error: str | None = None
    error_type: str | None = None


@dataclass
class Output:
    """What one call of the interpreter produced: effects to perform and timeline lines."""

    effects: list[Effect] = field(default_factory=list)
    records: list[StepRecord] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    ended: bool = False
    moved: bool = False
    """The run's status, step or timeline changed: its projection is due."""


def _unrestricted() -> AbstractContextManager[None]:
    return nullcontext()


@dataclass
class Program:
    """One playbook version as the interpreter runs it.

    ``unrestricted`` wraps the calls that read fixed data through restricted modules (the
    `holidays` calendars): a workflow host passes the sandbox's escape hatch, others need none.
    ``observe``, when set, sees every expression the run evaluates, with its context and its
    value (or the `ExpressionError` it raised): the forecast learns from it which decisions a
    run made (`touchpoint.forecast_replay`). Hosts of real runs leave it unset.
    """

    playbook: Playbook
    workspace: Workspace
    version: str
    unrestricted: Callable[[], AbstractContextManager[Any]] = _unrestricted
    observe: Callable[[str, dict[str, Any], Any], None] | None = None
    _lists: dict[tuple[PathPart, ...], Sequence[StepBase]] = field(default_factory=dict, repr=False)

    def steps_at(self, path: Sequence[PathPart]) -> Sequence[StepBase]:
        """The step list at ``path``.

        Raises:
            KeyError: when no step list is there (a state from another version).
        """
        key = tuple(path)
        found = self._lists.get(key)
        if found is None:
            found = _resolve(self.playbook, key)
            self._lists[key] = found
        return found

    def step_at(self, path: Sequence[PathPart]) -> StepBase:
        """The step at ``path`` (a list path plus an index)."""
        *parent, index = path
        assert isinstance(index, int)
        return self.steps_at(parent)[index]


def _resolve(playbook: Playbook, path: tuple[PathPart, ...]) -> Sequence[StepBase]:
    if path == ("steps",):
        return playbook.steps
    card = playbook.scorecard
    if path == ("scorecard", "on_miss") and card is not None:
        return card.on_miss
    if len(path) == 4 and path[:2] == ("scorecard", "checkpoints") and card is not None and isinstance(path[2], int):
        return card.checkpoints[path[2]].steps
    step = _step(playbook, path[:-1]) if len(path) >= 3 else None
    tail = path[-1]
    if isinstance(step, IfStep) and tail in ("then", "else"):
        return step.then if tail == "then" else step.else_
    if isinstance(step, RepeatStep) and path[-2:] == ("repeat", "steps"):
        return step.repeat.steps
    if isinstance(step, WaitForStep) and path[-2:] == ("wait_for", "on_timeout"):
        return step.wait_for.on_timeout
    if isinstance(step, TaskStep) and path[-2:] == ("task", "on_overdue"):
        return step.task.on_overdue
    if len(path) >= 4 and path[-3] == "split" and tail == "steps":
        split = _step(playbook, path[:-3])
        if isinstance(split, SplitStep) and str(path[-2]) in split.split:
            return split.split[str(path[-2])].steps
    raise KeyError(f"no step list at {path!r} in {playbook.playbook}")


def _step(playbook: Playbook, path: tuple[PathPart, ...]) -> StepBase | None:
    """The step whose own path is a prefix ending in an index: ``('steps', 3, 'then')`` -> steps[3]."""
    for cut in range(len(path), 0, -1):
        if isinstance(path[cut - 1], int):
            index = path[cut - 1]
            assert isinstance(index, int)
            steps = _resolve(playbook, path[: cut - 1])
            return steps[index] if index < len(steps) else None
    return None
