"""The shipped account playbooks, simulated for the sample accounts: happy and unhappy paths.

Each simulation starts its own time-skipping server (dates are fixed, so nothing is shared) and
asserts the timeline `touchpoint simulate --json` prints: which emails, tasks and updates happen
on which day, which branch is taken, and the outcome. Steps the scorecard runs on its own clock
(checkpoints, `on_miss`) are compared apart from the main steps: they run in parallel with them.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import yaml

from touchpoint.dsl.runtime import EventIn
from touchpoint.dsl.validate import load_project
from touchpoint.dsl.walk import count_steps
from touchpoint.simulate import Simulated, load_account, simulate, timeline_json

ROOT = Path(__file__).resolve().parent.parent
PLAYBOOKS = ROOT / "playbooks"
SAMPLES = PLAYBOOKS / "samples"
NEW_YORK = ZoneInfo("America/New_York")
BERLIN = ZoneInfo("Europe/Berlin")
DENVER = ZoneInfo("America/Denver")


# ---------------------------------------------------------------------------- helpers


def lines_of(sim: Simulated, tz: str) -> list[dict[str, Any]]:
    """The `--json` lines, each checked for its shape; the outcome line last and alone."""
    items = [json.loads(line) for line in timeline_json(sim, tz)]
    for item in items[:-1]:
        assert {"at", "day", "step", "action"} <= set(item), item
    assert items[-1]["outcome"] == sim.outcome and {"at", "day", "because"} <= set(items[-1])
    return items[:-1]


def steps_of(items: list[dict[str, Any]], skip: tuple[str, ...] = ()) -> list[tuple[int, str, str]]:
    """(day, step, action), one entry per step: an email step to several recipients counts once."""
    out: list[tuple[int, str, str]] = []
    for item in items:
        if item["step"] in skip:
            continue
        entry = (item["day"], item["step"], item["action"])
        if item["action"] == "email" and out and out[-1] == entry:
            continue
        out.append(entry)
    return out


def by_step(items: list[dict[str, Any]], step: str) -> list[dict[str, Any]]:
    return [i for i in items if i["step"] == step]


def one(items: list[dict[str, Any]], step: str) -> dict[str, Any]:
    (item,) = by_step(items, step)
    return item


def recipients(items: list[dict[str, Any]], step: str) -> set[str]:
    return {i["to"] for i in by_step(items, step)}


def local(item: dict[str, Any], tz: ZoneInfo) -> str:
    """The local wall-clock minute an item happened at, e.g. '2026-03-09 09:00'."""
    return datetime.fromisoformat(item["at"]).astimezone(tz).strftime("%Y-%m-%d %H:%M")


async def simulate_triggered(
    playbook_file: Path,
    account_file: Path,
    *,
    trigger_data: dict[str, Any],
    start: datetime,
    events_file: Path | None = None,
    days: int = 730,
) -> Simulated:
    """`simulate()` started by the trigger's event with its `data` (`--trigger-data`)."""
    return simulate(playbook_file, account_file, events_file=events_file, start=start, days=days, trigger_data=trigger_data)


def test_playbook_library_validates_with_the_cli() -> None:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    result = subprocess.run(
        [sys.executable, "-m", "touchpoint.cli.main", "validate", str(PLAYBOOKS)],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=120,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    for playbook in ("onboarding-enterprise", "digital-tech-touch", "renewal-ai-plan", "health-drop-reengagement", "seat-swing-alert"):
        assert f"ok {playbook} " in result.stdout


def test_playbook_library_onboarding_enterprise_has_about_55_steps() -> None:
    project = load_project(PLAYBOOKS)
    assert not project.problems
    assert 50 <= count_steps(project.playbooks["onboarding-enterprise"].playbook) <= 60


def test_playbook_library_live_samples_are_not_enrolled_in_onboarding() -> None:
    # `touchpoint demo` loads every sample account: only the two scale samples are new customers.
    live = {}
    for path in sorted(SAMPLES.glob("*.yaml")):
        doc = yaml.safe_load(path.read_text(encoding="utf-8"))
        if isinstance(doc, dict) and "id" in doc and "name" in doc:
            live[doc["id"]] = bool((doc.get("properties") or {}).get("onboarded"))
    assert live == {"brandt": True, "contoso": True, "globex": True, "northwind": False, "rheinwerk": False, "tinyco": True}


# ---------------------------------------------------------------------------- onboarding-enterprise

ENTERPRISE_CARD = ("behind_day30_csm", "behind_day30_owner", "behind_day30_stage", "behind_day60_csm", "behind_day60_owner", "behind_day60_exec", "behind_day60_note", "missed_csm", "missed_owner", "missed_stage")


async def test_onboarding_enterprise_happy_path_converts_on_day_62() -> None:
    start = datetime(2026, 1, 5, 10, 0, tzinfo=NEW_YORK)  # Monday
    sim = simulate(
        PLAYBOOKS / "onboarding-enterprise.yaml",
        SAMPLES / "enterprise.yaml",
        events_file=SAMPLES / "enterprise-onboarding-events.yaml",
        start=start,
        days=120,
    )
    items = lines_of(sim, "America/New_York")
    assert sim.outcome == "converted"
    assert steps_of(items) == [
        (0, "welcome", "email"),
        (0, "stage_kickoff", "update"),
        (0, "plan_sizes", "set"),
        (0, "kickoff_task", "task"),
        (0, "sales_handoff", "task"),
        (3, "kickoff", "wait_for"),
        (3, "kickoff_recap", "email"),
        (3, "council_invite", "email"),
        (3, "charter_task", "task"),
        (8, "council", "wait_for"),
        (8, "council_formed", "if"),
        (8, "council_charter", "email"),
        (8, "council_note", "note"),
        (8, "admin_enablement", "email"),
        (8, "admin_session", "task"),
        (8, "stage_enablement", "update"),
        (10, "sso", "wait_for"),
        (16, "admin_training", "wait_for"),
        (16, "train_the_trainer", "email"),
        (16, "training_invite", "email"),
        (16, "training_task", "task"),
        (16, "stage_adoption", "update"),
        (16, "day30", "wait_until"),
        (30, "day30_report", "email"),
        (30, "community_seed", "email"),
        (30, "community_task", "task"),
        (34, "community", "wait_for"),
        (34, "community_note", "note"),
        (34, "persona_wiki", "set"),
        (34, "use_case_wiki", "email"),  # a Sunday: held until Monday 09:00
        (38, "wiki", "wait_for"),
        (38, "persona_runbooks", "set"),
        (38, "use_case_runbooks", "email"),
        (38, "day60", "wait_until"),
        (60, "day60_report", "email"),
        (60, "persona_prds", "set"),
        (60, "use_case_prds", "email"),
        (60, "after_prds", "wait"),
    ]
    # Ahead of plan on both checkpoints: no escalation ran.
    assert not [i for i in items if i["step"] in ENTERPRISE_CARD]
    assert recipients(items, "welcome") == {"hank@globex.example", "marge@globex.example"}
    assert one(items, "council_charter")["to"] == "marge@globex.example"
    assert recipients(items, "admin_enablement") == {"it-admins@globex.example"}
    assert one(items, "plan_sizes")["vars"] == {"community_target": 200, "training_sessions": 8}
    assert one(items, "kickoff_task")["owner"] == "priya@example.com"
    assert one(items, "sales_handoff")["owner"] == "sam@example.com"
    assert one(items, "council_formed")["branch"] == "then"
    assert one(items, "council_note")["text"] == "Onboarding council chartered: Engineering, Product, Marketing, Operations, Finance."
    assert one(items, "council_charter")["subject"] == "The Globex Corporation onboarding council charter"
    assert one(items, "training_task")["title"] == "Schedule 8 group trainings for 2000 users at Globex Corporation"
    assert one(items, "community_task")["title"] == "Launch Globex Corporation's help community with 200 power users"
    assert one(items, "community_note")["text"] == "Help community launched with 212 members (target 200)."
    assert {i["subject"] for i in by_step(items, "day30_report")} == {"Globex Corporation onboarding, day 30: 55% of the report card"}
    assert {i["subject"] for i in by_step(items, "day60_report")} == {"Globex Corporation onboarding, day 60: 75% of the report card"}
    assert local(one(items, "use_case_wiki"), NEW_YORK) == "2026-02-09 09:00"
    assert [i["subject"] for i in items if i.get("template") == "ent-use-case"] == [
        "Use-case map, step 1: the company wiki",
        "Use-case map, step 2: engineering runbooks",
        "Use-case map, step 3: product PRDs and roadmaps",
    ]
    assert sim.scorecard is not None
    assert sim.scorecard["score"] == 85
    assert {k: v["day"] for k, v in sim.scorecard["milestones"].items()} == {
        "kickoff_held": 3,
        "council_chartered": 8,
        "sso_configured": 10,
        "admins_trained": 16,
        "end_users_trained": 27,
        "community_launched": 34,
        "wiki_live": 38,
        "runbooks_live": 62,
        "prds_live": None,
        "content_calendar_live": None,
    }


async def test_onboarding_enterprise_german_account_behind_plan_escalates_and_misses() -> None:
    start = datetime(2026, 3, 2, 10, 0, tzinfo=BERLIN)  # Monday
    sim = simulate(
        PLAYBOOKS / "onboarding-enterprise.yaml",
        SAMPLES / "enterprise-de.yaml",
        events_file=SAMPLES / "enterprise-onboarding-behind-events.yaml",
        start=start,
        days=120,
    )
    items = lines_of(sim, "Europe/Berlin")
    assert sim.outcome == "completed"
    assert steps_of(items, skip=ENTERPRISE_CARD) == [
        (0, "welcome", "email"),
        (0, "stage_kickoff", "update"),
        (0, "plan_sizes", "set"),
        (0, "kickoff_task", "task"),
        (0, "sales_handoff", "task"),
        (5, "kickoff", "wait_for"),
        (6, "kickoff_recap", "email"),  # the kickoff was on a Saturday: Monday 09:00
        (6, "council_invite", "email"),
        (6, "charter_task", "task"),
        (13, "council", "wait_for"),
        (13, "council_late", "task"),
        (13, "council_formed", "if"),
        (13, "admin_enablement", "email"),
        (13, "admin_session", "task"),
        (13, "stage_enablement", "update"),
        (13, "sso", "wait_for"),  # SSO came on day 12, during the council wait (`seen: true`)
        (20, "admin_training", "wait_for"),
        (20, "admins_late", "task"),
        (20, "train_the_trainer", "email"),
        (20, "training_invite", "email"),
        (20, "training_task", "task"),
        (20, "stage_adoption", "update"),
        (20, "day30", "wait_until"),
        (30, "day30_report", "email"),
        (30, "community_seed", "email"),
        (30, "community_task", "task"),
        (40, "community", "wait_for"),
        (40, "community_late", "task"),
        (40, "persona_wiki", "set"),
        (41, "use_case_wiki", "email"),
        (41, "wiki", "wait_for"),
        (41, "persona_runbooks", "set"),
        (41, "use_case_runbooks", "email"),
        (41, "day60", "wait_until"),
        (62, "day60_report", "email"),  # day 60 is 1 May, a German holiday, then a weekend
        (62, "persona_prds", "set"),
        (62, "use_case_prds", "email"),
        (62, "after_prds", "wait"),
        (69, "persona_content", "set"),
        (69, "use_case_content", "email"),
        (69, "day85", "wait_until"),
        (85, "day90_review", "task"),
    ]
    assert steps_of([i for i in items if i["step"] in ENTERPRISE_CARD]) == [
        (30, "behind_day30_csm", "task"),
        (30, "behind_day30_owner", "task"),
        (30, "behind_day30_stage", "update"),
        (60, "behind_day60_csm", "task"),
        (60, "behind_day60_owner", "task"),
        (62, "behind_day60_exec", "email"),
        (62, "behind_day60_note", "note"),
        (90, "missed_csm", "task"),
        (90, "missed_owner", "task"),
        (90, "missed_stage", "update"),
    ]
    assert one(items, "council")["timeout"] is True
    assert one(items, "council_formed")["branch"] == "else"
    assert not by_step(items, "council_charter")
    for item in items:
        if item["action"] == "email":
            assert item["locale"] == "de", item
    assert {i["subject"] for i in by_step(items, "welcome")} == {"Willkommen, Brandt Logistik AG: Ihr 90-Tage-Onboarding-Plan"}
    assert recipients(items, "welcome") == {"petra.brandt@brandt.example", "tobias.klein@brandt.example"}
    assert one(items, "plan_sizes")["vars"] == {"community_target": 120, "training_sessions": 5}
    assert one(items, "community_seed")["subject"] == "Starten Sie Ihre Hilfe-Community mit 120 Power-Usern"
    day30 = one(items, "behind_day30_csm")
    assert day30["title"] == "Enterprise onboarding behind plan at day 30: Brandt Logistik AG (20%)"
    assert day30["owner"] == "jonas@example.com"
    assert one(items, "behind_day30_owner")["owner"] == "lena@example.com"
    assert one(items, "behind_day30_stage")["fields"] == {"onboarding_stage": "behind_plan"}
    assert one(items, "behind_day60_csm")["title"] == "Escalation: Brandt Logistik AG at 30% on day 60 (plan 60%)"
    exec_mail = one(items, "behind_day60_exec")
    assert exec_mail["to"] == "petra.brandt@brandt.example"
    assert exec_mail["subject"] == "Onboarding Brandt Logistik AG braucht Ihre Unterstützung: 30 % an Tag 62"
    assert local(exec_mail, BERLIN) == "2026-05-04 09:00"
    assert one(items, "behind_day60_note")["text"] == "Day 60 checkpoint missed: 30% (plan 60%). Escalated to the CSM and Lena Vogt."
    assert one(items, "missed_csm")["title"] == "Enterprise onboarding missed 80 by 90: Brandt Logistik AG (30%)"
    assert one(items, "missed_stage")["fields"] == {"onboarding_stage": "missed"}
    assert sim.scorecard is not None and sim.scorecard["met"] is False


# ---------------------------------------------------------------------------- digital-tech-touch

DIGITAL_START = datetime(2026, 3, 2, 10, 0, tzinfo=NEW_YORK)  # Monday; US clocks change on 8 March


async def test_digital_tech_touch_engaged_account_is_activated_and_handed_off() -> None:
    sim = simulate(
        PLAYBOOKS / "digital-tech-touch.yaml",
        SAMPLES / "digital.yaml",
        events_file=SAMPLES / "digital-engaged-events.yaml",
        start=DIGITAL_START,
    )
    items = lines_of(sim, "America/New_York")
    assert sim.outcome == "completed"
    assert steps_of(items) == [
        (0, "welcome", "email"),
        (1, "first_doc", "wait_for"),
        (1, "invite_team", "email"),
        (4, "ai_feature", "wait_for"),
        (4, "webinar", "email"),
        (5, "webinar_engagement", "wait_for"),
        (6, "webinar_click", "wait_for"),
        (6, "clicked", "if"),
        (7, "webinar_followup", "email"),
        (7, "day21", "wait_until"),
        (21, "activated", "if"),
        (21, "stage_activated", "update"),
        (21, "activated_email", "email"),
        (40, "growth", "wait_for"),
        (40, "grown", "if"),
        (40, "handoff", "task"),
        (40, "handoff_note", "note"),
    ]
    assert recipients(items, "welcome") == {"founder@tinyco.example", "ops@tinyco.example"}
    assert one(items, "invite_team")["subject"] == "12 of 20 seats in use: invite your team"
    assert one(items, "webinar_engagement")["event"] == "email.opened"
    assert one(items, "webinar_click")["event"] == "email.clicked"
    assert one(items, "clicked")["branch"] == "then"
    # The founder had three emails in the last 7 days (frequency cap): held for 168 hours after the
    # welcome, which is 11:00 once the clocks have moved forward.
    assert local(one(items, "webinar_followup"), NEW_YORK) == "2026-03-09 11:00"
    assert one(items, "stage_activated")["fields"] == {"digital_stage": "activated"}  # 14 of 20 weekly active
    handoff = one(items, "handoff")
    assert handoff["owner"] == "cs-ops@example.com"
    assert handoff["title"] == "Digital account TinyCo grew to 240 seats: assign a CSM"
    assert one(items, "handoff_note")["text"] == "Handed off to CS ops: 20 -> 240 seats."
    assert not [i for i in items if i["action"] == "email" and i.get("template") in ("digital-first-doc", "digital-ai-nudge")]


async def test_digital_tech_touch_quiet_account_gets_the_nudges_and_no_human() -> None:
    sim = simulate(
        PLAYBOOKS / "digital-tech-touch.yaml",
        SAMPLES / "digital.yaml",
        events_file=SAMPLES / "digital-quiet-events.yaml",
        start=DIGITAL_START,
    )
    items = lines_of(sim, "America/New_York")
    assert sim.outcome == "completed"
    assert steps_of(items) == [
        (0, "welcome", "email"),
        (3, "first_doc", "wait_for"),
        (3, "first_doc_nudge", "email"),
        (3, "invite_team", "email"),
        (8, "ai_feature", "wait_for"),
        (8, "ai_nudge", "email"),
        (8, "webinar", "email"),
        (10, "webinar", "email"),  # the founder's copy waits for a free slot under the frequency cap
        (11, "webinar_engagement", "wait_for"),
        (13, "webinar_click", "wait_for"),
        (13, "clicked", "if"),
        (13, "opened", "if"),
        (13, "webinar_reminder", "email"),
        (13, "day21", "wait_until"),
        (21, "activated", "if"),
        (21, "stage_not_activated", "update"),
        (21, "last_nudge", "email"),
        (81, "growth", "wait_for"),
        (81, "grown", "if"),
    ]
    assert one(items, "first_doc")["timeout"] is True
    assert one(items, "webinar_click")["timeout"] is True
    assert one(items, "clicked")["branch"] == "else"
    assert one(items, "opened")["branch"] == "then"
    assert {i["to"]: i["day"] for i in by_step(items, "webinar")} == {"ops@tinyco.example": 8, "founder@tinyco.example": 10}
    assert local(one(items, "webinar_reminder"), NEW_YORK) == "2026-03-16 09:00"  # from Sunday to Monday
    assert one(items, "stage_not_activated")["fields"] == {"digital_stage": "not_activated"}
    assert one(items, "last_nudge")["subject"] == "Need a hand getting TinyCo started?"
    assert one(items, "grown")["branch"] == "else"
    assert not [i for i in items if i["action"] == "task"]


# ---------------------------------------------------------------------------- renewal-ai-plan


async def test_renewal_ai_plan_quotes_the_objective_and_follows_up_the_workshop() -> None:
    # 120 days before globex's renewal on 2027-01-05, at 06:00: Labor Day, so mail waits a day.
    start = datetime(2026, 9, 7, 6, 0, tzinfo=NEW_YORK)
    sim = simulate(
        PLAYBOOKS / "renewal-ai-plan.yaml",
        SAMPLES / "enterprise.yaml",
        events_file=SAMPLES / "renewal-events.yaml",
        start=start,
    )
    items = lines_of(sim, "America/New_York")
    assert sim.outcome == "completed"
    assert steps_of(items) == [
        (1, "objectives_email", "email"),
        (1, "objectives_task", "task"),
        (6, "objective", "wait_for"),
        (6, "keep_objective", "set"),
        (6, "objective_note", "note"),
        (6, "plan_draft", "draft"),
        (6, "plan_task", "task"),
        (6, "plan_email", "approval"),
        (7, "plan_email", "approval"),
        (7, "plan_email", "email"),
        (13, "plan_review", "wait_for"),
        (13, "plan_rejected", "if"),
        (14, "workshop_invite", "email"),
        (15, "workshop_booking", "wait_for"),
        (15, "workshop_booked", "wait_for"),
        (23, "workshop", "wait_for"),
        (23, "workshop_held", "if"),
        (23, "keep_workflows", "set"),
        (23, "workshop_followup", "email"),
        (23, "workshop_note", "note"),
        (23, "value_draft", "draft"),
        (23, "credit_sizing", "task"),
        (23, "stage_value_review", "update"),
        (23, "value_review_due", "wait_until"),
        (60, "value_review", "email"),
        (60, "proposal", "task"),
    ]
    objective = "Cut the time to onboard a new field engineer from six weeks to two"
    assert local(by_step(items, "objectives_email")[0], NEW_YORK) == "2026-09-08 09:00"
    assert recipients(items, "objectives_email") == {"marge@globex.example", "hank@globex.example"}
    assert one(items, "keep_objective")["vars"] == {"objective": objective, "objective_by": "Marge Lee"}
    assert one(items, "objective_note")["text"] == f'Renewal objective, in Marge Lee\'s words: "{objective}"'
    # The AI draft (the `none` backend in simulations: the fallback, filled in) quotes the objective
    # in the customer's words and the account's usage; the CSM gets a task and the approval.
    draft = one(items, "plan_draft")
    assert (draft["into"], draft["backend"], draft["source"]) == ("plan", "none", "fallback")
    assert draft["text"] == sim.vars["plan"] and draft["words"] == len(sim.vars["plan"].split())
    assert f'Your objective, in your words: "{objective}"' in sim.vars["plan"] and "1450 active users" in sim.vars["plan"]
    assert f'"{objective}"' in draft["prompt"] and "500 using AI every week" in draft["prompt"] and "90-minute AI workshop" in draft["prompt"]
    assert one(items, "plan_task")["owner"] == "priya@example.com"
    requested, approved = (i for i in by_step(items, "plan_email") if i["action"] == "approval")
    assert (requested["status"], requested["by"], set(requested["to"])) == ("requested", "priya@example.com", {"marge@globex.example", "hank@globex.example"})
    assert (approved["status"], approved["by"]) == ("approved", "priya@example.com")
    sent = [i for i in by_step(items, "plan_email") if i["action"] == "email"]
    assert {i["subject"] for i in sent} == {f"A plan for Globex Corporation: {objective}"}
    assert {i["to"] for i in sent} == {"marge@globex.example", "hank@globex.example"}
    assert all(i["held"]["reason"] == "approval" for i in sent)
    assert local(sent[0], NEW_YORK) == "2026-09-14 09:00"  # approved at 06:00, sent when the window opens
    assert one(items, "plan_review")["event"] == "plan.reviewed"
    assert one(items, "plan_rejected")["branch"] == "else"
    assert one(items, "workshop_invite")["subject"] == "Your 90-minute AI workshop, Globex Corporation"
    assert one(items, "workshop_booked")["event"] == "workshop.booked"  # already seen: at once
    assert one(items, "workshop_held")["branch"] == "then"
    assert {i["subject"] for i in by_step(items, "workshop_followup")} == {"The 3 AI workflows we built together"}
    assert one(items, "workshop_note")["text"] == (
        "AI workshop held: 3 workflows built (Field engineer onboarding checklist, Incident summary to runbook, Weekly site report digest)."
    )
    # The value story for credit sizing, in the customer's terms, goes to the CSM's task only.
    assert sim.vars["value_story"].startswith(f'Their goal, in their words: "{objective}".')
    assert "3 AI workflows from the workshop" in sim.vars["value_story"]
    assert one(items, "credit_sizing")["title"] == "Size AI credits for Globex Corporation's renewal: 500 weekly AI users, 3 workflows from the workshop"
    assert one(items, "stage_value_review")["fields"] == {"renewal_stage": "value_review"}
    assert one(items, "value_review_due")["until"] == "2026-11-06T00:00:00-05:00"  # 60 days before the renewal
    assert recipients(items, "value_review") == {"marge@globex.example", "hank@globex.example"}
    proposal = one(items, "proposal")
    assert proposal["owner"] == "sam@example.com"
    assert proposal["title"] == "Renewal proposal for Globex Corporation with AI credits, due before 2027-01-05"
    assert not [i for i in items if "stalled" in i["step"] or i["step"] in ("workshop_reminder", "workshop_missed", "plan_rework")]


async def test_renewal_ai_plan_a_plan_the_csm_rejects_is_never_sent_and_is_reworked() -> None:
    start = datetime(2026, 9, 7, 6, 0, tzinfo=NEW_YORK)
    sim = simulate(
        PLAYBOOKS / "renewal-ai-plan.yaml",
        SAMPLES / "enterprise.yaml",
        events_file=SAMPLES / "renewal-rejected-events.yaml",
        start=start,
    )
    items = lines_of(sim, "America/New_York")
    assert sim.outcome == "completed"
    assert steps_of(items)[5:14] == [
        (6, "plan_draft", "draft"),
        (6, "plan_task", "task"),
        (6, "plan_email", "approval"),
        (7, "plan_email", "approval"),
        (7, "plan_review", "wait_for"),
        (7, "plan_rejected", "if"),
        (7, "plan_rework", "task"),
        (7, "workshop_invite", "email"),
        (12, "workshop_booking", "wait_for"),
    ]
    rejected = [i for i in by_step(items, "plan_email") if i["action"] == "approval"][-1]
    assert (rejected["status"], rejected["by"], rejected["reason"]) == ("rejected", "priya@example.com", "too generic for a field-service company")
    assert not [i for i in by_step(items, "plan_email") if i["action"] == "email"]  # the draft never reached the customer
    assert one(items, "plan_review")["event"] == "approval.decided"
    assert one(items, "plan_rejected")["branch"] == "then"
    rework = one(items, "plan_rework")
    assert rework["owner"] == "priya@example.com"
    assert rework["title"] == "Rework Globex Corporation's AI plan with the champion in the workshop (not sent: too generic for a field-service company)"
    assert one(items, "workshop_held")["branch"] == "then"
    assert {i["subject"] for i in by_step(items, "workshop_followup")} == {"The 2 AI workflows we built together"}
    assert "2 AI workflows from the workshop" in sim.vars["value_story"]
    assert not [i for i in items if "stalled" in i["step"]]


async def test_renewal_ai_plan_german_account_never_books_the_workshop() -> None:
    # 120 days before brandt's renewal on 2027-03-01 is a Sunday: mail waits for Monday 09:00.
    start = datetime(2026, 11, 1, 6, 0, tzinfo=BERLIN)
    sim = simulate(
        PLAYBOOKS / "renewal-ai-plan.yaml",
        SAMPLES / "enterprise-de.yaml",
        events_file=SAMPLES / "renewal-stalled-events.yaml",
        start=start,
    )
    items = lines_of(sim, "Europe/Berlin")
    assert sim.outcome == "completed"
    assert steps_of(items) == [
        (1, "objectives_email", "email"),
        (1, "objectives_task", "task"),
        (5, "objective", "wait_for"),
        (5, "keep_objective", "set"),
        (5, "objective_note", "note"),
        (5, "plan_draft", "draft"),
        (5, "plan_task", "task"),
        (5, "plan_email", "approval"),
        (6, "plan_email", "approval"),
        (8, "plan_email", "email"),
        (18, "plan_review", "wait_for"),
        (18, "plan_stalled", "task"),
        (18, "plan_rejected", "if"),
        (18, "workshop_invite", "email"),
        (23, "workshop_booking", "wait_for"),
        (23, "workshop_reminder", "email"),
        (30, "workshop_booked", "wait_for"),
        (30, "workshop_stalled_csm", "task"),
        (30, "workshop_stalled_owner", "task"),
        (51, "workshop", "wait_for"),
        (51, "workshop_missed", "note"),
        (51, "workshop_held", "if"),
        (51, "value_draft", "draft"),
        (51, "credit_sizing", "task"),
        (51, "stage_value_review", "update"),
        (51, "value_review_due", "wait_until"),
        (60, "value_review", "email"),
        (60, "proposal", "task"),
    ]
    objective = "Jede Schicht startet mit einer aktuellen Übergabe"
    assert local(by_step(items, "objectives_email")[0], BERLIN) == "2026-11-02 09:00"
    for item in items:
        if item["action"] == "email":
            assert item["locale"] == "de", item
    assert {i["subject"] for i in by_step(items, "plan_email") if i["action"] == "email"} == {f"Ein Plan für Brandt Logistik AG: {objective}"}
    assert sim.vars["plan"].startswith("KI-Transformationsplan für Brandt Logistik AG")  # the fallback in the account's language
    assert f"Ihr Ziel, in Ihren Worten: „{objective}“" in sim.vars["plan"]
    assert one(items, "workshop_invite")["subject"] == "Ihr 90-minütiger KI-Workshop, Brandt Logistik AG"
    assert one(items, "workshop_reminder")["subject"] == "Erinnerung: Buchen Sie Ihren 90-minütigen KI-Workshop"
    assert one(items, "workshop_reminder")["to"] == "tobias.klein@brandt.example"
    for step in ("plan_review", "workshop_booking", "workshop_booked", "workshop"):
        assert one(items, step)["timeout"] is True
    assert one(items, "workshop_stalled_csm")["owner"] == "jonas@example.com"
    assert one(items, "workshop_stalled_owner")["owner"] == "lena@example.com"
    assert one(items, "workshop_stalled_owner")["title"] == "Renewal at risk: Brandt Logistik AG has not booked the AI workshop"
    assert one(items, "workshop_held")["branch"] == "else"
    assert one(items, "credit_sizing")["title"] == "Size AI credits for Brandt Logistik AG's renewal: 210 weekly AI users, 0 workflows from the workshop"
    assert {i["subject"] for i in by_step(items, "value_review")} == {"Brandt Logistik AG: der Wertüberblick vor Ihrer Verlängerung"}


# ---------------------------------------------------------------------------- health-drop-reengagement

DROP = {"score": 38, "previous_score": 64, "tier": "red", "previous_tier": "yellow"}
HEALTH_START = datetime(2026, 3, 2, 8, 0, tzinfo=DENVER)  # Monday, after the 06:00 health sweep


async def test_health_drop_reengagement_champion_answers_and_the_account_recovers() -> None:
    sim = await simulate_triggered(
        PLAYBOOKS / "health-drop-reengagement.yaml",
        SAMPLES / "mid-market.yaml",
        trigger_data=DROP,
        events_file=SAMPLES / "health-drop-events.yaml",
        start=HEALTH_START,
    )
    items = lines_of(sim, "America/Denver")
    assert sim.outcome == "converted"
    assert steps_of(items) == [
        (0, "drop_task", "task"),
        (0, "stage_at_risk", "update"),
        (0, "champion_outreach", "email"),
        (2, "champion_reply", "wait_for"),
        (2, "reply_note", "note"),
        (2, "two_weeks", "wait_until"),
    ]
    task = one(items, "drop_task")
    assert task["title"] == "Health drop at Contoso Health: 64 -> 38 (red)"
    assert task["owner"] == "dana@example.com"
    assert one(items, "stage_at_risk")["fields"] == {"health_status": "at_risk"}
    outreach = one(items, "champion_outreach")
    assert outreach["to"] == "jordan@contoso.example"
    assert outreach["subject"] == "Contoso Health: can we help?"
    assert local(outreach, DENVER) == "2026-03-02 09:00"  # held until the window opens
    assert one(items, "reply_note")["text"] == "Champion booked a call (2026-03-05 10:00)."


async def test_health_drop_reengagement_silent_champion_leads_to_the_red_account_review() -> None:
    sim = await simulate_triggered(
        PLAYBOOKS / "health-drop-reengagement.yaml",
        SAMPLES / "mid-market.yaml",
        trigger_data=DROP,
        events_file=SAMPLES / "health-drop-silent-events.yaml",
        start=HEALTH_START,
    )
    items = lines_of(sim, "America/Denver")
    assert sim.outcome == "completed"
    assert steps_of(items) == [
        (0, "drop_task", "task"),
        (0, "stage_at_risk", "update"),
        (0, "champion_outreach", "email"),
        (4, "champion_reply", "wait_for"),
        (4, "multithread", "email"),
        (4, "exec_sponsor", "task"),
        (4, "silent_note", "note"),
        (4, "two_weeks", "wait_until"),
        (14, "still_red", "if"),
        (14, "review_flag", "update"),
        (14, "review_task", "task"),
    ]
    assert one(items, "champion_reply")["timeout"] is True
    assert recipients(items, "multithread") == {"it@contoso.example", "morgan@contoso.example"}
    assert {i["subject"] for i in by_step(items, "multithread")} == {"Usage at Contoso Health: a short review?"}
    sponsor = one(items, "exec_sponsor")
    assert sponsor["owner"] == "sam@example.com"
    assert sponsor["title"] == "Executive sponsor for Contoso Health: write to Morgan Blake"
    assert not by_step(items, "reply_note")
    assert one(items, "still_red")["branch"] == "then"
    assert one(items, "review_flag")["fields"] == {"red_account_review": True, "health_status": "red_review"}
    review = one(items, "review_task")
    assert review["owner"] == "dana@example.com"
    # The day-7 health.changed moved account.health to 35, as the account workflow does in production.
    assert review["title"] == "Red-account review: Contoso Health still red two weeks after the drop (score 35.0)"


# ---------------------------------------------------------------------------- seat-swing-alert

SWINGS = yaml.safe_load((SAMPLES / "seat-swing-events.yaml").read_text(encoding="utf-8"))
SWING_START = datetime(2026, 3, 3, 11, 0, tzinfo=DENVER)


async def test_seat_swing_alert_batch_add_goes_to_the_account_owner() -> None:
    sim = await simulate_triggered(
        PLAYBOOKS / "seat-swing-alert.yaml", SAMPLES / "mid-market.yaml", trigger_data=SWINGS["batch_add"], start=SWING_START
    )
    items = lines_of(sim, "America/Denver")
    assert sim.outcome == "completed"
    assert steps_of(items) == [(0, "direction", "if"), (0, "expansion_task", "task"), (0, "expansion_flag", "update")]
    assert one(items, "direction")["branch"] == "then"
    task = one(items, "expansion_task")
    assert task["owner"] == "sam@example.com"
    assert task["title"] == "Expansion signal: Contoso Health added 50 seats (450 -> 500)"
    assert one(items, "expansion_flag")["fields"] == {"expansion_signal": "2026-03-03: +50 seats"}


async def test_seat_swing_alert_quiet_removal_goes_to_the_csm() -> None:
    sim = await simulate_triggered(
        PLAYBOOKS / "seat-swing-alert.yaml", SAMPLES / "mid-market.yaml", trigger_data=SWINGS["quiet_removal"], start=SWING_START
    )
    items = lines_of(sim, "America/Denver")
    assert sim.outcome == "completed"
    assert steps_of(items) == [(0, "direction", "if"), (0, "removal_task", "task"), (0, "removal_note", "note")]
    assert one(items, "direction")["branch"] == "else"
    task = one(items, "removal_task")
    assert task["owner"] == "dana@example.com"
    assert task["title"] == "Seats removed at Contoso Health: 450 -> 430 (-20)"
    assert one(items, "removal_note")["text"] == "Seat removal of 20 (-4.4%) with no conversation logged: CSM task opened."


def test_seat_swing_alert_trigger_matches_batch_adds_and_quiet_removals() -> None:
    from touchpoint.dsl import expressions as ex
    from touchpoint.dsl.runtime import build_context

    project = load_project(PLAYBOOKS)
    playbook = project.playbooks["seat-swing-alert"].playbook
    assert playbook.reenroll == "always"
    account = load_account(SAMPLES / "mid-market.yaml", project.workspace)

    def fires(data: dict[str, Any]) -> bool:
        context = build_context(account=account, event=EventIn(type="seats.changed", data=data), run=None, now=SWING_START, tz="UTC")
        return ex.is_true(playbook.trigger.when, context)  # type: ignore[union-attr]

    assert fires(SWINGS["batch_add"]) and fires(SWINGS["quiet_removal"])
    assert fires({"delta": 5, "delta_pct": 25.0})  # a small account growing by a quarter
    assert not fires({"delta": 10, "delta_pct": 2.2})
    assert not fires({"delta": -5, "delta_pct": -1.1})


# ---------------------------------------------------------------------------- every email renders

LIBRARY = ("onboarding-enterprise", "digital-tech-touch", "renewal-ai-plan", "health-drop-reengagement")


def test_playbook_library_every_email_renders_for_every_sample_account_in_english_and_german() -> None:
    from touchpoint.dsl.runtime import RunView, build_context
    from touchpoint.dsl.schema import EmailStep
    from touchpoint.dsl.walk import all_steps
    from touchpoint.email.render import render_email

    project = load_project(PLAYBOOKS)
    names = sorted({s.email.template for p in LIBRARY for _, s in all_steps(project.playbooks[p].playbook) if isinstance(s, EmailStep)})
    assert len(names) == 30
    accounts = [load_account(path, project.workspace) for path in sorted(SAMPLES.glob("*.yaml")) if "id" in (yaml.safe_load(path.read_text()) or [])]
    assert {a.segment for a in accounts} == {"scale", "mid-market", "enterprise", "digital"}
    now = datetime(2026, 3, 2, 10, 0, tzinfo=UTC)
    run = RunView(
        id="run-1", playbook="p", version="v1", started_at=now, day=30,
        vars={"objective": "Halve onboarding time", "workflows": ["Triage", "Digest"], "community_target": 120, "training_sessions": 5, "persona": "prds"},
        scorecard={"score": 40, "target": 80.0, "by_day": 90, "met": False, "milestones": {"kickoff_held": {"done": True, "day": 3}, "sso_configured": {"done": False, "day": None}}},
    )
    event = EventIn(type="workshop.completed", data={"members": ["Engineering", "Product"]})
    for account in accounts:
        for contact in account.contacts:
            context = {**build_context(account=account, event=event, run=run, now=now, tz="UTC"), "contact": contact.model_dump()}
            for name in names:
                for locale in ("en", "de"):
                    email = render_email(PLAYBOOKS / "templates", name, context, locales=[locale], unsubscribe_url="https://u.example/x")
                    assert email.subject, (name, locale)
                    assert ("<p>Hallo " if locale == "de" else "<p>Hi ") in email.html, (name, locale)
                    assert "https://u.example/x" in email.html
