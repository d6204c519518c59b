"""Walking a playbook's steps with their paths, for validation, the interpreter and reports."""

from __future__ import annotations

from collections.abc import Iterator, Sequence

from touchpoint.dsl.schema import (
    IfStep,
    Playbook,
    RepeatStep,
    SplitStep,
    StepBase,
    TaskStep,
    WaitForStep,
)
from touchpoint.dsl.yamlpos import Path, format_path


def children(step: StepBase, path: Path) -> Iterator[tuple[Path, Sequence[StepBase]]]:
    """The nested step lists of one step, each with its path (as in the YAML)."""
    if isinstance(step, IfStep):
        yield path + ("then",), step.then
        yield path + ("else",), step.else_
    elif isinstance(step, SplitStep):
        for variant, spec in step.split.items():
            yield path + ("split", variant, "steps"), spec.steps
    elif isinstance(step, RepeatStep):
        yield path + ("repeat", "steps"), step.repeat.steps
    elif isinstance(step, WaitForStep):
        yield path + ("wait_for", "on_timeout"), step.wait_for.on_timeout
    elif isinstance(step, TaskStep):
        yield path + ("task", "on_overdue"), step.task.on_overdue


def walk(steps: Sequence[StepBase], path: Path) -> Iterator[tuple[Path, StepBase]]:
    """Every step of a list and below it, depth first, with its YAML path."""
    for index, step in enumerate(steps):
        here = path + (index,)
        yield here, step
        for child_path, child_steps in children(step, here):
            yield from walk(child_steps, child_path)


def step_lists(playbook: Playbook) -> Iterator[tuple[Path, Sequence[StepBase]]]:
    """The top-level step lists of a playbook: its steps, checkpoints and `on_miss`."""
    yield ("steps",), playbook.steps
    if playbook.scorecard:
        for index, checkpoint in enumerate(playbook.scorecard.checkpoints):
            yield ("scorecard", "checkpoints", index, "steps"), checkpoint.steps
        yield ("scorecard", "on_miss"), playbook.scorecard.on_miss


def all_steps(playbook: Playbook) -> Iterator[tuple[Path, StepBase]]:
    """Every step of a playbook, anywhere, with its YAML path."""
    for path, steps in step_lists(playbook):
        yield from walk(steps, path)


def step_name(step: StepBase, path: Path) -> str:
    """How status and the timeline name a step: its `id`, else its path (``steps[3].then[0]``)."""
    return step.id or format_path(path)


def count_steps(playbook: Playbook) -> int:
    """How many steps a playbook has, nested ones included."""
    return sum(1 for _ in all_steps(playbook))


def event_types_named(playbook: Playbook) -> set[str]:
    """The event types a playbook names: its trigger, every `wait_for` and milestone `event`."""
    named: set[str] = set()
    trigger_event = getattr(playbook.trigger, "event", None)
    if isinstance(trigger_event, str):
        named.add(trigger_event)
    elif isinstance(trigger_event, (list, tuple)):
        named.update(str(t) for t in trigger_event)
    for _, step in all_steps(playbook):
        if isinstance(step, WaitForStep):
            named.update(step.wait_for.event)
    if playbook.scorecard:
        named.update(m.event for m in playbook.scorecard.milestones if m.event)
    return named


def reads_event(playbook: Playbook) -> bool:
    """Whether `exit_when`, `goal` or a milestone's `when` reads `event` (any event may then matter)."""
    from jinja2 import nodes

    from touchpoint.dsl import expressions as ex

    sources = [playbook.exit_when, playbook.goal]
    if playbook.scorecard:
        sources.extend(m.when for m in playbook.scorecard.milestones)
    for source in sources:
        if not source:
            continue
        try:
            tree = ex.parse_expression(source)
        except Exception:  # a syntax error: validation reports it; assume it may read `event`
            return True
        if any(node.name == "event" for node in tree.find_all(nodes.Name)):
            return True
    return False
