"""A playbook drawn as an inline SVG journey, generated on the server from its deployed version.

One node per step, labelled with the step's name (its `id`, else its path, as the timeline and
`runs.step` name it) and a one-line summary of what it does; each node shows how many runs are
there now and how many ever reached it, and links to those runs. Steps nest as in the YAML:
`if` and `split` fork into columns that join again, `wait_for` forks into "event" and its
`on_timeout` steps, `task` into "done" and its `on_overdue` steps, `repeat` is a frame with a
loop back. The report card's checkpoints and `on_miss` are lanes beside the main flow (they run
in parallel with it, on their day).

Layout is a box model: every block is drawn inside a ``w`` x ``h`` box and is entered and left at
the middle of its top and bottom edges, so a sequence is a column of centred blocks joined by
vertical arrows. Every text is escaped; nothing here runs in the browser.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from urllib.parse import urlencode

from markupsafe import Markup, escape

from touchpoint.dsl.durations import format_duration
from touchpoint.dsl.schema import (
    DateTrigger,
    EmailStep,
    EventTrigger,
    ExitStep,
    IfStep,
    NoteStep,
    Playbook,
    RepeatStep,
    ScheduleTrigger,
    SetStep,
    SplitStep,
    StartStep,
    StepBase,
    TaskStep,
    UpdateStep,
    WaitForStep,
    WaitStep,
    WaitUntilStep,
    WebhookStep,
    step_kind,
)
from touchpoint.dsl.walk import step_name
from touchpoint.dsl.yamlpos import Path

NODE_W, NODE_H = 232, 56
GAP = 26  # vertical space for an arrow between two blocks
FORK = 34  # from a fork's node down to its columns (room for the branch labels)
JOIN = 22  # from the longest column down to where the columns join
COL_GAP = 22
PAD = 14  # inside a repeat's frame
LOOP = 26  # left of a repeat's frame: the loop back
EMPTY_W = 110
LANE_GAP = 48

Counts = Callable[[str], tuple[int, int]]
"""Step name -> (runs there now, runs that ever reached it)."""


@dataclass
class Canvas:
    """SVG fragments in drawing order, and what each node links to."""

    parts: list[str] = field(default_factory=list)
    link: Callable[[str], str] = lambda name: ""
    counts: Counts = lambda name: (0, 0)
    nodes: int = 0

    def line(self, x1: float, y1: float, x2: float, y2: float, *, arrow: bool = False, cls: str = "edge") -> None:
        marker = ' marker-end="url(#arrow)"' if arrow else ""
        self.parts.append(f'<line class="{cls}" x1="{x1:g}" y1="{y1:g}" x2="{x2:g}" y2="{y2:g}"{marker}/>')

    def text(self, x: float, y: float, value: str, cls: str, *, anchor: str = "middle") -> None:
        self.parts.append(f'<text class="{cls}" x="{x:g}" y="{y:g}" text-anchor="{anchor}">{escape(value)}</text>')


class Block:
    """A drawable box entered at the middle of its top and left at the middle of its bottom."""

    w: float
    h: float

    def draw(self, c: Canvas, x: float, y: float) -> None:
        raise NotImplementedError


def _fit(value: str, chars: int) -> str:
    return value if len(value) <= chars else value[: chars - 1] + "…"


class Node(Block):
    """One step (or a start, end or lane head when ``name`` is None)."""

    def __init__(self, name: str | None, label: str, summary: str, kind: str) -> None:
        self.name, self.label, self.summary, self.kind = name, label, summary, kind
        self.w, self.h = NODE_W, NODE_H

    def draw(self, c: Canvas, x: float, y: float) -> None:
        rect = f'<rect class="node {escape(self.kind)}" x="{x:g}" y="{y:g}" width="{self.w:g}" height="{self.h:g}" rx="7"/>'
        if self.name is None:
            c.parts.append(f'<g class="marker-node"><title>{escape(self.label)}: {escape(self.summary)}</title>{rect}')
            c.text(x + self.w / 2, y + 23, _fit(self.label, 30), "label")
            c.text(x + self.w / 2, y + 41, _fit(self.summary, 36), "summary")
            c.parts.append("</g>")
            return
        c.nodes += 1
        now, reached = c.counts(self.name)
        title = f"{self.name}: {self.summary}. {now} now, {reached} reached"
        c.parts.append(
            f'<a href="{escape(c.link(self.name))}" class="step" data-step="{escape(self.name)}" data-now="{now}" '
            f'data-reached="{reached}" aria-label="{escape(title)}"><title>{escape(title)}</title>{rect}'
        )
        c.text(x + 10, y + 21, _fit(self.label, 24), "label", anchor="start")
        c.text(x + 10, y + 40, _fit(self.summary, 29), "summary", anchor="start")
        badge = "badge now" if now else "badge"
        c.parts.append(f'<rect class="{badge}" x="{x + self.w - 52:g}" y="{y + 7:g}" width="44" height="20" rx="10"/>')
        c.text(x + self.w - 30, y + 21, str(now), "count")
        c.text(x + self.w - 30, y + 44, f"↳{reached}", "reached")
        c.parts.append("</a>")


class Empty(Block):
    """A branch with no steps: the flow passes straight through."""

    def __init__(self) -> None:
        self.w, self.h = EMPTY_W, 14

    def draw(self, c: Canvas, x: float, y: float) -> None:
        c.line(x + self.w / 2, y, x + self.w / 2, y + self.h)


class Column(Block):
    """Blocks one under the other, joined by arrows."""

    def __init__(self, blocks: Sequence[Block]) -> None:
        self.blocks = list(blocks) or [Empty()]
        self.w = max(b.w for b in self.blocks)
        self.h = sum(b.h for b in self.blocks) + GAP * (len(self.blocks) - 1)

    def draw(self, c: Canvas, x: float, y: float) -> None:
        mid = x + self.w / 2
        for i, block in enumerate(self.blocks):
            if i:
                c.line(mid, y - GAP, mid, y - 2, arrow=True)
            block.draw(c, mid - block.w / 2, y)
            y += block.h + GAP


class Fork(Block):
    """A node whose flow splits into labelled columns that join again below."""

    def __init__(self, head: Node, branches: Sequence[tuple[str, Block]]) -> None:
        self.head, self.branches = head, list(branches)
        inner = sum(b.w for _, b in self.branches) + COL_GAP * (len(self.branches) - 1)
        self.w = max(head.w, inner)
        self.h = head.h + FORK + max(b.h for _, b in self.branches) + JOIN

    def draw(self, c: Canvas, x: float, y: float) -> None:
        mid = x + self.w / 2
        self.head.draw(c, mid - self.head.w / 2, y)
        inner = sum(b.w for _, b in self.branches) + COL_GAP * (len(self.branches) - 1)
        top, bus = y + self.head.h, y + self.head.h + FORK / 2
        bottom = y + self.h
        c.line(mid, top, mid, bus)
        cx = mid - inner / 2
        centres = []
        for label, block in self.branches:
            centre = cx + block.w / 2
            centres.append(centre)
            c.line(centre, bus, centre, top + FORK - 2, arrow=True)
            c.text(centre + 5, bus + 12, _fit(label, 28), "branch", anchor="start")
            block.draw(c, cx, top + FORK)
            c.line(centre, top + FORK + block.h, centre, bottom - JOIN / 2)
            cx += block.w + COL_GAP
        c.line(min(centres), bus, max(centres), bus)
        c.line(min(centres), bottom - JOIN / 2, max(centres), bottom - JOIN / 2)
        c.line(mid, bottom - JOIN / 2, mid, bottom)


class Loop(Block):
    """A `repeat`: its node and steps in a frame, with an arrow back to the top."""

    def __init__(self, head: Node, body: Block, every: str) -> None:
        self.head, self.body, self.every = head, body, every
        self.w = LOOP + max(head.w, body.w) + 2 * PAD
        self.h = PAD + head.h + GAP + body.h + PAD

    def draw(self, c: Canvas, x: float, y: float) -> None:
        fx, fw = x + LOOP, self.w - LOOP
        c.parts.append(f'<rect class="frame" x="{fx:g}" y="{y:g}" width="{fw:g}" height="{self.h:g}" rx="10"/>')
        mid = fx + fw / 2
        c.line(mid, y, mid, y + PAD)
        self.head.draw(c, mid - self.head.w / 2, y + PAD)
        body_y = y + PAD + self.head.h + GAP
        c.line(mid, body_y - GAP, mid, body_y - 2, arrow=True)
        self.body.draw(c, mid - self.body.w / 2, body_y)
        end = body_y + self.body.h
        c.line(mid, end, mid, y + self.h)
        # The loop back: from below the body, left, up, into the head's side.
        back = x + LOOP / 2
        head_mid = y + PAD + self.head.h / 2
        left = mid - self.head.w / 2
        c.line(mid, end + PAD / 2, back, end + PAD / 2, cls="edge loop")
        c.line(back, end + PAD / 2, back, head_mid, cls="edge loop")
        c.line(back, head_mid, left - 2, head_mid, arrow=True, cls="edge loop")
        c.text(back - 4, (head_mid + end) / 2, self.every, "branch", anchor="end")


class Row(Block):
    """Blocks side by side, top-aligned, not joined (the main flow and the report card's lanes)."""

    def __init__(self, blocks: Sequence[Block]) -> None:
        self.blocks = list(blocks)
        self.w = sum(b.w for b in self.blocks) + LANE_GAP * (len(self.blocks) - 1)
        self.h = max(b.h for b in self.blocks)

    def draw(self, c: Canvas, x: float, y: float) -> None:
        for block in self.blocks:
            block.draw(c, x, y)
            x += block.w + LANE_GAP


# ------------------------------------------------------------------------------- the steps


def summary(step: StepBase) -> str:
    """What a step does, in a few words."""
    text = _summary(step)
    return f"{text} · when …" if step.when else text


def _summary(step: StepBase) -> str:
    if isinstance(step, EmailStep):
        to = f" → {', '.join(step.email.to)}" if step.email.to else ""
        return f"email {step.email.template}{to}" + (" · approval" if step.email.approval else "")
    if isinstance(step, WaitStep):
        return f"wait {format_duration(step.wait)}"
    if isinstance(step, WaitUntilStep):
        until = step.wait_until
        if until.day is not None:
            return f"wait until day {until.day}"
        return f"wait until {until.date}" + (f" {format_duration(until.offset)}" if until.offset else "")
    if isinstance(step, WaitForStep):
        return f"wait for {', '.join(step.wait_for.event)} ≤ {format_duration(step.wait_for.timeout)}"
    if isinstance(step, TaskStep):
        due = f" · due {format_duration(step.task.due)}" if step.task.due else ""
        return f"task for {step.task.owner}{due}" + (" · awaited" if step.task.await_ else "")
    if isinstance(step, UpdateStep):
        return "update " + ", ".join(step.update.fields)
    if isinstance(step, NoteStep):
        return "note on the account"
    if isinstance(step, WebhookStep):
        return f"webhook {step.webhook.method}"
    if isinstance(step, SetStep):
        return "set " + ", ".join(step.set)
    if isinstance(step, IfStep):
        return f"if {step.if_}"
    if isinstance(step, SplitStep):
        return "split " + " / ".join(step.split)
    if isinstance(step, RepeatStep):
        repeat = step.repeat
        limit = f" × {repeat.times}" if repeat.times else (" until …" if repeat.until else "")
        return f"repeat every {format_duration(repeat.every)}{limit}"
    if isinstance(step, StartStep):
        return f"start {step.start.playbook}"
    if isinstance(step, ExitStep):
        return f"exit {step.exit.outcome}"
    return step_kind(step) or "step"


def _node(step: StepBase, path: Path) -> Node:
    name = step_name(step, path)
    return Node(name, name, summary(step), step_kind(step) or "step")


def _steps(steps: Sequence[StepBase], path: Path) -> Column:
    return Column([_block(step, path + (i,)) for i, step in enumerate(steps)])


def _block(step: StepBase, path: Path) -> Block:
    node = _node(step, path)
    if isinstance(step, IfStep):
        return Fork(node, [("then", _steps(step.then, path + ("then",))), ("else", _steps(step.else_, path + ("else",)))])
    if isinstance(step, SplitStep):
        total = sum(v.weight for v in step.split.values())
        return Fork(
            node,
            [
                (f"{variant} {round(100 * spec.weight / total)}%", _steps(spec.steps, path + ("split", variant, "steps")))
                for variant, spec in step.split.items()
            ],
        )
    if isinstance(step, WaitForStep) and step.wait_for.on_timeout:
        timeout = format_duration(step.wait_for.timeout)
        return Fork(node, [("event", Empty()), (f"timeout {timeout}", _steps(step.wait_for.on_timeout, path + ("wait_for", "on_timeout")))])
    if isinstance(step, TaskStep) and step.task.on_overdue:
        return Fork(node, [("done", Empty()), ("overdue", _steps(step.task.on_overdue, path + ("task", "on_overdue")))])
    if isinstance(step, RepeatStep):
        return Loop(node, _steps(step.repeat.steps, path + ("repeat", "steps")), f"every {format_duration(step.repeat.every)}")
    return node


def trigger_words(playbook: Playbook) -> str:
    """The playbook's trigger in a few words."""
    trigger = playbook.trigger
    if isinstance(trigger, EventTrigger):
        events = trigger.event if isinstance(trigger.event, str) else ", ".join(trigger.event)
        return f"on {events}" + (" · when …" if trigger.when else "")
    if isinstance(trigger, DateTrigger):
        return f"on {trigger.date}" + (f" {format_duration(trigger.offset)}" if trigger.offset else "")
    if isinstance(trigger, ScheduleTrigger):
        return f"cron {trigger.schedule}"
    return "started by hand"


def layout(playbook: Playbook) -> Block:
    """The whole picture: start, the steps, end; beside them the report card's lanes."""
    main = Column(
        [
            Node(None, "start", trigger_words(playbook), "terminal"),
            *_steps(playbook.steps, ("steps",)).blocks,
            Node(None, "end", "outcome completed", "terminal"),
        ]
    )
    lanes: list[Block] = [main]
    card = playbook.scorecard
    if card is not None:
        for i, checkpoint in enumerate(card.checkpoints):
            head = Node(None, f"checkpoint day {checkpoint.day}", f"when the score is below {checkpoint.below:g}", "lane")
            lanes.append(Column([head, *_steps(checkpoint.steps, ("scorecard", "checkpoints", i, "steps")).blocks]))
        if card.on_miss:
            head = Node(None, f"on miss, day {card.target.by_day}", f"when the score is below {card.target.score:g}", "lane")
            lanes.append(Column([head, *_steps(card.on_miss, ("scorecard", "on_miss")).blocks]))
    return Row(lanes)


def render(playbook: Playbook, *, counts: Counts, link: Callable[[str], str]) -> tuple[Markup, int]:
    """The playbook as an SVG element, and how many step nodes it has."""
    block = layout(playbook)
    margin = 12
    canvas = Canvas(counts=counts, link=link)
    block.draw(canvas, margin, margin)
    width, height = block.w + 2 * margin, block.h + 2 * margin
    title = escape(f"{playbook.name or playbook.playbook}: the journey, step by step")
    svg = (
        f'<svg class="journey" xmlns="http://www.w3.org/2000/svg" width="{width:g}" height="{height:g}" '
        f'viewBox="0 0 {width:g} {height:g}" role="img" aria-labelledby="journey-title">'
        f'<title id="journey-title">{title}</title>'
        '<defs><marker id="arrow" viewBox="0 0 10 10" refX="9" refY="5" markerWidth="7" markerHeight="7" orient="auto-start-reverse">'
        '<path d="M 0 0 L 10 5 L 0 10 z" class="arrowhead"/></marker></defs>'
        + "".join(canvas.parts)
        + "</svg>"
    )
    return Markup(svg), canvas.nodes


def runs_link(playbook_id: str, version: str) -> Callable[[str], str]:
    """Where a node links: the runs of that version now at that step."""
    return lambda name: "/console/runs?" + urlencode({"playbook": playbook_id, "version": version, "step": name, "status": "in_flight"})
