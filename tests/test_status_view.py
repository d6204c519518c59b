"""How `touchpoint status` shows runs (touchpoint/cli/status_view.py), at 80 columns and piped."""

from __future__ import annotations

import io
import json
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from rich.console import Console

from touchpoint.cli.status_view import print_runs, record_json

RUN_ID = "3f1f5a8e-8d7c-4c59-9a51-0e5b4d7bde42"
TASK_ID = "task_aa6fe8c3d1b2e4f5"


@dataclass
class Record:
    at: datetime
    day: int
    step: str
    action: str
    detail: dict[str, Any] = field(default_factory=dict)


def run() -> dict[str, Any]:
    start = datetime(2026, 12, 7, 8, 0, tzinfo=UTC)
    history = [
        Record(start, 0, "welcome_the_champion_email", "email", {"to": "kim.park@acme-corporation-emea.example", "subject": "Welcome to the programme, Acme Corporation"}),
        Record(start, 0, "single_sign_on_setup_task", "task", {"task_id": TASK_ID, "title": "Set up single sign-on for Acme Corporation", "due": start + timedelta(days=3)}),
    ]
    return {
        "id": RUN_ID,
        "workflow_id": "run/enterprise-sso-onboarding/acme-corporation-emea-enterprise",
        "playbook": "enterprise-sso-onboarding",
        "account_id": "acme-corporation-emea-enterprise",
        "status": "running",
        "step": "single_sign_on_setup_task",
        "outcome": None,
        "paused_reason": None,
        "vars": {"objective": "Cut the time to onboard a new field engineer from six weeks to two", "seats": 120},
        "scorecard": {"score": 35, "target": 80, "by_day": 90},
        "history": [record_json(r) for r in history],
    }


def output(*, terminal: bool, as_json: bool = False) -> str:
    buffer = io.StringIO()
    console = Console(file=buffer, width=80, force_terminal=terminal, color_system=None)
    print_runs(console, [run()], as_json=as_json)
    return buffer.getvalue()


def test_status_view_fits_80_columns_with_every_id_whole() -> None:
    text = output(terminal=True)
    assert all(len(line.rstrip()) <= 80 for line in text.splitlines()), text
    assert "…" not in text
    for value in (RUN_ID, "acme-corporation-emea-enterprise", "enterprise-sso-onboarding", "single_sign_on_setup_task", "welcome_the_champion_email"):
        assert value in text, value
    lines = [line.rstrip() for line in text.splitlines()]
    assert lines[0] == "enterprise-sso-onboarding acme-corporation-emea-enterprise"
    assert lines[1].split() == ["run", RUN_ID]
    assert lines[2].split() == ["state", "running", "at", "single_sign_on_setup_task"]
    assert lines[3].split() == ["scorecard", "35%", "(target", "80", "by", "day", "90)"]
    assert [line.split() for line in lines if "seats" in line] == [["seats", "=", "120"]]  # one var a line, not raw JSON
    # Each recent step on a line of its own, its detail (with the task id, whole) below it.
    step = lines.index(" 2026-12-07 08:00  day 0   single_sign_on_setup_task  task")
    assert lines[step + 1].split()[0] == f"task_id={TASK_ID},"


def test_status_view_prints_whole_rows_when_piped(capsys: pytest.CaptureFixture[str]) -> None:
    text = output(terminal=False)
    assert "  objective = \"Cut the time to onboard a new field engineer from six weeks to two\"" in text.splitlines()
    (task_row,) = [line for line in text.splitlines() if "single_sign_on_setup_task   task" in line]
    assert TASK_ID in task_row and task_row.startswith("2026-12-07 08:00")
    print_runs(Console(file=io.StringIO()), [run()], as_json=True)
    (line,) = capsys.readouterr().out.splitlines()
    item = json.loads(line)
    assert item["id"] == RUN_ID and item["history"][1]["detail"]["task_id"] == TASK_ID
    assert item["history"][1]["detail"]["due"] == "2026-12-10T08:00:00+00:00" and item["history"][0]["at"] == "2026-12-07T08:00:00+00:00"


def test_status_view_says_when_there_are_no_runs() -> None:
    buffer = io.StringIO()
    print_runs(Console(file=buffer), [])
    assert buffer.getvalue() == "no runs\n"
