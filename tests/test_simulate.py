"""`simulate()` end to end on the shipped starter playbooks and on send windows across DST.

Each simulation starts its own time-skipping server; the timelines asserted here are what
`touchpoint simulate --json` prints, parsed back line by line.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

from tests.conftest import write_folder
from touchpoint.simulate import Simulated, simulate, timeline_json

PLAYBOOKS = Path(__file__).resolve().parent.parent / "playbooks"
SAMPLES = PLAYBOOKS / "samples"
CHICAGO = ZoneInfo("America/Chicago")
#: Monday 2026-03-02 10:00 in Chicago: inside the send window, a week before the US DST change.
MONDAY = datetime(2026, 3, 2, 10, 0, tzinfo=CHICAGO)
#: Steps the scorecard runs on its own clock, in parallel with the main steps.
CARD_STEPS = ("behind_plan", "missed_task", "missed_note")


def lines_of(sim: Simulated, tz: str) -> list[dict[str, Any]]:
    """The `--json` lines, each checked for its shape; the outcome line last and alone."""
    lines = timeline_json(sim, tz)
    items = [json.loads(line) for line in lines]
    for item in items[:-1]:
        assert {"at", "day", "step", "action"} <= set(item), item
        assert datetime.fromisoformat(item["at"]).utcoffset() is not None
    assert items[-1]["outcome"] == sim.outcome and {"at", "day", "because"} <= set(items[-1])
    return items[:-1]


def tuples(items: list[dict[str, Any]]) -> list[tuple[int, str, str]]:
    return [(i["day"], i["step"], i["action"]) for i in items]


def by_step(items: list[dict[str, Any]], step: str) -> list[dict[str, Any]]:
    return [i for i in items if i["step"] == step]


def local(item: dict[str, Any], tz: ZoneInfo = CHICAGO) -> datetime:
    return datetime.fromisoformat(item["at"]).astimezone(tz)


def near(moment: datetime, expected: datetime) -> bool:
    """Sent at `expected`, give or take the seconds an activity (and its retries) take."""
    return timedelta(0) <= moment - expected < timedelta(seconds=30)


async def test_onboarding_scale_with_sample_events_converts() -> None:
    sim = simulate(
        PLAYBOOKS / "onboarding-scale.yaml",
        SAMPLES / "scale.yaml",
        events_file=SAMPLES / "scale-events.yaml",
        start=MONDAY,
        days=120,
    )
    items = lines_of(sim, "America/Chicago")
    assert sim.outcome == "converted"
    # sso on day 5, a first use case on day 12, admins trained on day 45: 25 + 30 + 25 = 80.
    assert tuples(items) == [
        (0, "welcome", "email"),
        (0, "welcome", "email"),
        (0, "admin_setup", "task"),
        (0, "stage_setup", "update"),
        (5, "sso", "wait_for"),
        (6, "aha_docs", "email"),
        (6, "aha_docs", "email"),
        (6, "after_docs", "wait"),
        (10, "aha_notes", "email"),
        (10, "aha_notes", "email"),
        (10, "after_notes", "wait"),
        (14, "aha_wiki", "email"),
        (14, "aha_wiki", "email"),
        (14, "after_wiki", "wait"),
        (16, "training_invite", "email"),
        (16, "training_invite", "email"),
        (16, "stage_adoption", "update"),
        (16, "day30", "wait_until"),
        (30, "day30_check", "if"),
        (30, "day30_low", "task"),
        (30, "day60", "wait_until"),
    ]
    welcome = {i["to"]: i for i in by_step(items, "welcome")}
    assert set(welcome) == {"kim@northwind.example", "it@northwind.example"}
    for item in welcome.values():
        assert item["subject"] == "Welcome to Example, Northwind Traders!"
        assert item["template"] == "welcome"
        assert item["locale"] is None  # the plain (English) part: no locale variant was used
        assert near(local(item), MONDAY)
    (setup,) = by_step(items, "admin_setup")
    assert setup["title"] == "Admin setup call with Northwind Traders"
    assert setup["owner"] == "dana@example.com"
    assert by_step(items, "stage_setup")[0]["fields"] == {"onboarding_stage": "setup"}
    # The SSO event came on a Saturday: the first use-case email waits for Monday 09:00 (now CDT).
    assert by_step(items, "sso")[0]["event"] == "setup.sso_configured"
    for item in by_step(items, "aha_docs"):
        assert near(local(item), datetime(2026, 3, 9, 9, 0, tzinfo=CHICAGO))
        assert item["at"].endswith("-05:00")
    assert {i["to"] for i in by_step(items, "training_invite")} == {"kim@northwind.example", "it@northwind.example"}
    assert by_step(items, "day30_check")[0]["branch"] == "then"  # 60 of 200 seats active
    assert by_step(items, "day30_low")[0]["title"] == "Low activation at day 30: 60/200 seats"
    assert sim.scorecard is not None
    assert sim.scorecard["score"] == 80
    assert {k: v["day"] for k, v in sim.scorecard["milestones"].items()} == {
        "sso_configured": 5,
        "first_use_case": 12,
        "admins_trained": 45,
        "integrations": None,
    }


async def test_onboarding_scale_without_events_misses_the_card() -> None:
    sim = simulate(PLAYBOOKS / "onboarding-scale.yaml", SAMPLES / "scale.yaml", start=MONDAY, days=120)
    items = lines_of(sim, "America/Chicago")
    assert sim.outcome == "completed"
    main = [t for t in tuples(items) if t[1] not in CARD_STEPS]
    card = [t for t in tuples(items) if t[1] in CARD_STEPS]
    assert main == [
        (0, "welcome", "email"),
        (0, "welcome", "email"),
        (0, "admin_setup", "task"),
        (0, "stage_setup", "update"),
        (10, "sso", "wait_for"),
        (10, "sso_reminder", "email"),
        (10, "aha_docs", "email"),
        (10, "aha_docs", "email"),
        (10, "after_docs", "wait"),
        (14, "aha_notes", "email"),
        (14, "aha_notes", "email"),
        (14, "after_notes", "wait"),
        (18, "aha_wiki", "email"),
        (18, "aha_wiki", "email"),
        (18, "after_wiki", "wait"),
        (20, "training_invite", "email"),
        (20, "training_invite", "email"),
        (20, "stage_adoption", "update"),
        (20, "day30", "wait_until"),
        (30, "day30_check", "if"),
        (30, "day30_low", "task"),
        (30, "day60", "wait_until"),
        (60, "day60_check", "if"),
        (60, "day60_low", "task"),
        (60, "stage_final", "update"),
    ]
    assert card == [(30, "behind_plan", "task"), (90, "missed_task", "task"), (90, "missed_note", "note")]
    assert by_step(items, "sso")[0]["timeout"] is True
    (reminder,) = by_step(items, "sso_reminder")
    assert reminder["to"] == "it@northwind.example"
    assert reminder["subject"] == "Reminder: connect single sign-on for Northwind Traders"
    # The training invite fell on a Sunday: held until Monday 09:00.
    for item in by_step(items, "training_invite"):
        assert near(local(item), datetime(2026, 3, 23, 9, 0, tzinfo=CHICAGO))
    (behind,) = by_step(items, "behind_plan")
    assert behind["title"] == "Onboarding behind plan (0%)"
    assert behind["owner"] == "dana@example.com"
    assert by_step(items, "missed_task")[0]["title"] == "Onboarding missed 80 by 90 for Northwind Traders (0%)"
    assert by_step(items, "missed_note")[0]["text"] == "Onboarding report card missed: 0% on day 90 (target 80.0)."
    assert by_step(items, "stage_final")[0]["fields"] == {"onboarding_stage": "adopting"}
    assert sim.scorecard is not None and sim.scorecard["met"] is False


async def test_onboarding_scale_german_account_gets_the_german_welcome() -> None:
    berlin = ZoneInfo("Europe/Berlin")
    sim = simulate(
        PLAYBOOKS / "onboarding-scale.yaml",
        SAMPLES / "scale-de.yaml",
        start=datetime(2026, 3, 2, 10, 0, tzinfo=berlin),
        days=1,
    )
    items = lines_of(sim, "Europe/Berlin")
    assert sim.outcome == "running"  # stopped at the horizon, waiting for SSO
    welcome = by_step(items, "welcome")
    assert {i["to"] for i in welcome} == {"anna@rheinwerk.example", "admin@rheinwerk.example"}
    for item in welcome:
        assert item["subject"] == "Willkommen bei Example, Rheinwerk GmbH!"
        assert item["locale"] == "de"
        assert item["at"].startswith("2026-03-02T10:00:") and item["at"].endswith("+01:00")
    (setup,) = by_step(items, "admin_setup")
    assert setup["owner"] == "jonas@example.com"


async def test_health_drop_escalates_a_red_account_to_the_fallback_owner() -> None:
    start = datetime(2026, 3, 2, 10, 0, tzinfo=ZoneInfo("America/New_York"))
    sim = simulate(PLAYBOOKS / "health-drop.yaml", SAMPLES / "digital.yaml", start=start)
    items = lines_of(sim, "America/New_York")
    assert sim.outcome == "completed"
    assert tuples(items) == [
        (0, "health_task", "task"),
        (0, "checkin", "email"),
        (0, "cooldown", "wait"),
        (14, "still_red", "if"),
        (14, "still_red_note", "note"),
        (14, "red_review", "task"),
    ]
    # TinyCo has no CSM: its tasks go to crm.fallback_owner.
    assert {i["owner"] for i in items if i["action"] == "task"} == {"cs-ops@example.com"}
    assert by_step(items, "red_review")[0]["title"] == "Add to red-account review: TinyCo"
    assert by_step(items, "checkin")[0]["to"] == "founder@tinyco.example"


async def test_renewal_kickoff_quotes_the_captured_objective(tmp_path: Path) -> None:
    events = tmp_path / "events.yaml"
    events.write_text("- {after: 3d, type: objective.captured, data: {objective: Halve onboarding time}}\n")
    start = datetime(2026, 3, 2, 10, 0, tzinfo=ZoneInfo("America/New_York"))
    sim = simulate(
        PLAYBOOKS / "renewal-kickoff.yaml", SAMPLES / "enterprise.yaml", events_file=events, start=start
    )
    items = lines_of(sim, "America/New_York")
    assert sim.outcome == "completed"
    assert tuples(items) == [
        (0, "objectives_email", "email"),
        (0, "objectives_task", "task"),
        (3, "objective", "wait_for"),
        (3, "keep_objective", "set"),
        (3, "plan_email", "email"),
        (3, "workshop_email", "email"),
        (3, "done", "exit"),
    ]
    assert by_step(items, "keep_objective")[0]["vars"] == {"objective": "Halve onboarding time"}
    assert by_step(items, "plan_email")[0]["subject"] == "A plan for Globex Corporation: Halve onboarding time"
    assert by_step(items, "objectives_task")[0]["owner"] == "priya@example.com"
    assert by_step(items, "done")[0]["outcome"] == "completed"


WINDOW_WORKSPACE = """\
timezone: America/New_York
sender: {email: cs@example.com, name: CS}
send_window: {days: [mon, tue, wed, thu, fri], hours: "09:00-17:00"}
holidays: [US]
"""
WINDOW_PLAYBOOK = """\
playbook: window
trigger: manual
steps:
  - email: {template: hello, to: [champion]}
    id: hello
  - wait: 1d
    id: pause
  - note: {text: "Followed up with {{ account.name }}"}
    id: follow_up
"""
PAST_PLAYBOOK = """\
playbook: past
trigger: manual
steps:
  - note: {text: "Started on {{ today }}"}
    id: first
"""
WINDOW_ACCOUNT = """\
id: pacific
name: Pacific Co
country: US
timezone: America/Los_Angeles
contacts:
  - {email: pat@pacific.example, role: champion}
"""


def window_folder(root: Path) -> Path:
    return write_folder(
        root,
        {
            "workspace.yaml": WINDOW_WORKSPACE,
            "window.yaml": WINDOW_PLAYBOOK,
            "past.yaml": PAST_PLAYBOOK,
            "templates/hello.subject.j2": "Hello {{ account.name }}",
            "templates/hello.html.j2": "<p>Hi {{ contact.name or 'there' }}</p>",
            "samples/pacific.yaml": WINDOW_ACCOUNT,
        },
    )


async def test_a_saturday_start_before_the_dst_change_sends_on_monday_at_nine(tmp_path: Path) -> None:
    folder = window_folder(tmp_path / "playbooks")
    la = ZoneInfo("America/Los_Angeles")
    # Saturday 2027-03-13 12:00 PST; clocks go forward on Sunday 2027-03-14.
    start = datetime(2027, 3, 13, 12, 0, tzinfo=la)
    sim = simulate(folder / "window.yaml", folder / "samples/pacific.yaml", start=start)
    items = lines_of(sim, "America/Los_Angeles")
    assert sim.outcome == "completed"
    assert tuples(items) == [(1, "hello", "email"), (1, "pause", "wait"), (2, "follow_up", "note")]
    hello, _, follow_up = items
    assert hello["at"] == "2027-03-15T09:00:00-07:00"
    assert hello["to"] == "pat@pacific.example" and hello["subject"] == "Hello Pacific Co"
    assert follow_up["at"] == "2027-03-16T09:00:00-07:00"
    assert follow_up["text"] == "Followed up with Pacific Co"


async def test_a_start_in_the_past_stamps_the_first_step_then(tmp_path: Path) -> None:
    folder = window_folder(tmp_path / "playbooks")
    start = datetime(2025, 1, 6, 10, 0, tzinfo=UTC)
    sim = simulate(folder / "past.yaml", folder / "samples/pacific.yaml", start=start)
    items = lines_of(sim, "UTC")
    assert sim.outcome == "completed"
    assert items == [
        {
            "at": "2025-01-06T10:00:00+00:00",
            "day": 0,
            "step": "first",
            "action": "note",
            "text": "Started on 2025-01-06",
        }
    ]
