"""Keeping the analytics rollups (`rollup_models`) current, and filling them from existing rows.

The counts change in the transaction that changes what they count, and only when it does:

- a run counts once in `analytics_runs`, under the key of its row (`run_key`); `upsert_run`, the
  one writer of run rows, moves it from the old key to the new one when its variant, status,
  outcome, version or holdout window changes, so a retried or stale projection moves nothing;
- a timeline line counts when `add_run_step` inserts it (a line already there is not inserted
  again), and only for what the run had not reached at that step before (`line_metrics`);
- an email counts when `add_message` stores it (a retried send finds its ledger key);
- engagement counts once per message and kind (`analytics_marks`), whatever the provider resends.

`fill` recounts everything from the rows with the same rules (migration 0009, and the bench that
seeds rows in bulk).
"""

from __future__ import annotations

import datetime as dt
import math
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol, cast

from sqlalchemy import Table, bindparam, insert, select
from sqlalchemy.orm import Session

from .columns import UTC
from .common import dialect_of, insert_ignore, upsert_insert
from .db import defer
from .models import Event, Message, Run, RunStep
from .rollup_models import EngagementMark, GapRollup, RunRollup, StepRollup

NOT_STEPS = frozenset({"milestone", "held_out", "enrolled", "warning", "paused", "approval", "task_overdue"})
"""Timeline actions that are not a step running: the scorecard, the holdout, a pause, an
approval's request and decision (the email step's own line follows), an overdue task's notice."""

ENGAGEMENT = {
    "email.delivered": "delivered",
    "email.opened": "opened",
    "email.clicked": "clicked",
    "email.bounced": "bounced",
    "email.unsubscribed": "unsubscribed",
}
"""The provider's events (section 9's `email.*` types) and the metric each counts."""

BUCKETS_PER_DOUBLING = 4
"""Gap histogram resolution: a bucket's middle is within 2^(1/8), about 9%, of any gap in it."""

RunKey = tuple[str, str, dt.date, str, bool, str, str, str]


class RunOfLine(Protocol):
    """What `count_line` reads of a run: a `Run`, or a row with these columns."""

    @property
    def playbook_id(self) -> str: ...
    @property
    def version(self) -> str: ...
    @property
    def started_at(self) -> dt.datetime: ...


@dataclass(frozen=True)
class RunOf:
    """A run's three columns its lines and emails count under, when the caller has them."""

    playbook_id: str
    version: str
    started_at: dt.datetime


class RunLike(RunOfLine, Protocol):
    """What `run_key` reads: a `Run`, or a row selected with the same column names."""

    @property
    def ended_at(self) -> dt.datetime | None: ...
    @property
    def enrolled_until(self) -> dt.datetime | None: ...
    @property
    def variant(self) -> str | None: ...
    @property
    def held_out(self) -> bool: ...
    @property
    def status(self) -> str: ...
    @property
    def outcome(self) -> str | None: ...


@dataclass(frozen=True)
class Line:
    """What the rollups read of a timeline line."""

    step: str
    action: str
    detail: Mapping[str, Any]
    at: dt.datetime


def enrollment_day(started_at: dt.datetime) -> dt.date:
    """The day (UTC) a run started: the rollups' time key."""
    return started_at.astimezone(UTC).date()


def run_key(run: RunLike) -> RunKey:
    """The `analytics_runs` key a run counts under.

    The holdout window is 'reached' when the run converted by its `enrolled_until` (section 13:
    goal rates are compared within `for` of enrollment), 'missed' otherwise, and 'none' for a
    version without a holdout.
    """
    window = "none"
    if run.enrolled_until is not None:
        reached = run.outcome == "converted" and run.ended_at is not None and run.ended_at <= run.enrolled_until
        window = "reached" if reached else "missed"
    return (
        run.playbook_id, run.version, enrollment_day(run.started_at), run.variant or "", bool(run.held_out),
        run.status, run.outcome or "", window,
    )


def _reach(line: Line) -> tuple[str, ...]:
    """The per-run reach metrics one line gives its step (none for a line that is no step)."""
    if line.action in NOT_STEPS:
        return ()
    status = line.detail.get("status")
    return ("entered", "failed" if status == "failed" else "skipped" if status == "skipped" else "passed")


def gap_bucket(seconds: float) -> int:
    """The histogram bucket of a gap: quarter-octaves of seconds (`BUCKETS_PER_DOUBLING`)."""
    return 0 if seconds <= 1 else math.floor(BUCKETS_PER_DOUBLING * math.log2(seconds))


def bucket_middle(bucket: int) -> float:
    """The geometric middle of a bucket, in seconds: what a median in that bucket is reported as."""
    return 1.0 if bucket <= 0 else float(2 ** ((bucket + 0.5) / BUCKETS_PER_DOUBLING))


def line_metrics(prior: Sequence[Line], line: Line, started_at: dt.datetime) -> tuple[list[str], int | None]:
    """What a new timeline line adds to its step's counts, given the run's earlier lines.

    Reach counts runs: `entered`, `passed`, `skipped` and `failed` each count a run once per step,
    however many lines (recipients, `repeat` rounds) the step writes. `held` counts emails. The
    gap bucket is given with the run's first line at the step: the time since the run's latest
    line of another step (or its start).
    """
    reach = _reach(line)
    done = {metric for p in prior if p.step == line.step for metric in _reach(p)}
    metrics = [m for m in reach if m not in done]
    if line.action == "email" and line.detail.get("held"):
        metrics.append("held")
    gap = None
    if "entered" in metrics:
        since = max((p.at for p in prior if p.step != line.step and _reach(p) and p.at <= line.at), default=started_at)
        gap = gap_bucket((line.at - since).total_seconds())
    return metrics, gap


# --- writes --------------------------------------------------------------------------------


def _bump(s: Session, model: type[RunRollup | StepRollup | GapRollup], key: Mapping[str, Any], column: str, n: int) -> None:
    """Add ``n`` to a rollup row's count, creating the row (``INSERT ... ON CONFLICT DO UPDATE``)."""
    _bump_many(s, model, [key], column, n)


_BUMPS: dict[tuple[str, Table, str], tuple[Any, tuple[str, ...]]] = {}
"""Each rollup table's bump statement, with its key columns, per dialect and counted column."""


def _bump_many(s: Session, model: type[RunRollup | StepRollup | GapRollup], keys: Sequence[Mapping[str, Any]], column: str, n: int) -> None:
    """`_bump` for several rows in one execution."""
    _bump_rows(s, model, [{**key, column: n} for key in keys], column)


def _bump_rows(s: Session, model: type[RunRollup | StepRollup | GapRollup], rows: Sequence[Mapping[str, Any]], column: str) -> None:
    """Add each row's ``column`` value to its rollup row, in one execution (the statement is
    built once per table)."""
    if not rows:
        return
    table = cast(Table, model.__table__)
    cache = (dialect_of(s), table, column)
    built = _BUMPS.get(cache)
    if built is None:
        insert = upsert_insert(s, table)
        primary = tuple(c.name for c in table.primary_key.columns)
        built = _BUMPS[cache] = (insert.on_conflict_do_update(index_elements=primary, set_={column: table.c[column] + insert.excluded[column]}), primary)
    stmt, primary = built
    defer(s, stmt, rows, key=primary, add=column)


def _run_fields(key: RunKey) -> dict[str, Any]:
    names = ("playbook_id", "version", "day", "variant", "held_out", "status", "outcome", "window")
    return dict(zip(names, key, strict=True))


def move_run(s: Session, old: RunKey | None, new: RunKey) -> None:
    """Count a run under ``new`` instead of ``old`` (None for a new run); nothing when they are equal."""
    if old == new:
        return
    moves = sorted(((old, -1), (new, 1)), key=lambda item: str(item[0]))  # one lock order on PostgreSQL
    _bump_rows(s, RunRollup, [{**_run_fields(key), "runs": n} for key, n in moves if key is not None], "runs")


def timeline(s: Session, run_id: str) -> list[Line]:
    """A run's lines as `line_metrics` reads them (one indexed read of a run's few lines)."""
    rows = s.execute(_TIMELINE, {"run_id": run_id})
    return [Line(step, action, detail or {}, at) for step, action, detail, at in rows]


_TIMELINE = select(RunStep.step, RunStep.action, RunStep.detail, RunStep.at).where(RunStep.run_id == bindparam("run_id"))


_RUNS = cast(Table, Run.__table__)
RUN_OF_LINE = select(_RUNS.c.playbook_id, _RUNS.c.version, _RUNS.c.started_at).where(_RUNS.c.id == bindparam("run_id"))
"""The three columns of a run that its timeline lines and emails are counted under (`RunOfLine`)."""


def count_line(s: Session, run: RunOfLine, prior: Sequence[Line], line: Line) -> None:
    """Count a timeline line just inserted, given the run's lines before it."""
    metrics, gap = line_metrics(prior, line, run.started_at)
    base = {"playbook_id": run.playbook_id, "version": run.version, "day": enrollment_day(run.started_at), "step": line.step}
    _bump_many(s, StepRollup, [{**base, "metric": metric} for metric in metrics], "count", 1)
    if gap is not None:
        _bump(s, GapRollup, {**base, "bucket": gap}, "count", 1)


def count_message(s: Session, run_id: str | None, step: str | None, status: str, *, run: RunOfLine | None = None) -> None:
    """Count an email just stored under its step, by status (`email:sent`, `email:failed`...);
    ``run``, when the caller has it, saves reading the run's row."""
    if run is None and run_id:
        run = s.execute(RUN_OF_LINE, {"run_id": run_id}).first()
    if run is None or step is None:
        return  # not a run's email (a test send): no playbook version to count it under
    key = {"playbook_id": run.playbook_id, "version": run.version, "day": enrollment_day(run.started_at), "step": step}
    _bump(s, StepRollup, {**key, "metric": f"email:{status}"}, "count", 1)


def count_engagement(s: Session, message_id: str, event_type: str) -> bool:
    """Count a provider event (`email.opened`...) for its message, once per message and kind.

    Returns:
        False when that message was counted for that kind already, or is not a run's email.
    """
    metric = ENGAGEMENT.get(event_type)
    message = s.get(Message, message_id)
    run = s.get(Run, message.run_id) if message is not None and message.run_id else None
    if metric is None or message is None or run is None or message.step is None:
        return False
    if not insert_ignore(s, EngagementMark, {"message_id": message_id, "metric": metric}):
        return False
    key = {"playbook_id": run.playbook_id, "version": run.version, "day": enrollment_day(run.started_at), "step": message.step}
    _bump(s, StepRollup, {**key, "metric": metric}, "count", 1)
    return True


# --- fill ----------------------------------------------------------------------------------

_CHUNK = 10_000


def _insert_all(s: Session, model: type[Any], rows: Iterable[dict[str, Any]]) -> None:
    batch: list[dict[str, Any]] = []
    for row in rows:
        batch.append(row)
        if len(batch) == _CHUNK:
            s.execute(insert(model), batch)
            batch = []
    if batch:
        s.execute(insert(model), batch)


def fill(s: Session) -> None:
    """Count every run, timeline line, email and recorded engagement event into empty rollups.

    The same rules as the writes above, over the rows in order (a run's lines by `seq`), so a
    store filled by migration 0009 and one kept current from the start hold the same counts.
    Engagement is recounted from the `email.*` events the account workflows recorded.
    """
    runs: Counter[RunKey] = Counter()
    started: dict[str, tuple[str, str, dt.datetime]] = {}
    columns = (Run.playbook_id, Run.version, Run.started_at, Run.ended_at, Run.enrolled_until, Run.variant, Run.held_out, Run.status, Run.outcome)
    for row in s.execute(select(Run.id, *columns)).yield_per(_CHUNK):
        runs[run_key(row)] += 1
        started[row.id] = (row.playbook_id, row.version, row.started_at)
    _insert_all(s, RunRollup, ({**_run_fields(key), "runs": n} for key, n in runs.items()))

    steps: Counter[tuple[str, str, dt.date, str, str]] = Counter()
    gaps: Counter[tuple[str, str, dt.date, str, int]] = Counter()
    lines = select(RunStep.run_id, RunStep.step, RunStep.action, RunStep.detail, RunStep.at).order_by(RunStep.run_id, RunStep.seq, RunStep.id)
    current, prior = "", list[Line]()
    for run_id, step, action, detail, at in s.execute(lines).yield_per(_CHUNK):
        if run_id != current:
            current, prior = run_id, []
        if run_id not in started:
            continue
        playbook, version, began = started[run_id]
        line = Line(step, action, detail or {}, at)
        metrics, gap = line_metrics(prior, line, began)
        prior.append(line)
        day = enrollment_day(began)
        for metric in metrics:
            steps[(playbook, version, day, step, metric)] += 1
        if gap is not None:
            gaps[(playbook, version, day, step, gap)] += 1

    messages = select(Message.id, Message.run_id, Message.step, Message.status).where(Message.run_id.is_not(None), Message.step.is_not(None))
    placed: dict[str, tuple[str, str, dt.date, str]] = {}
    marks = {
        (str(data.get("message_id")), ENGAGEMENT[type_])
        for type_, data in s.execute(select(Event.type, Event.data).where(Event.type.in_(ENGAGEMENT)))
        if isinstance(data, dict) and data.get("message_id")
    }
    wanted = {message_id for message_id, _ in marks}
    for message_id, run_id, step, status in s.execute(messages).yield_per(_CHUNK):
        if run_id not in started:
            continue
        playbook, version, began = started[run_id]
        where = (playbook, version, enrollment_day(began), str(step))
        steps[(*where, f"email:{status}")] += 1
        if message_id in wanted:
            placed[message_id] = where
    kept = sorted(mark for mark in marks if mark[0] in placed)
    for message_id, metric in kept:
        steps[(*placed[message_id], metric)] += 1
    _insert_all(s, EngagementMark, ({"message_id": m, "metric": metric} for m, metric in kept))
    names = ("playbook_id", "version", "day", "step")
    _insert_all(s, StepRollup, ({**dict(zip(names, key[:4], strict=True)), "metric": key[4], "count": n} for key, n in steps.items()))
    _insert_all(s, GapRollup, ({**dict(zip(names, key[:4], strict=True)), "bucket": key[4], "count": n} for key, n in gaps.items()))
