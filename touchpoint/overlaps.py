"""Overlaps before deploy: which playbooks each sample account enters, and which email it together.

For `touchpoint validate`: each sample account of the folder (`samples/`, as `validate` and
`preview` load them) arrives as a new account and is simulated with every playbook of the folder
(`touchpoint.simulate_folder.simulate_account`) over `HORIZON_DAYS` from now, with the events of
``samples/<account file stem>-events.yaml`` when that file exists (the product's own events,
such as `trial.started`, come from there). Nothing is rendered: only who is emailed when counts.

An overlap is two playbooks emailing the same contact within one window of the workspace's
`frequency_cap` (`per`), counted from when each email was due (the step asked to send it; a send
window or the shared cap may have held it longer, and the warning says so): the playbooks then
compete for the contact's attention and the cap decides which of their emails wait. Each pair of playbooks is reported once per account, at its first overlap. Without a
`frequency_cap` there is no window, and no overlap is reported.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path

from touchpoint.dsl.errors import ContractError
from touchpoint.dsl.runtime import StepRecord
from touchpoint.dsl.validate import Project

HORIZON_DAYS = 90
"""How far ahead `validate` simulates each sample account."""


@dataclass(frozen=True)
class Sent:
    """One email sent: by which playbook and step, to whom, when it was due and when it went."""

    playbook: str
    step: str
    to: str
    due: datetime
    due_day: int
    day: int
    capped: bool
    """The frequency cap held it (first of all: a send window that held it first hides this)."""

    def describe(self) -> str:
        when = f"day {self.due_day}" + (f", held to day {self.day} by the cap" if self.capped and self.day != self.due_day else "")
        return f"{self.playbook} `{self.step}` ({when})"


@dataclass(frozen=True)
class Overlap:
    """Two playbooks' emails to one contact within one cap window (the earlier first)."""

    first: Sent
    second: Sent

    def describe(self, per: str) -> str:
        return f"{self.first.describe()} and {self.second.describe()} both email {self.first.to} within one frequency-cap window ({per})"


@dataclass
class SampleReport:
    """What one sample account enters in the horizon, and the overlaps among those playbooks."""

    path: Path
    account_id: str
    entered: list[tuple[str, int]]
    """(playbook, day it started) for each run, in start order."""
    events: Path | None = None
    overlaps: list[Overlap] = field(default_factory=list)


def sample_reports(project: Project, samples_dir: Path, *, now: datetime | None = None, days: int = HORIZON_DAYS) -> list[SampleReport]:
    """Simulate every valid sample account with every playbook of ``project`` (module docstring).

    Sample accounts or events files that are not valid are left out (`validate` reports the
    accounts; an events file's problems are for `simulate` to report).
    """
    from touchpoint.dsl.timing import run_day
    from touchpoint.email.check import sample_accounts
    from touchpoint.forecast import ForecastEffects
    from touchpoint.simulate import load_events
    from touchpoint.simulate_folder import simulate_account

    accounts, _ = sample_accounts(project, samples_dir)
    start = (now or datetime.now(UTC)).astimezone(UTC)
    cap = project.workspace.frequency_cap
    resolved: dict[tuple[str, tuple[str, ...]], str | None] = {}
    reports: list[SampleReport] = []
    for path, account in accounts:
        events_file = path.with_name(f"{path.stem}-events.yaml")
        try:
            events = load_events(events_file) if events_file.is_file() else []
        except ContractError:
            events = []
        sent: list[Sent] = []
        sim = simulate_account(
            project, account, start=start, days=days, events=events, sink=_collector(sent, start),
            effects=ForecastEffects(project.templates_dir, resolved), events_name=str(events_file),
        )
        report = SampleReport(path, account.id, [(e.playbook, run_day(start, e.started)) for e in sim.entered], events_file if events else None)
        if cap is not None:
            report.overlaps = overlaps(sent, cap.per)
        reports.append(report)
    return reports


def _collector(sent: list[Sent], start: datetime) -> Callable[[str, StepRecord], None]:
    """A timeline sink that keeps the emails sent (not skipped or failed) in ``sent``."""
    from touchpoint.dsl.timing import run_day

    def keep(playbook: str, record: StepRecord) -> None:
        to = record.detail.get("to")
        if record.action != "email" or not isinstance(to, str) or record.detail.get("status", "sent") != "sent":
            return
        held = record.detail.get("held")
        since = held.get("since") if isinstance(held, dict) else None
        due = since if isinstance(since, datetime) else datetime.fromisoformat(since) if isinstance(since, str) else record.at
        capped = isinstance(held, dict) and held.get("reason") == "frequency_cap"
        sent.append(Sent(playbook, record.step, to.lower(), due, run_day(start, due), run_day(start, record.at), capped))

    return keep


def overlaps(sent: list[Sent], per: timedelta) -> list[Overlap]:
    """The first overlap of each pair of playbooks: emails to one contact due less than ``per`` apart."""
    found: dict[frozenset[str], Overlap] = {}
    ordered = sorted(sent, key=lambda s: s.due)
    for i, first in enumerate(ordered):
        for second in ordered[i + 1 :]:
            if second.due - first.due >= per:
                break
            pair = frozenset((first.playbook, second.playbook))
            if second.to == first.to and len(pair) == 2 and pair not in found:
                found[pair] = Overlap(first, second)
    return sorted(found.values(), key=lambda o: (o.second.due, o.first.playbook, o.second.playbook))
