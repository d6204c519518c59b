"""`touchpoint report` against a hand-built portfolio whose NRR is known, on SQLite and PostgreSQL;
the account history that upserts write, and migration 0005 filling it for existing accounts."""

from __future__ import annotations

import datetime as dt
import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import Engine, text
from sqlalchemy.orm import Session, sessionmaker

from tests import pg
from tests.conftest import write_folder
from touchpoint.dsl.workspace import Activity, Workspace
from touchpoint.report import build_report, parse_period
from touchpoint.store import make_engine, migrate, session_factory
from touchpoint.store.accounts import account_history, record_event, upsert_account
from touchpoint.store.runs import add_run_step, upsert_run

ROOT = Path(__file__).resolve().parent.parent
UTC = dt.UTC


def at(month: int, day: int, hour: int = 12, year: int = 2026) -> dt.datetime:
    return dt.datetime(year, month, day, hour, tzinfo=UTC)


@pytest.fixture(params=["sqlite", "postgresql"])
def engine(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Engine]:
    if request.param == "sqlite":
        url = f"sqlite:///{tmp_path}/store.db"
        engine = make_engine(url)
        migrate(engine)
        yield engine
        engine.dispose()
        return
    try:
        pg.check()
    except pg.PostgresUnreachable as exc:
        pytest.fail(str(exc), pytrace=False)
    with pg.schema("tp_report") as schema:
        engine = make_engine(pg.schema_url(schema))
        migrate(engine)
        yield engine
        engine.dispose()


def put(s: Session, account_id: str, when: dt.datetime, arr: float, *, segment: str = "mid-market", csm: str | None = "dana@example.com", licensed: int = 100, active: int = 50, **metrics: float) -> None:
    doc: dict[str, Any] = {"id": account_id, "name": account_id, "segment": segment, "arr": arr, "seats": {"licensed": licensed, "active": active}, "metrics": metrics}
    if csm:
        doc["csm"] = {"email": csm}
    upsert_account(s, doc, [], at=when)


def portfolio(factory: sessionmaker[Session]) -> None:
    """Q3 2026: starting ARR 490k; +30k expansion, -50k contraction, -50k churn; 40k new."""
    with factory.begin() as s:
        put(s, "expands", at(6, 1), 100_000, ai_weekly_users=5)
        put(s, "expands", at(8, 15), 130_000, ai_weekly_users=9, licensed=200, active=150)
        put(s, "contracts", at(5, 1), 200_000, ai_weekly_users=0, csm="lee@example.com")
        put(s, "contracts", at(9, 1), 150_000, ai_weekly_users=0, csm="lee@example.com")
        put(s, "churns", at(1, 1), 50_000, ai_weekly_users=2)
        put(s, "churns", at(7, 20), 0, ai_weekly_users=0)
        put(s, "steady", at(2, 1), 80_000, segment="scale", csm=None, ai_weekly_users=1, licensed=40, active=10)
        put(s, "steady", at(8, 2), 80_000, segment="scale", csm=None, ai_weekly_users=3, licensed=40, active=10)  # metrics only
        put(s, "late", at(3, 1), 60_000)
        put(s, "late", dt.datetime(2026, 10, 1, tzinfo=UTC), 90_000)  # the next quarter's
        put(s, "new", at(8, 1), 40_000, segment="scale", ai_weekly_users=4, licensed=60, active=30)
        put(s, "prospect", at(7, 1), 0, segment="scale")  # never a customer
        record_event(s, "e1", "expands", "plan.shared", at(7, 10), {})
        record_event(s, "e2", "expands", "plan.shared", at(9, 29), {})
        record_event(s, "e3", "contracts", "plan.shared", at(8, 3), {})
        record_event(s, "e4", "steady", "plan.shared", at(10, 2), {})  # after the quarter
        record_event(s, "e5", "steady", "plan.shared", at(6, 30, 23), {})  # before it
        upsert_run(s, id="r1", workflow_id="account/expands", playbook_id="renewal-ai-plan", version="v1", account_id="expands", started_at=at(7, 1))
        upsert_run(s, id="r2", workflow_id="account/steady", playbook_id="renewal-ai-plan", version="v1", account_id="steady", started_at=at(7, 1))
        add_run_step(s, "r1", at(8, 5), 35, "workshop", "wait_for", {"event": "workshop.completed", "timeout": False}, seq=1)
        add_run_step(s, "r2", at(8, 5), 35, "workshop", "wait_for", {"timeout": True}, seq=1)  # no workshop
        add_run_step(s, "r2", at(8, 9), 39, "workshop", "when", {"status": "failed"}, seq=2)
        add_run_step(s, "r2", at(9, 9), 70, "workshop", "wait_for", {"event": "workshop.completed", "timeout": False}, seq=3)


WORKSPACE = Workspace(
    timezone="UTC",
    indicators=["ai_weekly_users"],
    activities={"transformation_plan": Activity(event="plan.shared"), "ai_workshop": Activity(step="renewal-ai-plan:workshop")},
)


def test_report_revenue_indicators_and_activities_of_a_known_portfolio(engine: Engine) -> None:
    factory = session_factory(engine)
    portfolio(factory)
    with factory() as s:
        data = build_report(s, WORKSPACE, parse_period("2026-Q3", "UTC"))
    revenue = data["revenue"]
    assert revenue["starting_arr"] == 490_000 and revenue["expansion"] == 30_000
    assert revenue["contraction"] == 50_000 and revenue["churn"] == 50_000
    assert revenue["nrr"] == round(420_000 / 490_000, 4) == 0.8571
    assert revenue["grr"] == round(390_000 / 490_000, 4)
    assert revenue["new_arr"] == 40_000 and revenue["ending_arr"] == 130_000 + 150_000 + 80_000 + 60_000 + 40_000
    assert revenue["accounts"] == {"starting": 5, "expanded": 1, "contracted": 1, "churned": 1, "new": 1}
    segments = data["indicators"]["segments"]
    assert list(segments) == ["mid-market", "scale", "all"]
    assert segments["mid-market"] == {"customers": 3, "above_zero": {"ai_weekly_users": round(1 / 3, 4)}, "active_per_seat": round((150 + 50 + 50) / (200 + 100 + 100), 4)}
    assert segments["scale"] == {"customers": 2, "above_zero": {"ai_weekly_users": 1.0}, "active_per_seat": round(40 / 100, 4)}
    assert segments["all"]["customers"] == 5 and segments["all"]["above_zero"] == {"ai_weekly_users": 0.6}
    plans = data["activities"]["transformation_plan"]
    assert plans == {"total": 3, "by_csm": {"dana@example.com": 2, "lee@example.com": 1}, "by_account": {"contracts": 1, "expands": 2}}
    workshops = data["activities"]["ai_workshop"]
    assert workshops == {"total": 2, "by_csm": {"(no CSM)": 1, "dana@example.com": 1}, "by_account": {"expands": 1, "steady": 1}}

    with factory() as s:
        scale = build_report(s, WORKSPACE, parse_period("2026-Q3", "UTC"), segment="scale")
    assert scale["revenue"]["starting_arr"] == 80_000 and scale["revenue"]["nrr"] == 1.0 and scale["revenue"]["new_arr"] == 40_000
    assert list(scale["indicators"]["segments"]) == ["scale", "all"]
    assert scale["activities"]["transformation_plan"]["total"] == 0 and scale["activities"]["ai_workshop"]["by_account"] == {"steady": 1}


def test_upserts_keep_the_history_of_arr_seats_and_metrics(engine: Engine) -> None:
    factory = session_factory(engine)
    with factory.begin() as s:
        put(s, "acme", at(1, 1), 1000)
        put(s, "acme", at(1, 2), 1000)  # nothing tracked changed
        upsert_account(s, {"id": "acme", "name": "Acme renamed", "segment": "mid-market", "arr": 1000, "seats": {"licensed": 100, "active": 50}, "metrics": {}, "csm": {"email": "dana@example.com"}}, [], at=at(1, 3))
        put(s, "acme", at(1, 4), 1000, active=60)
        put(s, "acme", at(1, 5), 1000, active=60, ai_weekly_users=3)
        put(s, "acme", at(1, 6), 2000, active=60, ai_weekly_users=3)
    with factory() as s:
        rows = account_history(s, ["acme"])
    assert [(r.at.day, r.arr, r.seats_active, r.metrics) for r in rows] == [
        (1, 1000, 50, {}),
        (4, 1000, 60, {}),
        (5, 1000, 60, {"ai_weekly_users": 3}),
        (6, 2000, 60, {"ai_weekly_users": 3}),
    ]


def test_migration_0005_gives_existing_accounts_their_first_history_row(tmp_path: Path) -> None:
    from alembic import command

    from touchpoint.store.db import _alembic_config

    engine = make_engine(f"sqlite:///{tmp_path}/old.db")
    try:
        cfg = _alembic_config()
        with engine.begin() as conn:
            cfg.attributes["connection"] = conn
            command.upgrade(cfg, "0004")
            conn.execute(
                text("INSERT INTO accounts (id, name, doc, created_at, updated_at) VALUES (:id, :id, :doc, :t, :t)"),
                [
                    {"id": "acme", "doc": json.dumps({"id": "acme", "name": "Acme", "arr": 5000, "segment": "scale", "seats": {"licensed": 10, "active": 4}, "metrics": {"x": 1}}), "t": "2026-05-01 00:00:00.000000"},
                    {"id": "bare", "doc": json.dumps({"id": "bare", "name": "Bare"}), "t": "2026-05-02 00:00:00.000000"},
                ],
            )
        migrate(engine)
        with session_factory(engine)() as s:
            rows = account_history(s)
        assert [(r.account_id, r.arr, r.seats_licensed, r.seats_active, r.segment, r.metrics) for r in rows] == [
            ("acme", 5000.0, 10, 4, "scale", {"x": 1}),
            ("bare", 0.0, 0, 0, None, {}),
        ]
        assert rows[0].at == dt.datetime(2026, 5, 1, tzinfo=UTC)
    finally:
        engine.dispose()


def test_report_periods() -> None:
    def span(value: str, tz: str = "UTC") -> tuple[dt.datetime, dt.datetime]:
        period = parse_period(value, tz)
        return period.start, period.end

    assert span("2026-Q3") == (at(7, 1, 0), at(10, 1, 0))
    assert span("2026-12") == (at(12, 1, 0), dt.datetime(2027, 1, 1, tzinfo=UTC))
    assert span("2026", "America/New_York")[0] == dt.datetime(2026, 1, 1, 5, tzinfo=UTC)
    assert span("2026-07-01..2026-07-31") == (at(7, 1, 0), at(8, 1, 0))
    assert parse_period(None, "UTC", now=at(11, 20)).label == "2026-Q4"
    with pytest.raises(ValueError, match=r"expected a quarter \(2026-Q3\)"):
        parse_period("Q3", "UTC")


def test_report_command_json_and_tables(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path}/cli.db"
    engine = make_engine(url)
    migrate(engine)
    portfolio(session_factory(engine))
    engine.dispose()
    folder = write_folder(
        tmp_path / "pb",
        {"workspace.yaml": "timezone: UTC\nindicators: [ai_weekly_users]\nactivities:\n  transformation_plan: {event: plan.shared}\n"},
    )
    env = {**os.environ, "TOUCHPOINT_DATABASE_URL": url, "COLUMNS": "160"}
    command = [sys.executable, "-m", "touchpoint.cli.main", "report", "--period", "2026-Q3", "--playbooks", str(folder)]
    out = subprocess.run([*command, "--json"], capture_output=True, text=True, env=env, cwd=ROOT, timeout=120)
    assert out.returncode == 0, out.stderr
    data = json.loads(out.stdout)
    assert data["revenue"]["nrr"] == 0.8571 and list(data["activities"]) == ["transformation_plan"]
    tables = subprocess.run(command, capture_output=True, text=True, env=env, cwd=ROOT, timeout=120)
    assert tables.returncode == 0, tables.stderr
    lines = tables.stdout.splitlines()
    assert "NRR" in next(line for line in lines if line.startswith("NRR")) and "85.7%" in tables.stdout
    assert any(line.split()[:2] == ["dana@example.com", "2"] for line in lines)
    assert any(line.split()[:3] == ["all", "5", "60.0%"] for line in lines)
    bad = subprocess.run([*command[:-2], "--period", "Q3"], capture_output=True, text=True, env=env, cwd=ROOT, timeout=120)
    assert bad.returncode == 2 and "expected a quarter" in bad.stderr


def test_workspace_indicators_and_activities_are_validated_at_their_lines(tmp_path: Path) -> None:
    from touchpoint.dsl.validate import load_project

    folder = write_folder(
        tmp_path / "pb",
        {
            "workspace.yaml": "timezone: UTC\n"
            "indicators: [ai_weekly_users, 'bad name', ai_weekly_users]\n"
            "activities:\n"
            "  transformation_plan: {event: plan.shared}\n"
            "  ai_workshop: {step: 'renewal:workshop_helt'}\n"
            "  review: {step: 'nowhere:x'}\n"
            "  Caps: {event: x.y}\n",
            "renewal.yaml": "playbook: renewal\nname: R\ntrigger: manual\nsteps:\n  - wait_for: {event: workshop.completed, timeout: 21d}\n    id: workshop_held\n",
        },
    )
    def problems() -> list[str]:
        return [str(p).replace(f"{folder}/", "") for p in load_project(folder).problems]

    assert problems() == [
        "workspace.yaml:2: indicators[1]: expected the name of an `account.metrics` entry such as ai_weekly_users, found 'bad name'",
        "workspace.yaml:2: indicators[2]: `ai_weekly_users` is listed twice",
        "workspace.yaml:5: activities.ai_workshop.step: playbook `renewal` has no step with id `workshop_helt` (did you mean `workshop_held`?)",
        "workspace.yaml:6: activities.review.step: no playbook `nowhere` in this folder",
        "workspace.yaml:7: activities.Caps: an activity name is lowercase letters, digits and `_` (e.g. ai_workshop), found 'Caps'",
    ]
    (folder / "workspace.yaml").write_text("activities:\n  plan: {event: plan.shared}\n  both: {event: a.b, step: 'renewal:workshop_held'}\n  odd: {step: renewal}\n  typo: {evnt: x.y}\n")
    assert problems() == [
        "workspace.yaml:3: activities.both: expected exactly one of `event` (an event type) or `step` (playbook-id:step_id)",
        "workspace.yaml:4: activities.odd.step: expected `playbook-id:step_id` (e.g. renewal-ai-plan:workshop_held), found 'renewal'",
        "workspace.yaml:5: activities.typo: unknown key `evnt` (did you mean `event`?)",
    ]
