"""The cookbook of docs/cookbook.md: every playbook validates, and the engine simulates it.

Each runs through the CLI as a user would (`touchpoint validate FILE`, `touchpoint simulate ...
--json`), and the timelines below are what the cookbook says they do.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parent.parent
COOKBOOK = ROOT / "docs" / "cookbook"
SAMPLES = COOKBOOK / "samples"


def touchpoint(*args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    return subprocess.run([sys.executable, "-m", "touchpoint.cli.main", *args], cwd=ROOT, env=env, capture_output=True, text=True, timeout=180)


def simulate(playbook: str, account: str, *args: str) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """The timeline rows and the outcome line of `touchpoint simulate --json`."""
    done = touchpoint("simulate", str(COOKBOOK / playbook), "--account", str(SAMPLES / account), *args, "--json")
    assert done.returncode == 0, done.stdout + done.stderr
    items = [json.loads(line) for line in done.stdout.splitlines()]  # nothing but JSON lines on stdout
    *rows, outcome = items
    assert set(outcome) == {"outcome", "at", "day", "because"}
    return rows, outcome


def steps(rows: list[dict[str, Any]]) -> list[tuple[str, str]]:
    return [(row["step"], row["action"]) for row in rows]


@pytest.mark.parametrize("name", sorted(p.name for p in COOKBOOK.glob("*.yaml") if p.name != "workspace.yaml"))
def test_docs_cookbook_playbook_validates(name: str) -> None:
    done = touchpoint("validate", str(COOKBOOK / name))
    assert done.returncode == 0, done.stdout + done.stderr
    assert done.stdout.startswith(f"ok {name.removesuffix('.yaml')} ")


def test_docs_cookbook_trial_to_paid_when_the_trial_stays_quiet() -> None:
    rows, outcome = simulate("trial-to-paid.yaml", "trial-account.yaml", "--events", str(SAMPLES / "trial-quiet-events.yaml"), "--start", "2027-03-01T08:00:00+01:00")
    assert steps(rows) == [
        ("day0_tips", "email"),
        ("day0_tips", "email"),
        ("integration", "wait_for"),
        ("integration_nudge", "email"),
        ("integration_call", "task"),
        ("day7", "wait_until"),
        ("seats", "if"),
        ("invite_team", "email"),
        ("day12", "wait_until"),
        ("trial_ending", "email"),
        ("trial_end", "wait_until"),
        ("last_call", "task"),
    ]
    tips = {row["to"]: row for row in rows if row["step"] == "day0_tips"}
    # German for Lea, English for Chris: each contact's locale picks the template variant.
    assert (tips["lea@brightlane.example"]["locale"], tips["lea@brightlane.example"]["subject"]) == ("de", "Drei Dinge für Ihre erste Woche, Lea")
    assert tips["it@brightlane.example"]["subject"] == "Three things to try in your first week, Chris"
    assert rows[2]["timeout"] is True and rows[2]["day"] == 5
    # The nudge falls on Saturday: the send window holds it until Monday 09:00 in Berlin.
    assert rows[3]["at"] == "2027-03-08T09:00:00+01:00" and rows[4]["owner"] == "jonas@example.com"
    assert rows[3]["held"]["reason"] == "send_window"
    assert rows[6]["branch"] == "else"  # three seats in use: invite the team
    assert outcome == {"outcome": "completed", "at": "2027-03-15T09:00:00+01:00", "day": 14, "because": "the last step ran"}


def test_docs_cookbook_trial_to_paid_converts_on_the_business_plan() -> None:
    rows, outcome = simulate("trial-to-paid.yaml", "trial-account.yaml", "--events", str(SAMPLES / "trial-converted-events.yaml"), "--start", "2027-03-01T08:00:00+01:00")
    assert steps(rows) == [
        ("day0_tips", "email"),
        ("day0_tips", "email"),
        ("integration", "wait_for"),
        ("day7", "wait_until"),
        ("seats", "if"),
        ("invite_team", "email"),
        ("day12", "wait_until"),
    ]
    assert rows[2]["timeout"] is False and rows[2]["day"] == 2  # the integration arrived on day 2
    # The upgrade on day 9 (an `account:` entry), in the middle of the wait for day 12: converted.
    assert outcome == {"outcome": "converted", "at": "2027-03-10T08:00:00+01:00", "day": 9, "because": "goal `account.plan == 'business'`"}


def test_docs_cookbook_activation_stays_open_until_its_goal() -> None:
    rows, outcome = simulate("activation-until-goal.yaml", "scale-account.yaml", "--events", str(SAMPLES / "activation-events.yaml"), "--start", "2027-03-01T08:00:00-05:00")
    assert steps(rows) == [
        ("kickoff", "email"),
        ("a_week", "wait"),
        ("weekly_tip", "email"),
        ("a_week", "wait"),
        ("weekly_tip", "email"),
        ("a_week", "wait"),
    ]
    assert [row["subject"] for row in rows if row["step"] == "weekly_tip"] == [
        "Week 1: one five-minute tip for Harbor Analytics",
        "Week 2: one five-minute tip for Harbor Analytics",
    ]
    # Eleven weekly users on day 17, mid-wait: the goal ends the run at once.
    assert outcome == {"outcome": "converted", "at": "2027-03-18T09:00:00-04:00", "day": 17, "because": "goal `(account.metrics.weekly_active_users or 0) >= 10`"}


def test_docs_cookbook_renewal_countdown_counts_down_to_the_renewal() -> None:
    rows, outcome = simulate("renewal-countdown.yaml", "scale-account.yaml", "--start", "2027-03-03T06:00:00-05:00")
    assert [(row["day"], row["step"]) for row in rows if row["action"] in ("email", "task", "update")] == [
        (0, "value_review_invite"),
        (0, "value_review_invite"),
        (0, "value_review"),
        (0, "stage_value_review"),
        (29, "proposal"),
        (29, "stage_proposal"),
        (61, "renewal_reminder"),  # 30 days out is a Sunday: the email waits for Monday 09:00
        (61, "renewal_reminder"),
    ]
    (sixty,) = [row for row in rows if row["step"] == "sixty_days_out"]
    assert sixty["until"] == "2027-04-02T00:00:00-04:00"  # renewal date - 60 days, 00:00 in the account's zone
    assert [row["owner"] for row in rows if row["action"] == "task"] == ["dana@example.com", "sam@example.com"]
    reminder = rows[-1]
    assert (reminder["step"], reminder["held"]["reason"]) == ("renewal_reminder", "send_window")
    assert outcome == {"outcome": "completed", "at": "2027-05-03T09:00:00-04:00", "day": 61, "because": "the last step ran"}


def test_docs_cookbook_plan_upgrade_welcomes_the_business_plan() -> None:
    rows, outcome = simulate("plan-upgrade.yaml", "scale-account.yaml", "--start", "2027-03-01T10:00:00-05:00", "--trigger-data", '{"changed": ["plan"]}')
    assert steps(rows) == [("welcome_business", "email"), ("expansion_review", "task"), ("stage_business", "update")]
    assert rows[0]["to"] == "maya@harbor.example"  # the champion; Harbor has no admin
    assert rows[-1]["fields"] == {"lifecycle_stage": "business"}
    assert (outcome["outcome"], outcome["day"]) == ("completed", 0)


def test_docs_cookbook_trial_signals_starts_on_either_event() -> None:
    rows, outcome = simulate("trial-signals.yaml", "trial-account.yaml", "--start", "2027-03-01T10:00:00+01:00", "--trigger-data", '{"seats": 25}')
    assert steps(rows) == [("call_the_trial", "task"), ("intro", "email")]
    assert outcome["outcome"] == "completed"
