"""Walking a playbook's steps with their paths, for validation, the interpreter and reports."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Any

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
    return named | guarded_event_types(playbook)


def _event_sources(playbook: Playbook) -> list[str]:
    """The conditions checked on every event: `exit_when`, `goal`, and milestone `when`s
    without an `event` (one with an `event` is checked on events of that type only)."""
    sources = [playbook.exit_when, playbook.goal]
    if playbook.scorecard:
        sources.extend(m.when for m in playbook.scorecard.milestones if not m.event)
    return [source for source in sources if source]


def event_guard(tree: Any) -> set[str] | None:
    """The event types an expression can be true for when it says so itself (`event.type ==
    'x' and ...`, `event.type in ['x', 'y'] and ...`); None when any type may make it true."""
    from jinja2 import nodes

    if isinstance(tree, nodes.And):
        left, right = event_guard(tree.left), event_guard(tree.right)
        if left is not None and right is not None:
            return left & right
        return left if left is not None else right
    if isinstance(tree, nodes.Or):
        left, right = event_guard(tree.left), event_guard(tree.right)
        return left | right if left is not None and right is not None else None
    if isinstance(tree, nodes.Compare) and len(tree.ops) == 1:
        subject, op = tree.expr, tree.ops[0]
        if not (isinstance(subject, nodes.Getattr) and subject.attr == "type" and isinstance(subject.node, nodes.Name) and subject.node.name == "event"):
            return None
        if op.op == "eq" and isinstance(op.expr, nodes.Const) and isinstance(op.expr.value, str):
            return {op.expr.value}
        if op.op == "in" and isinstance(op.expr, (nodes.List, nodes.Tuple)):
            values = [item.value for item in op.expr.items if isinstance(item, nodes.Const)]
            if len(values) == len(op.expr.items) and all(isinstance(v, str) for v in values):
                return set(values)
    return None


def _reading(playbook: Playbook) -> tuple[bool, set[str]]:
    """Whether a condition checked on every event may react to any type, and the types the
    guarded ones react to."""
    from jinja2 import nodes

    from touchpoint.dsl import expressions as ex

    guarded: set[str] = set()
    for source in _event_sources(playbook):
        try:
            tree = ex.parse_expression(source)
        except Exception:  # a syntax error: validation reports it; assume it may read `event`
            return True, guarded
        if not any(node.name == "event" for node in tree.find_all(nodes.Name)):
            continue
        guard = event_guard(tree)
        if guard is None:
            return True, guarded
        guarded |= guard
    return False, guarded


def reads_event(playbook: Playbook) -> bool:
    """Whether `exit_when`, `goal` or a milestone's `when` reads `event` for any type (any event
    may then matter). A milestone with an `event` reads only events of its type, and a condition
    guarded by `event.type == 'x' and ...` only events of type ``x``: those types are named
    (`event_types_named`) instead."""
    return _reading(playbook)[0]


def guarded_event_types(playbook: Playbook) -> set[str]:
    """The types that guarded conditions on every event react to (`event.type == 'x' and ...`)."""
    return _reading(playbook)[1]
