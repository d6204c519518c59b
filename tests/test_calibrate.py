"""`touchpoint health calibrate` on a synthetic book with a planted truth.

Retention depends on the share of seats using AI weekly and on integrations (a raw metric the
health model does not use); comments and weekly actives are noise, yet the current model gives
comments half its weight. Calibration must find the two that matter, drop the noise, add
integrations, and score held-out accounts better than the current model.
"""

from __future__ import annotations

import datetime as dt
import json
import math
import os
import random
import subprocess
import sys
from pathlib import Path

import pytest
from sqlalchemy.orm import Session, sessionmaker

from tests.conftest import write_folder
from touchpoint.calibrate import CalibrationRefused, Outcome, calibrate, parse_horizon, read_outcomes, samples
from touchpoint.dsl.errors import ContractError
from touchpoint.dsl.workspace import HealthModel
from touchpoint.dsl.yamlpos import load_yaml
from touchpoint.store import make_engine, migrate, session_factory
from touchpoint.store.accounts import account_history, upsert_account

ROOT = Path(__file__).resolve().parent.parent
D0 = dt.datetime(2025, 3, 1, tzinfo=dt.UTC)
HEALTH = """\
schedule: "0 6 * * *"
metrics:
  # Share of seats using AI weekly.
  - {id: ai_weekly, value: "account.metrics.ai_weekly_users / account.seats.licensed", weight: 25, good: 0.3, bad: 0.0}
  # Comments written: a vanity metric.
  - {id: comments, value: "account.metrics.comments", weight: 50, good: 200, bad: 0}
  - {id: weekly_active, value: "account.metrics.weekly_active_users / account.seats.licensed", weight: 25, good: 0.6, bad: 0.2}
tiers: {green: 70, yellow: 40}
"""


def planted(factory: sessionmaker[Session], count: int, *, seed: int = 1) -> list[Outcome]:
    """Accounts whose metrics were recorded ~13 months before their outcome, and the outcomes."""
    rng = random.Random(seed)
    outcomes = []
    with factory.begin() as s:
        for i in range(count):
            licensed = rng.randint(50, 500)
            ai, integrations, comments, active = rng.random() * 0.4, rng.randint(0, 5), rng.randint(0, 400), rng.random()
            doc = {
                "id": f"a{i}",
                "name": f"A{i}",
                "arr": 1000,
                "seats": {"licensed": licensed, "active": int(licensed * active)},
                "metrics": {"ai_weekly_users": int(ai * licensed), "integrations": integrations, "comments": comments, "weekly_active_users": int(active * licensed)},
            }
            upsert_account(s, doc, [], at=D0 + dt.timedelta(days=rng.randint(0, 20)))
            # A later change must not leak into the features: they are read 12 months before.
            upsert_account(s, {**doc, "metrics": {**doc["metrics"], "comments": 0}}, [], at=D0 + dt.timedelta(days=200))
            good = rng.random() < 1 / (1 + math.exp(-(-2.0 + 8 * ai + 0.6 * integrations)))
            outcome = rng.choice(["retained", "expanded"]) if good else rng.choice(["churned", "contracted"])
            outcomes.append(Outcome(f"a{i}", outcome, (D0 + dt.timedelta(days=390 + rng.randint(0, 60))).date()))
    return outcomes


@pytest.fixture
def factory(tmp_path: Path) -> sessionmaker[Session]:
    engine = make_engine(f"sqlite:///{tmp_path}/store.db")
    migrate(engine)
    return session_factory(engine)


def model() -> HealthModel:
    data, _, _ = load_yaml(HEALTH)
    return HealthModel.model_validate(data)


def test_calibration_recovers_the_planted_metrics(factory: sessionmaker[Session]) -> None:
    outcomes = planted(factory, 500)
    outcomes.append(Outcome("a1", "churned", (D0 + dt.timedelta(days=100)).date()))  # no history 12 months before
    outcomes.append(Outcome("nobody", "churned", (D0 + dt.timedelta(days=400)).date()))
    with factory() as s:
        rows = account_history(s)
    found, skipped = samples(rows, outcomes, model(), parse_horizon("12mo"))
    assert len(found) == 500 and skipped == {"no history that far back": 1, "unknown account": 1}
    assert sum(s.features["comments"] for s in found) > 0  # the values of 12 months before, not the later zeros
    result = calibrate(found, model(), HEALTH, skipped=skipped)
    effects = {e.name: e for e in result.effects}
    assert set(effects) == {"ai_weekly", "comments", "weekly_active", "metrics.integrations"}
    assert effects["ai_weekly"].matters and effects["ai_weekly"].low > 0
    assert effects["metrics.integrations"].matters and effects["metrics.integrations"].low > 0
    assert not effects["comments"].matters and not effects["weekly_active"].matters
    assert effects["comments"].suggested_weight == 0 and effects["ai_weekly"].suggested_weight > 0
    assert result.auc_suggested > result.auc_current + 0.1 and result.auc_suggested > 0.75
    assert [a["id"] for a in result.added] == ["integrations"]
    suggested = HealthModel.model_validate(load_yaml(result.suggested_text)[0])
    assert [m.id for m in suggested.metrics] == ["ai_weekly", "integrations"]
    assert sum(m.weight for m in suggested.metrics) == 100 and suggested.tiers == model().tiers
    assert "-  - {id: comments" in result.diff and "-  # Comments written: a vanity metric.\n" in result.diff
    assert '+  - {id: integrations, value: "account.metrics.integrations"' in result.diff
    assert "  # Share of seats using AI weekly.\n" in result.suggested_text


def test_calibration_refuses_too_few_outcomes(factory: sessionmaker[Session]) -> None:
    outcomes = planted(factory, 30)
    with factory() as s:
        found, skipped = samples(account_history(s), outcomes, model(), parse_horizon("12mo"))
    with pytest.raises(CalibrationRefused, match=r"at least 40 outcomes .* found 30 \(\d+ good, \d+ bad\)"):
        calibrate(found, model(), HEALTH, skipped=skipped)
    with factory() as s:
        found, skipped = samples(account_history(s), outcomes, model(), parse_horizon("24mo"))
    with pytest.raises(CalibrationRefused, match=r"found 0 \(0 good, 0 bad\); left out: 30 no history that far back"):
        calibrate(found, model(), HEALTH, skipped=skipped)


def test_outcomes_file_and_horizon_errors(tmp_path: Path) -> None:
    bad = tmp_path / "outcomes.csv"
    bad.write_text("account_id,outcome,date\na1,retained,2026-01-05\na2,renewed,2026-01-05\n,churned,2026-02-01\na4,churned,soon\n")
    with pytest.raises(ContractError) as caught:
        read_outcomes(bad)
    assert [str(p) for p in caught.value.problems] == [
        f"{bad}:3: outcome: expected one of retained, expanded, contracted, churned, found 'renewed'",
        f"{bad}:4: account_id: required",
        f"{bad}:5: date: expected a date such as 2026-06-30, found 'soon'",
    ]
    assert parse_horizon("12mo") == (12, 0) and parse_horizon("1y") == (12, 0) and parse_horizon("90d") == (0, 90)
    with pytest.raises(ValueError, match="expected a number and a unit such as 12mo"):
        parse_horizon("12 months")


def test_health_calibrate_command(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path}/cli.db"
    engine = make_engine(url)
    migrate(engine)
    outcomes = planted(session_factory(engine), 300, seed=4)
    engine.dispose()
    csv = tmp_path / "outcomes.csv"
    csv.write_text("account_id,outcome,date\n" + "".join(f"{o.account_id},{o.outcome},{o.on.isoformat()}\n" for o in outcomes))
    folder = write_folder(tmp_path / "pb", {"health.yaml": HEALTH})
    env = {**os.environ, "TOUCHPOINT_DATABASE_URL": url, "COLUMNS": "160"}
    command = [sys.executable, "-m", "touchpoint.cli.main", "health", "calibrate", "--outcomes", str(csv), "--playbooks", str(folder)]
    out = subprocess.run([*command, "--json"], capture_output=True, text=True, env=env, cwd=ROOT, timeout=240)
    assert out.returncode == 0, out.stderr
    data = json.loads(out.stdout)
    assert data["samples"] == 300 and {e["name"] for e in data["effects"] if e["matters"]} >= {"metrics.integrations"}
    assert (folder / "health.yaml").read_text() == HEALTH  # nothing written
    tables = subprocess.run(command, capture_output=True, text=True, env=env, cwd=ROOT, timeout=240)
    assert tables.returncode == 0, tables.stderr
    assert "AUC on held-out accounts: current health score" in tables.stdout
    assert "--- health.yaml\n+++ health.yaml (suggested)\n" in tables.stdout
    assert any(line.split()[:1] == ["comments"] and "no" in line.split() for line in tables.stdout.splitlines())
    few = tmp_path / "few.csv"
    few.write_text("account_id,outcome,date\n" + "".join(f"{o.account_id},{o.outcome},{o.on.isoformat()}\n" for o in outcomes[:12]))
    refused = subprocess.run([*command[:-4], "--outcomes", str(few), "--playbooks", str(folder)], capture_output=True, text=True, env=env, cwd=ROOT, timeout=240)
    assert refused.returncode == 1 and "refused: calibration needs at least 40 outcomes" in refused.stderr

