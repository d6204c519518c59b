"""Overlaps before deploy: `touchpoint simulate FOLDER` and the overlap check of `validate`.

A new trial account is caught by two playbooks that each email it on day 0 (the shape of the
issue's report: a trial playbook and the shipped digital tech-touch, which takes any account with
`arr: 0`): run side by side on one clock, the workspace's frequency cap (one email a week here)
holds the second email, where each alone would send on day 0.
"""

from __future__ import annotations

import json
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from typer.testing import CliRunner

from tests.conftest import write_folder
from touchpoint.cli.main import app
from touchpoint.simulate import simulate
from touchpoint.simulate_folder import FolderSimulated, row_line, simulate_folder

ROOT = Path(__file__).resolve().parent.parent
START = datetime(2027, 3, 1, 10, 0, tzinfo=UTC)  # a Monday, inside the send window

WORKSPACE = """\
timezone: UTC
sender: {email: cs@example.com, name: CS}
send_window: {days: [mon, tue, wed, thu, fri, sat, sun], hours: "00:00-24:00"}
frequency_cap: {emails: 1, per: 7d}
segments:
  enterprise: "account.arr >= 250000"
  digital: "true"
"""
PLAYBOOKS = {
    "digital-touch.yaml": """\
playbook: digital-touch
trigger: {event: account.created, when: "account.segment == 'digital'"}
audience: [champion]
steps:
  - {email: {template: hello}, id: digital_welcome}
  - {wait: 30d, id: settle}
""",
    "trial-to-paid.yaml": """\
playbook: trial-to-paid
trigger: {event: account.created, when: "account.plan == 'trial'"}
audience: [champion]
steps:
  - {email: {template: hello}, id: day0_tips}
  - {start: {playbook: trial-handoff}, id: handoff}
""",
    "trial-handoff.yaml": """\
playbook: trial-handoff
trigger: manual
steps:
  - {task: {title: "Call {{ account.name }}", owner: csm}, id: call}
""",
    "renewal.yaml": """\
playbook: renewal
trigger: {date: account.renewal_date, offset: -30d}
steps:
  - {note: {text: "Renewal of {{ account.name }} in 30 days"}, id: renewal_note}
""",
    "enterprise-onboarding.yaml": """\
playbook: enterprise-onboarding
trigger: {event: account.created, when: "account.segment == 'enterprise'"}
steps:
  - {email: {template: hello}, id: kickoff}
""",
    "upgrade.yaml": """\
playbook: upgrade
trigger: {event: account.updated, when: "'plan' in event.data.changed"}
reenroll: never
steps:
  - {note: {text: "Now on {{ account.plan }}"}, id: upgraded}
""",
    "quarterly-ping.yaml": """\
playbook: quarterly-ping
trigger: manual
steps:
  - {note: {text: "ping"}, id: ping}
""",
    "weekly-digest.yaml": """\
playbook: weekly-digest
trigger: {schedule: "0 8 * * mon"}
steps:
  - {email: {template: digest, to: [cs@example.com]}, id: digest}
""",
    "templates/hello.subject.j2": "Hello {{ account.name }}",
    "templates/hello.html.j2": "<p>Hi {{ contact.name }}</p>",
    "templates/digest.subject.j2": "{{ accounts | length }} accounts",
    "templates/digest.html.j2": "<p>Digest</p>",
}
TRIAL = """\
id: brightlane
name: Brightlane
plan: trial
arr: 0
renewal_date: 2027-04-20
csm: {name: Jo, email: jo@example.com}
contacts:
  - {email: lea@brightlane.example, name: Lea, role: champion}
"""
SAMPLE = TRIAL.replace("renewal_date: 2027-04-20\n", "")
"""The trial account as a sample: `validate` simulates from now, so no date that could fall in its window."""
ENTERPRISE = """\
id: globex
name: Globex
plan: business
arr: 600000
contacts:
  - {email: kim@globex.example, name: Kim, role: champion}
"""


def folder(tmp_path: Path, workspace: str = WORKSPACE, **extra: str) -> Path:
    return write_folder(tmp_path / "playbooks", {"workspace.yaml": workspace, **PLAYBOOKS, **extra})


def rows(sim: FolderSimulated) -> list[dict[str, Any]]:
    return [json.loads(line) for playbook, record in sim.records if (line := row_line(playbook, record, "UTC")) is not None]


def test_simulate_folder_holds_the_second_day0_email_by_the_shared_cap(tmp_path: Path) -> None:
    root = folder(tmp_path)
    (tmp_path / "trial.yaml").write_text(TRIAL)
    sim = simulate_folder(root, tmp_path / "trial.yaml", start=START, days=60)
    emails = [(r["playbook"], r["step"], r["at"], r.get("held")) for r in rows(sim) if r["action"] == "email"]
    # Both playbooks email Lea on day 0: the first takes the week's one slot, the second waits a week.
    assert emails == [
        ("digital-touch", "digital_welcome", "2027-03-01T10:00:00+00:00", None),
        ("trial-to-paid", "day0_tips", "2027-03-08T10:00:00+00:00", {"since": "2027-03-01T10:00:00+00:00", "reason": "frequency_cap"}),
    ]
    # Alone, the trial playbook sends on day 0: the folder's cap is what held it.
    alone = simulate(root / "trial-to-paid.yaml", tmp_path / "trial.yaml", start=START, days=60)
    assert [(r.step, r.at) for r in alone.records if r.action == "email"] == [("day0_tips", START)]


def test_simulate_folder_lists_the_playbooks_entered_and_why_the_others_were_not(tmp_path: Path) -> None:
    root = folder(tmp_path)
    (tmp_path / "trial.yaml").write_text(TRIAL)
    (tmp_path / "events.yaml").write_text("- {after: 3d, account: {plan: team}}\n- {after: 5d, account: {plan: business}}\n")
    sim = simulate_folder(root, tmp_path / "trial.yaml", events_file=tmp_path / "events.yaml", start=START, days=60)
    entered = [(e.playbook, e.trigger, (e.started - START).days, e.outcome) for e in sim.entered]
    assert entered == [
        ("digital-touch", "account.created", 0, "completed"),
        ("trial-to-paid", "account.created", 0, "completed"),
        ("upgrade", "account.updated", 3, "completed"),  # `reenroll: never`: not again on day 5
        ("trial-handoff", "start step of trial-to-paid", 7, "completed"),  # after the held email
        ("renewal", "date.reached", 19, "completed"),  # 06:00 on 2027-03-21, 30 days before 2027-04-20
    ]
    assert [(r["playbook"], r["step"]) for r in rows(sim) if r["action"] in ("note", "task")] == [
        ("upgrade", "upgraded"), ("trial-handoff", "call"), ("renewal", "renewal_note"),
    ]
    assert sim.skipped == {
        "enterprise-onboarding": "trigger.when `account.segment == 'enterprise'` was false on account.created (day 0)",
        "quarterly-ping": "manual: started only on request (name it with --manual)",
        "weekly-digest": "a schedule playbook: it runs once per tick, not per account",
    }
    # Named, a manual playbook starts at the start; a renewal beyond the window starts nothing.
    (tmp_path / "later.yaml").write_text(TRIAL.replace("2027-04-20", "2028-04-20"))
    later = simulate_folder(root, tmp_path / "later.yaml", start=START, days=60, manual=["quarterly-ping"])
    assert ("quarterly-ping", "manual", 0) in [(e.playbook, e.trigger, (e.started - START).days) for e in later.entered]
    assert later.skipped["renewal"] == "date trigger `account.renewal_date` -30d is 2028-03-21, after the window"
    assert later.skipped["upgrade"] == "no account.updated event in 60 days"


def test_simulate_folder_json_is_nothing_but_json_lines(tmp_path: Path) -> None:
    root = folder(tmp_path)
    (tmp_path / "trial.yaml").write_text(TRIAL)
    (tmp_path / "events.yaml").write_text("- {after: 2d, type: nobody.listens}\n")
    proc = subprocess.run(
        [sys.executable, "-m", "touchpoint.cli.main", "simulate", str(root), "--account", str(tmp_path / "trial.yaml"),
         "--events", str(tmp_path / "events.yaml"), "--start", START.isoformat(), "--days", "60", "--json"],
        capture_output=True, text=True, timeout=60, cwd=tmp_path,
    )
    assert proc.returncode == 0, proc.stderr
    lines = [json.loads(line) for line in proc.stdout.splitlines()]
    steps = [line for line in lines if "step" in line]
    summary = [line for line in lines if "entered" in line]
    assert len(steps) + len(summary) == len(lines) and lines[: len(steps)] == steps  # the timeline, then the summary
    assert all({"at", "day", "playbook", "step", "action"} <= set(line) for line in steps)
    held = next(line for line in steps if line["step"] == "day0_tips")
    assert held["playbook"] == "trial-to-paid" and held["held"]["reason"] == "frequency_cap" and held["day"] == 7
    assert {line["playbook"]: line["entered"] for line in summary} == {
        "digital-touch": True, "trial-to-paid": True, "trial-handoff": True, "renewal": True,
        "enterprise-onboarding": False, "upgrade": False, "quarterly-ping": False, "weekly-digest": False,
    }
    started = next(line for line in summary if line["playbook"] == "trial-handoff")
    assert set(started) == {"playbook", "entered", "trigger", "started", "outcome", "at", "day", "because"}
    assert "`nobody.listens`" in proc.stderr and "quiet" in proc.stderr


def test_simulate_folder_table_names_the_playbook_of_each_row(tmp_path: Path) -> None:
    root = folder(tmp_path)
    (tmp_path / "trial.yaml").write_text(TRIAL)
    result = CliRunner().invoke(app, ["simulate", str(root), "--account", str(tmp_path / "trial.yaml"), "--start", START.isoformat(), "--days", "60"])
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    assert any("digital-touch" in line and "digital_welcome" in line for line in lines), result.output
    assert any("trial-to-paid" in line and "day0_tips" in line and "frequency_cap" in line for line in lines), result.output
    assert "entered trial-handoff on start step of trial-to-paid, day 7" in result.output
    assert "not entered weekly-digest: a schedule playbook" in result.output
    refused = CliRunner().invoke(app, ["simulate", str(root), "--account", str(tmp_path / "trial.yaml"), "--manual", "renewal"])
    assert refused.exit_code == 2 and "--manual renewal: not a manual playbook" in refused.output


def test_validate_warns_when_two_playbooks_email_a_sample_account_within_one_cap_window(tmp_path: Path) -> None:
    root = folder(tmp_path, **{"samples/trial.yaml": SAMPLE, "samples/enterprise.yaml": ENTERPRISE})
    result = CliRunner().invoke(app, ["validate", str(root)])
    assert result.exit_code == 0, result.output  # a warning, not an error
    out, err = result.stdout, result.stderr
    assert "sample brightlane (" in out and "enters digital-touch (day 0), trial-to-paid (day 0), trial-handoff (day 7)\n" in out
    assert "sample globex (" in out and "enters enterprise-onboarding (day 0)" in out
    warnings = [line for line in err.splitlines() if line.startswith("warning:")]
    assert warnings == [
        "warning: sample brightlane: digital-touch `digital_welcome` (day 0) and trial-to-paid `day0_tips` (day 0, held to day 7"
        " by the cap) both email lea@brightlane.example within one frequency-cap window (1 per 1w)"
    ], err


def test_validate_says_nothing_when_the_playbooks_email_weeks_apart(tmp_path: Path) -> None:
    later = PLAYBOOKS["trial-to-paid.yaml"].replace("  - {email: {template: hello}, id: day0_tips}", "  - {wait: 10d}\n  - {email: {template: hello}, id: day0_tips}")
    root = folder(tmp_path, **{"trial-to-paid.yaml": later, "samples/trial.yaml": SAMPLE})
    result = CliRunner().invoke(app, ["validate", str(root)])
    assert result.exit_code == 0, result.output
    assert "enters digital-touch (day 0), trial-to-paid (day 0)" in result.stdout
    assert "warning" not in result.stderr, result.stderr
    # The events of `samples/<account>-events.yaml` are the product's: a trial playbook that
    # starts on `trial.started` is entered only with them.
    on_event = PLAYBOOKS["trial-to-paid.yaml"].replace('{event: account.created, when: "account.plan == \'trial\'"}', "{event: trial.started}")
    root = folder(tmp_path / "events", **{"trial-to-paid.yaml": on_event, "samples/trial.yaml": SAMPLE})
    quiet = CliRunner().invoke(app, ["validate", str(root)])
    assert "enters digital-touch (day 0)\n" in quiet.stdout and "warning" not in quiet.stderr
    (root / "samples" / "trial-events.yaml").write_text("- {after: 1h, type: trial.started}\n")
    loud = CliRunner().invoke(app, ["validate", str(root)])
    assert loud.exit_code == 0 and "with trial-events.yaml) enters digital-touch (day 0), trial-to-paid (day 0)" in loud.stdout
    assert "trial-to-paid `day0_tips` (day 0, held to day 7 by the cap)" in loud.stderr


def test_validate_of_the_shipped_playbooks_lists_the_samples_and_stays_fast() -> None:
    begin = datetime.now(UTC)
    proc = subprocess.run([sys.executable, "-m", "touchpoint.cli.main", "validate", str(ROOT / "playbooks")], capture_output=True, text=True, timeout=60, cwd=ROOT)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "sample northwind (playbooks/samples/scale.yaml with scale-events.yaml) enters onboarding-scale (day 0)" in proc.stdout
    assert "sample tinyco (playbooks/samples/digital.yaml) enters" in proc.stdout  # live: no onboarding
    assert datetime.now(UTC) - begin < timedelta(seconds=10)  # bench/validation.py holds the 2 s goal


def test_simulate_folder_with_one_entered_playbook_prints_what_simulate_of_its_file_prints() -> None:
    # The shipped folder and a new scale account: only onboarding-scale starts, and the folder's
    # host (triggers, every run fed every event) runs it exactly as the one-playbook host does.
    samples = ROOT / "playbooks" / "samples"
    start = datetime(2026, 3, 2, 15, 0, tzinfo=UTC)
    sim = simulate_folder(ROOT / "playbooks", samples / "scale.yaml", events_file=samples / "scale-events.yaml", start=start, days=120)
    alone = simulate(ROOT / "playbooks" / "onboarding-scale.yaml", samples / "scale.yaml", events_file=samples / "scale-events.yaml", start=start, days=120)

    def shown(record: Any) -> tuple[Any, ...]:
        return (record.at, record.day, record.step, record.action, {k: v for k, v in record.detail.items() if k != "task_id"})

    assert [e.playbook for e in sim.entered] == ["onboarding-scale"]
    assert {playbook for playbook, _ in sim.records} == {"onboarding-scale"}
    assert [shown(r) for _, r in sim.records] == [shown(r) for r in alone.records]
    assert (sim.entered[0].outcome, sim.entered[0].because, sim.entered[0].day) == (alone.outcome, alone.because, alone.day)
