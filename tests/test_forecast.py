"""`touchpoint forecast` (contract section 14): the same runs `simulate` makes, counted per day.

The reference is `touchpoint.simulate.simulate`, called once per account: its timelines are
counted here, independently of the forecast's own counting, and must match the forecast day by
day. Forecasts with and without replays (`touchpoint.forecast_replay`) must match each other too.
"""

from __future__ import annotations

import json
import os
import random
import sqlite3
import subprocess
import sys
from collections import Counter, defaultdict
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from tests.conftest import write_folder
from touchpoint.cli.main import app
from touchpoint.dsl.errors import ContractError
from touchpoint.dsl.timing import zone
from touchpoint.forecast import PARALLEL_FROM, Forecast, ForecastError, forecast
from touchpoint.simulate import simulate

ROOT = Path(__file__).resolve().parent.parent
PLAYBOOKS = ROOT / "playbooks"
NEW_YORK = "America/New_York"
#: Monday 2026-09-07, midnight in New York (the shipped workspace's zone).
START = datetime(2026, 9, 7, 4, 0, tzinfo=UTC)
EVENTS = """\
- {after: 3d, type: setup.sso_configured}
- {after: 12d, type: use_case.activated}
- {after: 26d, type: training.completed, data: {audience: admins}}
"""
ZONES = [("America/New_York", "US", "en"), ("America/Chicago", "US", "en"), ("Europe/Berlin", "DE", "de"), ("Asia/Tokyo", "JP", "en")]


def book(count: int, *, seed: int = 11) -> list[dict[str, Any]]:
    """Accounts of every kind: some the scale onboarding enrolls, some it does not."""
    rng = random.Random(seed)
    out = []
    for i in range(count):
        tz, country, locale = rng.choice(ZONES)
        licensed = rng.randint(10, 1500)
        csm = rng.randrange(6)
        contacts = [{"email": f"champ{i}@a{i}.example", "name": "Kim", "role": "champion", "timezone": tz, "country": country, "locale": locale}]
        if rng.random() < 0.7:
            contacts.append({"email": f"it{i}@a{i}.example", "role": "admin"})
        if rng.random() < 0.2:
            contacts.append({"email": f"CHAMP{i}@a{i}.example", "role": "admin"})  # the champion again: one recipient
        doc: dict[str, Any] = {
            "id": f"a{i:04d}",
            "name": f"Account {i}",
            "segment": rng.choice(["scale", "mid-market", "mid-market", "enterprise", "digital"]),
            "country": country,
            "timezone": tz,
            "locale": locale,
            "arr": licensed * 200,
            "seats": {"licensed": licensed, "active": rng.randint(0, licensed)},
            "contacts": contacts,
            "metrics": {"weekly_active_users": rng.randint(0, licensed), "integrations": rng.randint(0, 3)},
            "properties": {"onboarded": rng.random() < 0.1, "churned": rng.random() < 0.05},
        }
        if rng.random() < 0.9:
            doc["csm"] = {"name": f"CSM {csm}", "email": f"csm{csm}@example.com"}
        out.append(doc)
    return out


def write_accounts(folder: Path, accounts: list[dict[str, Any]]) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for doc in accounts:
        (folder / f"{doc['id']}.json").write_text(json.dumps(doc))
    return folder


def counted(records: list[Any], tz: str, days: dict[str, dict[str, Any]], end: datetime) -> None:
    """Add a `simulate` timeline to per-day counts, as contract section 14 describes them.

    The window is [start, end): a step due at its very end (a checkpoint at midnight of day 30
    of a 30-day window) is the next day's, outside it; `simulate --days` still shows it.
    """
    for record in records:
        detail = record.detail
        if record.action not in ("email", "task", "webhook") or "status" in detail or record.at >= end:
            continue
        day = days.setdefault(record.at.astimezone(zone(tz)).date().isoformat(), {"emails": Counter(), "tasks": Counter(), "webhooks": 0, "held": 0})
        if record.action == "email":
            day["emails"][detail["template"]] += 1
            day["held"] += 1 if "held" in detail else 0
        elif record.action == "task":
            day["tasks"][detail["owner"]] += 1
        else:
            day["webhooks"] += 1


def as_days(result: Forecast) -> dict[str, dict[str, Any]]:
    return {
        item["date"]: {"emails": Counter(item["emails"]), "tasks": Counter(item["tasks"]), "webhooks": item["webhooks"], "held": item["held"]}
        for item in result.daily()
        if item["emails"] or item["tasks"] or item["webhooks"] or item["held"]
    }


def test_forecast_of_200_accounts_equals_200_simulations_summed(tmp_path: Path) -> None:
    accounts = book(200)
    folder = write_accounts(tmp_path / "accounts", accounts)
    events = tmp_path / "events.yaml"
    events.write_text(EVENTS)
    playbook = PLAYBOOKS / "onboarding-scale.yaml"
    result = forecast(playbook, accounts=folder, events_file=events, days=90, start=START, jobs=1)
    expected: dict[str, dict[str, Any]] = {}
    outcomes: Counter[str] = Counter()
    enrolled = 0
    for doc in accounts:
        if doc["segment"] not in ("scale", "mid-market") or doc["properties"]["onboarded"]:
            continue  # the trigger's `when`; `simulate` does not check it
        enrolled += 1
        sim = simulate(playbook, folder / f"{doc['id']}.json", events_file=events, start=START, days=90)
        counted(sim.records, NEW_YORK, expected, START + timedelta(days=90))
        outcomes[sim.outcome] += 1
    assert 60 < enrolled < 140
    assert result.enrolled == enrolled and result.considered == 200
    assert as_days(result) == expected
    assert result.tally.outcomes == outcomes and len(outcomes) >= 2  # some exit (churned), some run to the end
    summary = result.summary()
    assert summary["emails"] == sum(sum(d["emails"].values()) for d in expected.values()) > 0
    assert summary["tasks"] == sum(sum(d["tasks"].values()) for d in expected.values()) > 0
    assert summary["accounts"] == enrolled
    assert "cs-ops@example.com" in summary["peak_week"]  # the fallback owner of accounts without a CSM
    assert result.tally.replayed > 0
    again = forecast(playbook, accounts=folder, events_file=events, days=90, start=START, jobs=1, replay=False)
    assert again.tally.replayed == 0 and again.daily() == result.daily() and again.summary() == summary


def test_forecast_and_simulate_agree_on_one_account_and_its_events(tmp_path: Path) -> None:
    doc = book(40)[3] | {"segment": "scale", "properties": {}}
    folder = write_accounts(tmp_path / "one", [doc])
    events = tmp_path / "events.yaml"
    events.write_text(
        EVENTS
        + "- {after: 5d, type: usage.reported, data: {metrics: {integrations: 3}}}\n"
        + "- {after: 40d, account: {seats: {active: 1}}}\n"
    )
    for name in ("onboarding-scale.yaml", "onboarding-enterprise.yaml", "digital-tech-touch.yaml"):
        playbook = PLAYBOOKS / name
        sim = simulate(playbook, folder / f"{doc['id']}.json", events_file=events, start=START, days=60)
        expected: dict[str, dict[str, Any]] = {}
        counted(sim.records, NEW_YORK, expected, START + timedelta(days=60))
        result = forecast(playbook, accounts=folder / f"{doc['id']}.json", events_file=events, days=60, start=START)
        if result.enrolled:
            assert as_days(result) == expected, name
            assert result.tally.outcomes == Counter({sim.outcome: 1})
        assert result.tally.replayed == 0  # account-changing events: every account runs in full


TRICKY = {
    "workspace.yaml": "timezone: UTC\nsender: {email: cs@example.com}\nsend_window: {days: [mon, tue, wed, thu, fri], hours: '09:00-17:00'}\n"
    "holidays: [US, DE]\nfrequency_cap: {emails: 2, per: 7d}\ncrm: {fallback_owner: ops@example.com}\n",
    "tricky.yaml": """\
playbook: tricky
name: Decisions that read the account in every way
trigger: {event: account.created, when: "account.arr > 0"}
exit_when: "account.metrics.churn_risk > 0.9"
goal: "run.scorecard.score >= 50"
scorecard:
  target: {score: 50, by_day: 40}
  milestones:
    - {id: big, weight: 50, when: "account.seats.active >= 300"}
    - {id: sso, weight: 50, event: setup.sso_configured}
steps:
  - set: {tier: "'high' if account.seats.licensed > 500 else 'low'", key: "run.id ~ account.id"}
  - split:
      a: {weight: 1, steps: [{email: {template: hello}}]}
      b: {weight: 1, steps: [{task: {title: "Call", owner: csm}}]}
    id: arm
  - email: {template: hello, to: ["account.properties.billing or 'billing@central.example'", owner]}
  - wait: 2d
  - if: "run.vars.tier == 'high' and (contacts | length) > 1"
    then: [{task: {title: "Exec sponsor", owner: owner}}, {webhook: {url: "https://hooks.example/x"}}]
    else: [{task: {title: "Nudge", owner: ops@example.com}}]
  - repeat:
      every: 7d
      times: 3
      steps: [{email: {template: hello, to: [champion]}}]
  - wait_until: {day: 20}
  - task: {title: "Review", owner: csm}
    when: "account.metrics.usage and account.metrics.usage > 10"
""",
    "templates/hello.subject.j2": "Hello {{ account.name }}",
    "templates/hello.html.j2": "<p>Hi {{ contact.name }}</p>",
}


def test_replayed_accounts_count_exactly_as_runs_of_their_own(tmp_path: Path) -> None:
    root = write_folder(tmp_path / "pb", TRICKY)
    rng = random.Random(5)
    accounts = []
    for doc in book(400, seed=3):
        doc["metrics"]["churn_risk"] = rng.choice([0.1, 0.5, 0.95])
        doc["metrics"]["usage"] = rng.choice([0, 5, 20])
        doc["owner"] = {"email": rng.choice(["sam@example.com", "ops@example.com", "lee@example.com"])}
        if rng.random() < 0.3:
            doc["properties"]["billing"] = f"bill@{doc['id']}.example"
        accounts.append(doc)
    file = tmp_path / "book.json"
    file.write_text(json.dumps(accounts))
    events = tmp_path / "events.yaml"
    events.write_text("- {after: 9d, type: setup.sso_configured}\n")
    replayed = forecast(root / "tricky.yaml", accounts=file, events_file=events, days=45, start=START, jobs=1)
    full = forecast(root / "tricky.yaml", accounts=file, events_file=events, days=45, start=START, jobs=1, replay=False)
    assert replayed.tally.replayed > 50 and full.tally.replayed == 0
    assert replayed.daily() == full.daily()
    assert replayed.summary() == full.summary() and replayed.tally.outcomes == full.tally.outcomes
    assert len(full.tally.outcomes) >= 2 and full.summary()["emails"] > 0 and full.tally.counts  # not all alike


def json_lines(args: list[str], *, env: dict[str, str] | None = None) -> list[dict[str, Any]]:
    out = subprocess.run([sys.executable, "-m", "touchpoint.cli.main", "forecast", *args, "--json"], capture_output=True, text=True, env=env, cwd=ROOT, timeout=240)
    assert out.returncode == 0, out.stderr
    return [json.loads(line) for line in out.stdout.splitlines()]


def test_forecast_json_prints_every_day_then_the_summary(tmp_path: Path) -> None:
    accounts = book(PARALLEL_FROM + 100)  # spread over worker processes by default
    file = tmp_path / "book.json"
    file.write_text(json.dumps(accounts))
    lines = json_lines([str(PLAYBOOKS / "onboarding-scale.yaml"), "--accounts", str(file), "--days", "30", "--start", "2026-09-07"])
    *days, last = lines
    assert [d["date"] for d in days] == [(date(2026, 9, 7) + timedelta(days=n)).isoformat() for n in range(30)]
    for day in days:
        assert set(day) == {"date", "emails", "tasks", "approvals", "webhooks", "held"}
        assert all(isinstance(n, int) and n > 0 for kind in ("emails", "tasks", "approvals") for n in day[kind].values())
    assert any(not d["emails"] and not d["tasks"] for d in days)  # empty days are printed too (weekends)
    assert set(last) == {"summary"} and set(last["summary"]) == {"emails", "tasks", "accounts", "peak_week"}
    summary = last["summary"]
    assert summary["emails"] == sum(sum(d["emails"].values()) for d in days) > 0
    assert summary["tasks"] == sum(sum(d["tasks"].values()) for d in days) > 0
    weekly: dict[tuple[str, date], int] = defaultdict(int)
    for day in days:
        monday = date.fromisoformat(day["date"]) - timedelta(days=date.fromisoformat(day["date"]).weekday())
        for owner, n in day["tasks"].items():
            weekly[(owner, monday)] += n
    peaks: dict[str, int] = {}
    for (owner, _), n in weekly.items():
        peaks[owner] = max(peaks.get(owner, 0), n)
    assert summary["peak_week"] == peaks
    in_process = forecast(PLAYBOOKS / "onboarding-scale.yaml", accounts=file, days=30, start=date(2026, 9, 7), jobs=1)
    assert summary == in_process.summary() and days == in_process.daily()


def test_forecast_table_by_week(tmp_path: Path) -> None:
    folder = write_accounts(tmp_path / "accounts", book(30))
    result = CliRunner().invoke(app, ["forecast", str(PLAYBOOKS / "onboarding-scale.yaml"), "--accounts", str(folder), "--start", "2026-09-07", "--days", "28"])
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    header = next(i for i, line in enumerate(lines) if line.startswith("week of"))
    assert lines[header].split()[:6] == ["week", "of", "emails", "tasks", "approvals", "webhooks"]
    weeks = [line.split()[0] for line in lines[header + 1 : header + 5]]
    assert weeks == ["2026-09-07", "2026-09-14", "2026-09-21", "2026-09-28"]
    daily = forecast(PLAYBOOKS / "onboarding-scale.yaml", accounts=folder, days=28, start=date(2026, 9, 7), jobs=1)
    first = daily.daily()[:7]
    assert lines[header + 1].split()[1:3] == [str(sum(sum(d["emails"].values()) for d in first)), str(sum(sum(d["tasks"].values()) for d in first))]
    assert "Tasks by owner, busiest week first" in result.output and "Emails by template" in result.output
    assert f"{daily.enrolled} accounts enrolled of 30 considered" in result.output


def test_date_trigger_enrolls_each_account_on_its_own_date(tmp_path: Path) -> None:
    start = date(2026, 9, 7)
    renewals = {"in-window": start + timedelta(days=150), "first-day": start + timedelta(days=120), "too-late": start + timedelta(days=300), "passed": start + timedelta(days=60)}
    accounts = [
        {"id": key, "name": key, "segment": "enterprise", "timezone": NEW_YORK, "renewal_date": when.isoformat(), "csm": {"email": f"{key}@example.com"}, "contacts": [{"email": f"c@{key}.example", "role": "champion"}]}
        for key, when in renewals.items()
    ]
    accounts.append({**accounts[0], "id": "digital", "segment": "digital", "csm": {"email": "digital@example.com"}})  # `when` is false
    file = tmp_path / "book.json"
    file.write_text(json.dumps(accounts))
    result = forecast(PLAYBOOKS / "renewal-ai-plan.yaml", accounts=file, days=90, start=start)
    assert result.enrolled == 2
    first_task = {}
    for item in result.daily():
        for owner in item["tasks"]:
            first_task.setdefault(owner, item["date"])
    # The first task goes to the CSM on the day of the account's moment (06:00, renewal - 120d);
    # 14 days later the stalled objective also asks the owner (none here: the fallback owner).
    assert first_task == {"in-window@example.com": "2026-10-07", "first-day@example.com": "2026-09-07", "cs-ops@example.com": "2026-09-21"}


def test_forecast_from_the_store_writes_nothing(tmp_path: Path) -> None:
    from touchpoint.store import make_engine, migrate, session_factory
    from touchpoint.store.accounts import upsert_account

    url = f"sqlite:///{tmp_path / 'store.db'}"
    engine = make_engine(url)
    migrate(engine)
    with session_factory(engine).begin() as s:
        for doc in book(50):
            upsert_account(s, {k: v for k, v in doc.items() if k != "contacts"}, doc["contacts"])
    engine.dispose()

    def rows() -> dict[str, int]:
        with sqlite3.connect(tmp_path / "store.db") as db:
            tables = [t for (t,) in db.execute("select name from sqlite_master where type = 'table'")]
            return {t: db.execute(f'select count(*) from "{t}"').fetchone()[0] for t in tables}

    before = rows()
    lines = json_lines([str(PLAYBOOKS / "onboarding-scale.yaml"), "--start", "2026-09-07"], env={**os.environ, "TOUCHPOINT_DATABASE_URL": url})
    assert len(lines) == 91 and lines[-1]["summary"]["accounts"] > 0
    assert rows() == before and before["accounts"] == 50
    missing = CliRunner().invoke(app, ["forecast", str(PLAYBOOKS / "onboarding-scale.yaml")], env={"TOUCHPOINT_DATABASE_URL": f"sqlite:///{tmp_path / 'none.db'}"})
    assert missing.exit_code == 1 and "no store here" in missing.output and not (tmp_path / "none.db").exists()


def test_forecast_errors_name_the_file_line_and_field(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("- {id: ok, name: Fine}\n- id: broken\n  name: Broken\n  seats: {licensed: many}\n")
    with pytest.raises(ContractError) as caught:
        forecast(PLAYBOOKS / "onboarding-scale.yaml", accounts=bad, start=START)
    assert [str(p) for p in caught.value.problems] == [f"{bad}:4: [1].seats.licensed: input should be a valid integer, unable to parse string as an integer, found 'many'"]
    with pytest.raises(ForecastError, match="schedule trigger"):
        forecast(PLAYBOOKS / "weekly-seat-digest.yaml", accounts=bad, start=START)
    cli = CliRunner().invoke(app, ["forecast", str(PLAYBOOKS / "onboarding-scale.yaml"), "--accounts", str(tmp_path / "nowhere")])
    assert cli.exit_code == 1 and "nowhere:1: no such file or folder" in cli.output


def test_forecast_reads_the_csv_of_accounts_import(tmp_path: Path) -> None:
    book_csv = tmp_path / "book.csv"
    book_csv.write_text(
        "id,name,segment,timezone,seats.licensed,seats.active,csm.email,contact.email,contact.role\n"
        "acme,Acme,scale,America/Chicago,200,150,dana@example.com,kim@acme.example,champion\n"
        "acme,Acme,scale,America/Chicago,200,150,dana@example.com,it@acme.example,admin\n"
        "globex,Globex,enterprise,America/New_York,3000,100,lee@example.com,hank@globex.example,champion\n"
    )
    result = forecast(PLAYBOOKS / "onboarding-scale.yaml", accounts=book_csv, days=14, start=date(2026, 9, 7))
    assert (result.considered, result.enrolled) == (2, 1)
    first = result.daily()[0]
    assert first["emails"] == {"welcome": 2} and first["tasks"] == {"dana@example.com": 1}


def test_forecast_counts_approval_requests_by_approver_and_what_their_timeout_sends(tmp_path: Path) -> None:
    """Nobody decides in a forecast: each request is counted for its approver on the day it is
    made, and `on_timeout: send` lets the email go when the timeout passes (`skip` sends nothing)."""
    playbook = """\
playbook: reviewed
trigger: {event: account.created}
steps:
  - email: {template: hello, to: [champion], approval: {by: csm, timeout: 2d, on_timeout: ON_TIMEOUT}}
    id: intro
"""
    files = {
        "workspace.yaml": "timezone: UTC\nsender: {email: cs@example.com}\nsend_window: {days: [mon, tue, wed, thu, fri, sat, sun], hours: \"00:00-24:00\"}\n",
        "templates/hello.subject.j2": "Hello {{ account.name }}",
        "templates/hello.html.j2": "<p>Hi</p>",
    }
    accounts = write_accounts(tmp_path / "accounts", [doc for doc in book(40) if "csm" in doc][:20])
    totals = {}
    for choice in ("send", "skip"):
        folder = write_folder(tmp_path / choice, {**files, "reviewed.yaml": playbook.replace("ON_TIMEOUT", choice)})
        result = forecast(folder / "reviewed.yaml", accounts=accounts, days=10, start=date(2026, 9, 7), jobs=1)
        days = result.daily()
        approvals = Counter[str]()
        for day in days:
            approvals.update(day["approvals"])
        emails = sum(sum(day["emails"].values()) for day in days)
        assert sum(approvals.values()) == result.enrolled == 20 and all(by.startswith("csm") for by in approvals)
        first_email = next((d["date"] for d in days if d["emails"]), None)
        totals[choice] = (emails, first_email)
    assert totals["send"] == (20, "2026-09-09")  # two days after each request
    assert totals["skip"] == (0, None)
