"""`touchpoint forecast`: what a playbook would do to a book of accounts, before it goes live.

Contract section 14. Every account the playbook would enroll in the window is run, as
`touchpoint simulate` runs one: the same interpreter (`touchpoint.engine.machine`) hosted
without a server (`touchpoint.engine.local.run_local`), with the events file applied to each
run from its own start. An event or manual trigger enrolls the accounts whose trigger `when`
holds at `--start` (with `event.data` empty); a date trigger enrolls each account at its own
moment (06:00 in its zone on date + offset) when that falls in the window (`catch_up` as in
production). A schedule playbook runs once per tick, not per account: it is refused.

What is counted, per day of the window in the workspace's zone: emails sent, by template;
tasks created, by owner; approvals requested, by approver; webhooks called; and the emails
that were held by a send window, a holiday or the frequency cap (on the day they went out).
Weeks run Monday to Sunday; `peak_week` is each owner's busiest week. Nothing is written to
the store and nothing is sent: effects are answered in memory by `ForecastEffects`, which
renders no text (a count needs an email's template and a task's owner, not their words; a
template that does not exist still fails its email, as in `simulate`).

Two things make 10,000 accounts over 90 days take seconds (`python -m bench --only forecast`):
an account that would make the same decisions as one already run is counted from that run
(`touchpoint.forecast_replay`, which checks every expression that reads the account), and the
accounts are spread over the machine's cores (forked worker processes, each enrolling and
running a share of the accounts and returning its counts). The window is ``[start, end)``: a
step due at its very end belongs to the next day, outside it.
"""

from __future__ import annotations

import os
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, time, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

from touchpoint.dsl import expressions as ex
from touchpoint.dsl.accounts import AccountDoc
from touchpoint.dsl.runtime import (
    EffectResult,
    EventIn,
    SendEmailResult,
    StepRecord,
    TaskInput,
    TaskResult,
    build_context,
)
from touchpoint.dsl.schema import DateTrigger, Playbook, ScheduleTrigger
from touchpoint.dsl.timing import as_date, zone
from touchpoint.dsl.workspace import Workspace
from touchpoint.engine.effects import LocalEffects
from touchpoint.engine.local import Scripted, run_local
from touchpoint.engine.people import stable_id, task_owner
from touchpoint.engine.program import Effect, Program

if TYPE_CHECKING:
    from touchpoint.forecast_replay import Replays

PARALLEL_FROM = 400
"""Accounts from which the runs are spread over worker processes (below, forking costs more)."""
COUNTED = frozenset({"email", "task", "webhook", "approval"})


class ForecastError(ValueError):
    """A forecast that cannot be made as asked (a schedule playbook)."""


@dataclass(frozen=True)
class Enrollment:
    """One run the forecast makes: the account, when it starts, and the event that started it."""

    account: AccountDoc
    at: datetime
    trigger: EventIn


class ForecastEffects(LocalEffects):
    """`LocalEffects` that render nothing: emails resolve their template (a missing one fails
    the email as in `simulate`), tasks get their owner, notes, updates and webhooks answer at
    once; the frequency cap is counted per contact as in `simulate`."""

    def __init__(self, templates: Path, resolved: dict[tuple[str, tuple[str, ...]], str | None]) -> None:
        super().__init__(templates)
        self.resolved = resolved

    def _perform(self, effect: Effect) -> Any:
        kind, input = effect.kind, effect.input
        if kind == "send_email":
            problem = self._resolve(input.template, tuple(input.locales))
            if problem is not None:
                raise ex.ExpressionError(problem)
            return SendEmailResult(status="sent", to=input.recipient.email, template=input.template)
        if kind == "create_task":
            assert isinstance(input, TaskInput)
            owner, note = task_owner(input.owner, input.account, input.fallback_owner)
            return TaskResult(task_id=stable_id("task", input.key), title=input.title, owner=owner, due_at=input.due_at, owner_note=note)
        if kind in ("add_note", "update_fields"):
            return EffectResult()
        if kind == "call_webhook":
            return EffectResult(detail={"url": input.url, "status": None, "simulated": True})
        return super()._perform(effect)

    def _resolve(self, template: str, locales: tuple[str, ...]) -> str | None:
        key = (template, locales)
        if key not in self.resolved:
            from touchpoint.email.errors import TemplateError
            from touchpoint.email.render import resolve_parts

            try:
                resolve_parts(self.templates, template, locales)
                self.resolved[key] = None
            except TemplateError as exc:
                self.resolved[key] = str(exc)
        return self.resolved[key]


class Tally:
    """Counts per (day, kind, key) from timeline records, as they stream."""

    def __init__(self, tz: str, end: datetime) -> None:
        self.zone = zone(tz)
        self.end = end
        self.counts: Counter[tuple[int, str, str]] = Counter()
        self.outcomes: Counter[str] = Counter()
        self.warnings: Counter[str] = Counter()
        self.enrolled = 0
        self.refused: Counter[str] = Counter()
        """Trigger errors (an account whose `when` fails is not enrolled), with their counts."""
        self.replayed = 0
        """Accounts counted by replaying a recorded run (`touchpoint.forecast_replay`)."""

    def add(self, record: StepRecord) -> None:
        """Count one timeline record (steps that failed or were skipped count nothing)."""
        action = record.action
        if action not in COUNTED:
            return
        if record.at >= self.end:
            return  # due at the window's very end (a day-90 judgement at midnight): the next day's
        detail = record.detail
        status = detail.get("status")
        day = record.at.astimezone(self.zone).toordinal()
        if action == "approval":
            if status == "requested":
                self.counts[(day, "approval", str(detail.get("by") or "unassigned"))] += 1
            return
        if status is not None:
            return
        if action == "email":
            self.counts[(day, "email", str(detail.get("template")))] += 1
            if detail.get("held"):
                self.counts[(day, "held", "")] += 1
        elif action == "task":
            self.counts[(day, "task", str(detail.get("owner")))] += 1
        else:
            self.counts[(day, "webhook", "")] += 1

    def merge(self, other: Tally) -> None:
        """Add another tally's counts (a worker's share)."""
        self.counts.update(other.counts)
        self.outcomes.update(other.outcomes)
        self.warnings.update(other.warnings)
        self.replayed += other.replayed
        self.enrolled += other.enrolled
        self.refused.update(other.refused)


@dataclass
class Forecast:
    """What a forecast found: counts per day, the window, and who was enrolled."""

    playbook: str
    start: datetime
    end: datetime
    tz: str
    considered: int
    enrolled: int
    tally: Tally
    warnings: list[str] = field(default_factory=list)

    def dates(self) -> list[date]:
        """Every day the window touches, in the workspace's zone (`days` of them from a midnight)."""
        first = self.start.astimezone(zone(self.tz)).date()
        last = (self.end - timedelta(microseconds=1)).astimezone(zone(self.tz)).date()
        return [first + timedelta(days=n) for n in range((last - first).days + 1)]

    def daily(self) -> list[dict[str, Any]]:
        """One object per day, empty days included (the `--json` lines before the summary)."""
        by_day: dict[int, dict[str, Any]] = {}
        for day in self.dates():
            by_day[day.toordinal()] = {"date": day.isoformat(), "emails": {}, "tasks": {}, "approvals": {}, "webhooks": 0, "held": 0}
        plural = {"email": "emails", "task": "tasks", "approval": "approvals"}
        for (ordinal, kind, key), n in sorted(self.tally.counts.items()):
            item = by_day[ordinal]
            if kind in plural:
                item[plural[kind]][key] = n
            else:
                item[kind + "s" if kind == "webhook" else kind] += n
        return list(by_day.values())

    def weeks(self) -> list[dict[str, Any]]:
        """The days summed by week (Monday to Sunday; the first and last may be partial)."""
        out: dict[date, dict[str, Any]] = {}
        for item in self.daily():
            day = date.fromisoformat(item["date"])
            monday = day - timedelta(days=day.weekday())
            week = out.setdefault(monday, {"week": monday.isoformat(), "emails": Counter(), "tasks": Counter(), "approvals": Counter(), "webhooks": 0, "held": 0})
            for kind in ("emails", "tasks", "approvals"):
                week[kind].update(item[kind])
            week["webhooks"] += item["webhooks"]
            week["held"] += item["held"]
        return list(out.values())

    def summary(self) -> dict[str, Any]:
        """The last `--json` line's object: totals, accounts enrolled, each owner's busiest week."""
        totals: Counter[str] = Counter()
        for (_, kind, _key), n in self.tally.counts.items():
            totals[kind] += n
        peak: dict[str, int] = {}
        for week in self.weeks():
            for owner, n in week["tasks"].items():
                peak[owner] = max(peak.get(owner, 0), n)
        return {"emails": totals["email"], "tasks": totals["task"], "accounts": self.enrolled, "peak_week": dict(sorted(peak.items()))}


def forecast(
    playbook_file: Path,
    *,
    accounts: str | Path = "store",
    events_file: Path | None = None,
    days: int = 90,
    start: datetime | date | None = None,
    jobs: int | None = None,
    replay: bool = True,
    database_url: str | None = None,
    warn: Callable[[str], None] | None = None,
) -> Forecast:
    """Forecast ``playbook_file`` over ``accounts`` for ``days`` from ``start``.

    ``start`` defaults to today's midnight in the workspace's zone, and a date means its
    midnight there (then the window is exactly ``days`` days). ``jobs`` is the number of worker
    processes (default: one per core from `PARALLEL_FROM` accounts). ``replay=False`` runs every
    account in full instead of replaying recorded runs for accounts that decide alike
    (`touchpoint.forecast_replay`).

    Raises:
        ContractError: the playbook, an account or the events file is not valid.
        ForecastError: the playbook has a schedule trigger.
    """
    from touchpoint.dsl.validate import load_project
    from touchpoint.forecast_replay import replayable
    from touchpoint.portfolio import load_portfolio
    from touchpoint.simulate import listens, load_events

    project = load_project(playbook_file)
    project.raise_for_problems()
    (loaded,) = project.playbooks.values()
    playbook, workspace = loaded.playbook, project.workspace
    if isinstance(playbook.trigger, ScheduleTrigger):
        raise ForecastError(f"{playbook_file}: `{playbook.playbook}` has a schedule trigger: it runs once per tick over all accounts, not per account, so there is nothing to forecast per account")
    events = load_events(events_file) if events_file else []
    notes: list[str] = []

    def note(text: str) -> None:
        notes.append(text)
        if warn is not None:
            warn(text)

    for kind in sorted({e.type for e in events if e.type is not None and not listens(playbook, e.type)}):
        note(f"{events_file}: no part of {playbook.playbook} listens to `{kind}`: it would be quiet and reach no run")
    book = load_portfolio(accounts, workspace, database_url=database_url, warn=note)
    if start is None or not isinstance(start, datetime):
        start = _midnight(start or datetime.now(UTC), workspace.timezone)
    begin = start.astimezone(UTC)
    end = begin + timedelta(days=days)
    program = Program(playbook, workspace, loaded.version)
    job = _Job(program, project.root / "templates", book, events, begin, end, workspace.timezone, replay and replayable(events))
    tally = _run(job, jobs)
    for text, n in sorted(tally.refused.items()):
        note(f"trigger of {playbook.playbook}: {text}: {n} account{'s' if n != 1 else ''} not enrolled")
    for text, n in sorted(tally.warnings.items()):
        note(f"{text} ({n} runs)" if n > 1 else text)
    return Forecast(playbook.playbook, begin, end, workspace.timezone, len(book), tally.enrolled, tally, notes)


def enroll(playbook: Playbook, workspace: Workspace, account: AccountDoc, start: datetime, end: datetime) -> Enrollment | None:
    """The run the playbook's trigger would start for ``account`` in ``[start, end)``, if any.

    Raises:
        ExpressionError: the trigger's `when` (or a date trigger's `date`) failed for it.
    """
    trigger = playbook.trigger
    tz = account.timezone or workspace.timezone
    if isinstance(trigger, DateTrigger):
        found = _date_enrollment(playbook, trigger, account, tz, start, end)
        if found is None:
            return None
        at, event = found
    else:
        at = start
        event = EventIn(type=_trigger_type(playbook), at=start, data={})
    when = getattr(trigger, "when", None)
    if when is not None:
        context = build_context(account=account, event=event, run=None, now=at, tz=tz, names=ex.root_names(when))
        if not ex.is_true(when, context):
            return None
    return Enrollment(account, at, event)


def _date_enrollment(playbook: Playbook, trigger: DateTrigger, account: AccountDoc, tz: str, start: datetime, end: datetime) -> tuple[datetime, EventIn] | None:
    from touchpoint.dsl.durations import format_duration
    from touchpoint.dsl.sweep_models import catch_up_reach, trigger_moment

    context = build_context(account=account, event=None, run=None, now=start, tz=tz, names=ex.root_names(trigger.date))
    value = as_date(ex.evaluate(trigger.date, context), tz)
    if value is None:
        return None
    try:
        moment = trigger_moment(value, trigger.offset, tz)
    except (ValueError, OverflowError):
        return None
    if start <= moment < end:
        at = moment
    elif trigger.catch_up and start - catch_up_reach(trigger.offset) < moment < start:
        at = start
    else:
        return None
    data = {"playbook": playbook.playbook, "date": value.isoformat(), "offset": format_duration(trigger.offset)}
    return at, EventIn(type="date.reached", account_id=account.id, at=at, data=data)
    return None


def _trigger_type(playbook: Playbook) -> str:
    event = getattr(playbook.trigger, "event", None)
    if isinstance(event, list):
        return str(event[0])
    return str(event or "manual")


def _midnight(at: datetime | date, tz: str) -> datetime:
    local = at.astimezone(zone(tz)).date() if isinstance(at, datetime) else at
    return datetime.combine(local, time(0), tzinfo=zone(tz))


# ---------------------------------------------------------------------------- running


@dataclass
class _Job:
    program: Program
    templates: Path
    accounts: list[AccountDoc]
    events: list[Scripted]
    start: datetime
    end: datetime
    tz: str
    replay: bool = True


_forked: _Job | None = None
"""The job a forked worker inherits from its parent (nothing is pickled but the counts)."""
_replays: tuple[_Job, Replays] | None = None


def _run(job: _Job, jobs: int | None) -> Tally:
    count = len(job.accounts)
    workers = jobs if jobs is not None else (_cores() if count >= PARALLEL_FROM else 1)
    workers = max(1, min(workers, count))
    if workers == 1:
        return _run_share(job, range(count))
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor

    global _forked
    _forked = job
    # Several shares per worker even out accounts that take longer than others; each worker
    # enrolls and runs the accounts of its shares.
    shares = workers * 4
    bounds = [(count * i // shares, count * (i + 1) // shares) for i in range(shares)]
    tally = Tally(job.tz, job.end)
    try:
        with ProcessPoolExecutor(max_workers=workers, mp_context=multiprocessing.get_context("fork")) as pool:
            for part in pool.map(_run_forked, bounds):
                tally.merge(part)
    finally:
        _forked = None
    return tally


def _run_forked(bounds: tuple[int, int]) -> Tally:
    assert _forked is not None, "a forecast worker runs in a process forked by `_run`"
    return _run_share(_forked, range(*bounds))


def _run_share(job: _Job, indexes: range) -> Tally:
    from dataclasses import replace

    from touchpoint.forecast_replay import Leaf, Recorder, Replays

    global _replays
    tally = Tally(job.tz, job.end)
    resolved: dict[tuple[str, tuple[str, ...]], str | None] = {}
    replays = None
    if job.replay:
        # One per process and job: the shares a worker takes learn from each other.
        if _replays is None or _replays[0] is not job:
            _replays = (job, Replays(job.program.playbook, job.program.workspace))
        replays = _replays[1]
    replayed = replays.replayed if replays is not None else 0
    program = job.program
    for index in indexes:
        try:
            item = enroll(program.playbook, program.workspace, job.accounts[index], job.start, job.end)
        except ex.ExpressionError as exc:
            tally.refused[str(exc)] += 1
            continue
        if item is None:
            continue
        tally.enrolled += 1
        run_id = f"forecast-{index}"
        key = None
        if replays is not None:
            key = replays.fingerprint(item.account, (item.at, item.trigger.type, tuple(sorted(item.trigger.data.items()))))
            leaf = replays.replay(key, item.account, run_id)
            if leaf is not None:
                tally.counts.update(dict(leaf.counts))
                tally.outcomes[leaf.outcome] += 1
                tally.warnings.update(leaf.warnings)
                continue
        recorder = Recorder() if replays is not None else None
        own = Tally(job.tz, job.end)
        seen: set[str] = set()
        result = run_local(
            program if recorder is None else replace(program, observe=recorder),
            item.account,
            templates=job.templates,
            start=item.at,
            horizon=job.end - item.at,
            trigger=item.trigger,
            events=job.events,
            run_id=run_id,
            sink=own.add,
            warn=seen.add,
            effects=ForecastEffects(job.templates, resolved),
        )
        tally.counts.update(own.counts)
        tally.outcomes[result.outcome] += 1
        tally.warnings.update(seen)
        if replays is not None and recorder is not None:
            replays.record(key, recorder.checks, Leaf.of(item.account, replays.literal, own.counts, result.outcome, frozenset(seen)))
    tally.replayed = (replays.replayed - replayed) if replays is not None else 0
    return tally


def _cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - not Linux
        return os.cpu_count() or 1
