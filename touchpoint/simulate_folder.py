"""`touchpoint simulate FOLDER`: every playbook one account would enter, side by side.

The account arrives at `--start` as a new account (its `account.created`) and its events file is
played; every account playbook of the folder (event, date and manual triggers; schedule
playbooks run per tick, not per account) is hosted as the account's workflow would host it
(`touchpoint.engine.local.run_account`): event triggers fire on the account's derived events and
on the file's events (`trigger.when` and `reenroll` apply, one run of a playbook at a time), a
date trigger whose moment falls in the window starts its playbook then (its `when` checked at
that moment; the moment is computed from the account as it arrives), a manual playbook starts
only when named (`--manual`), and `start` steps start what they name. One clock, and one
frequency cap shared by every run, as in production. Nothing is stored and nothing is sent.

The timeline's rows are those of `touchpoint simulate --json` with the run's `playbook`; then
one line per playbook: the runs it entered (how each started and ended) and, for the others,
why they did not start.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from touchpoint.dsl import expressions as ex
from touchpoint.dsl.accounts import AccountDoc
from touchpoint.dsl.listening import combined, of_playbook
from touchpoint.dsl.runtime import EventIn, StepRecord, build_context
from touchpoint.dsl.schema import DateTrigger, EventTrigger, Playbook
from touchpoint.dsl.timing import run_day, zone
from touchpoint.dsl.validate import Project, load_project
from touchpoint.engine.effects import LocalEffects
from touchpoint.engine.local import Scripted, TimedStart, run_account
from touchpoint.engine.program import Program
from touchpoint.engine.state import RunState
from touchpoint.simulate import HIDDEN_ACTIONS, load_account, load_events

Sink = Callable[[str, StepRecord], None]
"""Receives each timeline line with the id of the playbook whose run wrote it."""


@dataclass
class Entered:
    """One run the account entered: what started it, when, and how it ended."""

    playbook: str
    trigger: str
    started: datetime
    outcome: str
    because: str
    at: datetime
    day: int


@dataclass
class FolderSimulated:
    """The runs of a folder simulation, the playbooks not entered (with why) and the timeline."""

    account: AccountDoc
    start: datetime
    entered: list[Entered]
    skipped: dict[str, str]
    records: list[tuple[str, StepRecord]] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)


def simulate_folder(
    folder: Path,
    account_file: Path,
    *,
    events_file: Path | None = None,
    start: datetime | None = None,
    days: int = 730,
    manual: Sequence[str] = (),
    sink: Sink | None = None,
    warn: Callable[[str], None] | None = None,
) -> FolderSimulated:
    """Every account playbook of ``folder`` that the account and its events would start, on one
    clock with one frequency cap, until ``days`` have passed (see the module docstring).

    ``manual`` names manual playbooks to start at ``start``. ``sink`` receives each timeline line
    as it happens (then `FolderSimulated.records` stays empty).

    Raises:
        ContractError: the folder, the account or the events file is not valid.
        ValueError: ``manual`` names no manual playbook of the folder.
    """
    project = load_project(folder)
    project.raise_for_problems()
    for name in manual:
        loaded = project.playbooks.get(name)
        if loaded is None or loaded.playbook.trigger_kind != "manual":
            known = ", ".join(sorted(n for n, lp in project.playbooks.items() if lp.playbook.trigger_kind == "manual")) or "none"
            raise ValueError(f"--manual {name}: not a manual playbook of {folder} (its manual playbooks: {known})")
    account = load_account(account_file, project.workspace)
    events = load_events(events_file) if events_file else []
    return simulate_account(project, account, events=events, start=start or datetime.now(UTC), days=days, manual=manual, sink=sink, warn=warn, events_name=str(events_file))


def simulate_account(
    project: Project,
    account: AccountDoc,
    *,
    start: datetime,
    days: int,
    events: Sequence[Scripted] = (),
    manual: Sequence[str] = (),
    sink: Sink | None = None,
    warn: Callable[[str], None] | None = None,
    effects: LocalEffects | None = None,
    events_name: str = "the events file",
) -> FolderSimulated:
    """`simulate_folder` for a loaded project and account (``effects`` shared by every run:
    `validate` passes one that renders nothing)."""
    warnings: list[str] = []

    def note(text: str) -> None:
        warnings.append(text)
        if warn is not None:
            warn(text)

    begin = start.astimezone(UTC)
    end = begin + timedelta(days=days)
    tz = account.timezone or project.workspace.timezone
    programs: dict[str, Program] = {}
    skipped: dict[str, str] = {}
    starts: list[TimedStart] = []
    for name in sorted(project.playbooks):
        loaded = project.playbooks[name]
        playbook, kind = loaded.playbook, loaded.playbook.trigger_kind
        if kind == "schedule":
            skipped[name] = "a schedule playbook: it runs once per tick, not per account"
            continue
        programs[name] = Program(playbook, project.workspace, loaded.version)
        if kind == "manual":
            if name in manual:
                starts.append(TimedStart(at=begin, playbook=name, event=EventIn(type="manual", at=begin)))
            else:
                skipped[name] = "manual: started only on request (name it with --manual)"
        elif isinstance(playbook.trigger, DateTrigger):
            found = _dated(playbook, playbook.trigger, account, tz, begin, end)
            if isinstance(found, str):
                skipped[name] = found
            else:
                starts.append(found)
    hearing = combined(of_playbook(programs[name].playbook) for name in programs)
    for kind in sorted({e.type for e in events if e.type is not None and hearing.quiet(e.type)}):
        note(f"{events_name}: no playbook of {project.root} listens to `{kind}`: it would be quiet and reach no run")
    records: list[tuple[str, StepRecord]] = []
    out: Sink = sink or (lambda playbook, record: records.append((playbook, record)))

    def stream(run: RunState, record: StepRecord) -> None:
        out(run.playbook, record)

    result = run_account(
        programs,
        account,
        templates=project.templates_dir,
        start=begin,
        horizon=end - begin,
        events=events,
        starts=starts,
        run_prefix=f"sim-{uuid.uuid4().hex[:12]}",
        sink=stream,
        warn=note,
        effects=effects,
    )
    entered = [Entered(r.state.playbook, r.trigger, r.state.started_at, r.outcome, r.because, r.at, r.day) for r in result.runs]
    started = {e.playbook for e in entered}
    for name in programs:
        if name in started:
            skipped.pop(name, None)
        elif name in result.refused:
            skipped[name] = result.refused[name]
        elif name not in skipped:
            trigger = programs[name].playbook.trigger
            types = trigger.events if isinstance(trigger, EventTrigger) else []
            skipped[name] = f"no {' or '.join(types)} event in {days} days"
    return FolderSimulated(result.account, begin, entered, dict(sorted(skipped.items())), records, warnings)


def _dated(playbook: Playbook, trigger: DateTrigger, account: AccountDoc, tz: str, start: datetime, end: datetime) -> TimedStart | str:
    """The start a date trigger makes in ``[start, end)`` (as the forecast and the sweep see it),
    or why it makes none."""
    from touchpoint.dsl.durations import format_duration
    from touchpoint.dsl.sweep_models import trigger_moment
    from touchpoint.dsl.timing import as_date
    from touchpoint.forecast import _date_enrollment

    what = f"`{trigger.date}` {format_duration(trigger.offset)}"
    try:
        found = _date_enrollment(playbook, trigger, account, tz, start, end)
        if found is not None:
            at, event = found
            return TimedStart(at=at, playbook=playbook.playbook, event=event, when=trigger.when)
        context = build_context(account=account, event=None, run=None, now=start, tz=tz, names=ex.root_names(trigger.date))
        value = as_date(ex.evaluate(trigger.date, context), tz)
    except ex.ExpressionError as exc:
        return f"date trigger {what} failed: {exc}"
    if value is None:
        return f"date trigger: `{trigger.date}` is empty"
    try:
        moment = trigger_moment(value, trigger.offset, tz).astimezone(zone(tz))
    except (ValueError, OverflowError):
        return f"date trigger {what}: no such day"
    side = "before" if moment < start else "after"
    return f"date trigger {what} is {moment.date().isoformat()}, {side} the window"


# ---------------------------------------------------------------------------- output


def row_line(playbook: str, record: StepRecord, tz: str) -> str | None:
    """One `--json` line for a timeline record: `simulate`'s, with the run's ``playbook``."""
    if record.action in HIDDEN_ACTIONS:
        return None
    item: dict[str, Any] = {
        "at": record.at.astimezone(zone(tz)).isoformat(timespec="seconds"),
        "day": record.day,
        "playbook": playbook,
        "step": record.step,
        "action": record.action,
    }
    item.update({k: v for k, v in record.detail.items() if k not in item})
    return json.dumps(item, ensure_ascii=False, default=str)


def summary_lines(sim: FolderSimulated, tz: str) -> list[str]:
    """The last `--json` lines: each run entered, then each playbook not entered and why."""
    def at(moment: datetime) -> str:
        return moment.astimezone(zone(tz)).isoformat(timespec="seconds")

    lines = [
        json.dumps(
            {"playbook": e.playbook, "entered": True, "trigger": e.trigger, "started": at(e.started), "outcome": e.outcome, "at": at(e.at), "day": e.day, "because": e.because},
            ensure_ascii=False,
        )
        for e in sim.entered
    ]
    lines.extend(json.dumps({"playbook": name, "entered": False, "because": why}, ensure_ascii=False) for name, why in sim.skipped.items())
    return lines


def start_day(sim: FolderSimulated, moment: datetime) -> int:
    """Whole days since the simulation's start (the account's day, the same for every run)."""
    return run_day(sim.start, moment)
