"""Analytics from the rollups: step reach, emails and engagement, run counts and the uplift, against
hand-built histories written through the store's own paths (`project_runs`, `add_message`,
`count_engagement`), on SQLite and PostgreSQL."""

from __future__ import annotations

import datetime as dt
import math
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import delete, event, select, text
from sqlalchemy.orm import Session, sessionmaker

from activities.store import project_runs
from tests.conftest import on_both_stores, write_folder
from touchpoint.analytics import PlaybookAnalytics, playbook_analytics
from touchpoint.deploy import deploy_project
from touchpoint.dsl.runtime import RunProjection, StepRecord
from touchpoint.dsl.validate import load_project
from touchpoint.store import (
    EngagementMark,
    GapRollup,
    RunRollup,
    StepRollup,
    make_engine,
    migrate,
    repo,
    session_factory,
)
from touchpoint.store.rollups import bucket_middle, fill, gap_bucket

T0 = dt.datetime(2026, 11, 2, 9, 0, tzinfo=dt.UTC)
WORKSPACE = "timezone: UTC\nsender: {email: cs@example.com, name: CS}\n"
PLAYBOOK = """\
playbook: trial
trigger: {event: account.created}
goal: "account.properties.converted"
holdout: {percent: 10, for: 30d}
audience: [champion]
steps:
  - email: {template: welcome}
    id: welcome
  - wait: 2d
    id: pause
  - split:
      friendly: {weight: 1, steps: [{email: {template: welcome}, id: nudge}]}
      formal: {weight: 1, steps: [{note: {text: hi}, id: memo}]}
    id: tone
"""
FILES = {
    "workspace.yaml": WORKSPACE,
    "trial.yaml": PLAYBOOK,
    "templates/welcome.subject.j2": "Welcome {{ account.name }}",
    "templates/welcome.html.j2": "<p>Hi</p>",
}


def deploy(sessions: sessionmaker[Session], root: Path) -> str:
    project = load_project(write_folder(root, FILES))
    project.raise_for_problems()
    with sessions.begin() as s:
        deploy_project(s, project)
        found = repo.get_deployment(s, "playbook", "trial")
        assert found is not None
        return found.version


@pytest.fixture
def sessions(database_url: str) -> Iterator[sessionmaker[Session]]:
    engine = make_engine(database_url)
    migrate(engine)
    yield session_factory(engine)
    engine.dispose()


def projection(run_id: str, version: str, position: int, records: list[StepRecord], **fields: Any) -> RunProjection:
    values: dict[str, Any] = {
        "workflow_id": "account/a", "playbook": "trial", "version": version, "account_id": f"acct-{run_id}",
        "status": "running", "started_at": T0, "enrolled_until": T0 + dt.timedelta(days=30),
    }
    return RunProjection(run_id=run_id, position=position, records=records, **{**values, **fields})


def line(seq: int, step: str, action: str, hours: float = 0, **detail: Any) -> StepRecord:
    return StepRecord(at=T0 + dt.timedelta(hours=hours), day=int(hours // 24), step=step, action=action, detail=detail, seq=seq)


def history(version: str) -> list[RunProjection]:
    """r1: treated, friendly variant, converted on day 5; r2: its welcome email failed, waiting;
    r3: held out, in flight."""
    r1 = [
        line(1, "welcome", "email", to="kim@a.example", template="welcome"),
        line(2, "pause", "wait"),
        line(3, "tone", "split", 48, variant="friendly"),
        line(4, "nudge", "email", 49, to="kim@a.example", held={"since": "x", "reason": "send_window"}),
    ]
    r2 = [line(1, "welcome", "email", status="failed", error="boom"), line(2, "pause", "wait")]
    return [
        projection("r1", version, 4, r1, status="ended", outcome="converted", ended_at=T0 + dt.timedelta(days=5), variant="tone=friendly"),
        projection("r2", version, 2, r2, step="pause"),
        projection("r3", version, 1, [line(1, "holdout", "held_out")], held_out=True),
    ]


def send(s: Session, message_id: str, run_id: str, step: str, status: str) -> None:
    repo.add_message(s, id=message_id, ledger_key=f"key-{message_id}", run_id=run_id, playbook_id="trial", step=step, to_email="kim@a.example", status=status)


def record(sessions: sessionmaker[Session], version: str) -> None:
    with sessions.begin() as s:
        project_runs(s, history(version))
        send(s, "m1", "r1", "welcome", "sent")
        send(s, "m2", "r1", "nudge", "sent")
        send(s, "m3", "r2", "welcome", "failed")
        for message_id, kind in [("m1", "email.delivered"), ("m1", "email.opened"), ("m1", "email.opened"), ("m1", "email.clicked"), ("m2", "email.delivered")]:
            repo.count_engagement(s, message_id, kind)


def answer(sessions: sessionmaker[Session], **options: Any) -> PlaybookAnalytics:
    with sessions() as s:
        return playbook_analytics(s, "trial", **options)


def reach(data: PlaybookAnalytics) -> dict[str, tuple[int, int, int, int]]:
    return {x.step: (x.entered, x.passed, x.skipped, x.failed) for x in data.versions[0].steps}


@on_both_stores()
def test_analytics_counts_reach_emails_and_engagement_of_a_hand_built_history(sessions: sessionmaker[Session], tmp_path: Path) -> None:
    version = deploy(sessions, tmp_path / "playbooks")
    record(sessions, version)
    data = answer(sessions)
    assert data.totals.enrolled == 3 and data.totals.held_out == 1 and data.totals.in_flight == 2
    assert data.totals.outcomes == {"converted": 1}
    (found,) = data.versions
    assert found.version == version and found.current
    assert [(v.variant, v.enrolled, v.in_flight, v.goal_rate) for v in found.variants] == [("", 2, 2, None), ("tone=friendly", 1, 0, 1.0)]
    assert reach(data) == {
        "welcome": (2, 1, 0, 1), "pause": (2, 2, 0, 0), "tone": (1, 1, 0, 0), "nudge": (1, 1, 0, 0), "memo": (0, 0, 0, 0),
    }
    steps = {x.step: x for x in found.steps}
    assert steps["welcome"].emails is not None and steps["nudge"].emails is not None
    assert steps["welcome"].emails.model_dump() == {
        "sent": 1, "held": 0, "not_sent": 1, "delivered": 1, "opened": 1, "clicked": 1, "bounced": 0, "unsubscribed": 0,
    }
    assert (steps["nudge"].emails.sent, steps["nudge"].emails.held, steps["nudge"].emails.delivered) == (1, 1, 1)
    assert steps["pause"].emails is None and steps["memo"].kind == "note"
    # From the run's start to its first step: no time; from the wait's start to the split: 2 days.
    assert steps["welcome"].median_seconds_from_previous == 1.0
    two_days = steps["tone"].median_seconds_from_previous
    assert two_days is not None and abs(two_days / (48 * 3600) - 1) < 0.1
    assert answer(sessions, since=T0.date() + dt.timedelta(days=1)).totals.enrolled == 0


@on_both_stores()
def test_analytics_is_idempotent_and_moves_a_run_to_its_new_state(sessions: sessionmaker[Session], tmp_path: Path) -> None:
    version = deploy(sessions, tmp_path / "playbooks")
    record(sessions, version)
    before = answer(sessions)
    record(sessions, version)  # a retried projection, a resent email, the provider's retries
    with sessions.begin() as s:
        project_runs(s, [projection("r1", version, 2, [], status="running")])  # stale: position 2 < 4
    assert answer(sessions) == before
    with sessions.begin() as s:
        project_runs(s, [projection("r2", version, 3, [line(3, "tone", "split", 48, variant="formal")], status="ended", outcome="exited", ended_at=T0 + dt.timedelta(days=3), variant="tone=formal")])
    after = answer(sessions)
    assert after.totals.in_flight == 1 and after.totals.outcomes == {"converted": 1, "exited": 1}
    assert [(v.variant, v.enrolled) for v in after.versions[0].variants] == [("", 1), ("tone=formal", 1), ("tone=friendly", 1)]
    assert reach(after)["tone"] == (2, 2, 0, 0)


@on_both_stores()
def test_a_step_that_moves_no_count_is_one_statement_and_never_overwrites_a_newer_one(sessions: sessionmaker[Session], tmp_path: Path) -> None:
    version = deploy(sessions, tmp_path / "playbooks")
    statements: list[str] = []
    engine = sessions.kw["bind"]

    def seen(conn: Any, cursor: Any, statement: str, *args: Any) -> None:
        if " runs" in statement:
            statements.append(statement.split()[0])

    event.listen(engine, "before_cursor_execute", seen)
    try:
        with sessions.begin() as s:
            project_runs(s, [projection("r1", version, 1, [line(1, "welcome", "email")])])  # a new row
        statements.clear()
        with sessions.begin() as s:
            project_runs(s, [projection("r1", version, 3, [line(2, "pause", "wait")], step="pause")])
        assert statements == ["UPDATE"]  # same key: no read first
        with sessions.begin() as s:
            project_runs(s, [projection("r1", version, 2, [], step="welcome")])  # older, same key
        with sessions() as s:
            row = repo.get_run(s, "r1")
            assert row is not None and (row.position, row.step) == (3, "pause")
        with sessions.begin() as s:  # the end moves the run's count: read, then write
            project_runs(s, [projection("r1", version, 4, [], step="pause", status="ended", outcome="completed", ended_at=T0 + dt.timedelta(days=1))])
        with sessions.begin() as s:  # a stale step under the old key changes nothing
            project_runs(s, [projection("r1", version, 3, [], step="welcome")])
    finally:
        event.remove(engine, "before_cursor_execute", seen)
    with sessions() as s:
        row = repo.get_run(s, "r1")
        assert row is not None and (row.position, row.status, row.step) == (4, "ended", "pause")
    totals = answer(sessions).totals
    assert totals.in_flight == 0 and totals.outcomes == {"completed": 1}


@on_both_stores()
def test_analytics_fill_counts_what_the_writes_counted(sessions: sessionmaker[Session], tmp_path: Path) -> None:
    version = deploy(sessions, tmp_path / "playbooks")
    record(sessions, version)
    with sessions.begin() as s:
        for i, kind in enumerate(["email.delivered", "email.opened", "email.opened"]):
            repo.record_event(s, f"e{i}", "acct-r1", kind, T0, {"message_id": "m1"})

    def rows(s: Session) -> list[tuple[Any, ...]]:
        found: list[tuple[Any, ...]] = []
        for model in (RunRollup, StepRollup, GapRollup):
            found += sorted(tuple(r) for r in s.execute(select(model.__table__)) if r[-1])  # a run moved away leaves a 0
        return found + sorted(tuple(r) for r in s.execute(select(EngagementMark.__table__)))

    with sessions.begin() as s:
        kept = rows(s)
        for model in (RunRollup, StepRollup, GapRollup, EngagementMark):
            s.execute(delete(model))
        fill(s)
        refilled = rows(s)
    # The click and m2's delivery were counted straight from the store here, with no `email.*`
    # event recorded for the fill to find; everything else is counted alike.
    unseen = {("welcome", "clicked"), ("nudge", "delivered"), ("m1", "clicked"), ("m2", "delivered")}
    assert refilled == [r for r in kept if tuple(r[3:5]) not in unseen and r not in unseen]


def wilson(k: int, n: int, z: float = 1.959963984540054) -> tuple[float, float]:
    p = k / n
    middle = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return middle - half, middle + half


def arm(sessions: sessionmaker[Session], version: str, prefix: str, n: int, reached: int, *, held_out: bool, late: int = 0) -> None:
    """``n`` ended runs: ``reached`` converted within `for`, ``late`` converted after it, the rest completed."""
    with sessions.begin() as s:
        for i in range(n):
            converted = i < reached + late
            ended = T0 + dt.timedelta(days=40 if reached <= i < reached + late else 10)
            project_runs(s, [projection(f"{prefix}{i}", version, 1, [], status="ended", outcome="converted" if converted else "completed", ended_at=ended, held_out=held_out)])


@on_both_stores()
def test_analytics_uplift_is_newcombes_interval_computed_by_hand(sessions: sessionmaker[Session], tmp_path: Path) -> None:
    version = deploy(sessions, tmp_path / "playbooks")
    arm(sessions, version, "t", 100, 40, held_out=False, late=5)
    arm(sessions, version, "h", 50, 10, held_out=True)
    uplift = answer(sessions).uplift
    assert (uplift.treated.runs, uplift.treated.reached_goal, uplift.held_out.runs, uplift.held_out.reached_goal) == (100, 40, 50, 10)
    p1, p2 = 0.4, 0.2
    (l1, u1), (l2, u2) = wilson(40, 100), wilson(10, 50)
    low = p1 - p2 - math.sqrt((p1 - l1) ** 2 + (u2 - p2) ** 2)
    high = p1 - p2 + math.sqrt((u1 - p1) ** 2 + (p2 - l2) ** 2)
    assert uplift.enough and uplift.points == 20.0
    assert uplift.low == round(low * 100, 1) and uplift.high == round(high * 100, 1)
    assert uplift.sentence == f"treated accounts reached the goal 20.0 points more often (95% CI {low * 100:.1f} to {high * 100:.1f})"


@on_both_stores()
def test_analytics_uplift_says_when_there_are_not_enough_runs(sessions: sessionmaker[Session], tmp_path: Path) -> None:
    version = deploy(sessions, tmp_path / "playbooks")
    assert answer(sessions).uplift.sentence.startswith("no holdout to compare with")
    arm(sessions, version, "t", 100, 40, held_out=False)
    arm(sessions, version, "h", 50, 4, held_out=True)
    uplift = answer(sessions).uplift
    assert not uplift.enough and uplift.points is None
    assert uplift.sentence.startswith("not enough runs to tell yet") and "held out 4 of 50" in uplift.sentence


def test_analytics_gap_buckets_are_quarter_octaves() -> None:
    for seconds in (2, 90, 3600, 86400 * 3, 86400 * 90):
        assert abs(bucket_middle(gap_bucket(seconds)) / seconds - 1) < 0.1
    assert gap_bucket(0.5) == 0 and bucket_middle(0) == 1.0


@pytest.mark.parametrize("store", ["postgresql"], indirect=True)
def test_analytics_plans_read_no_big_table_whole(sessions: sessionmaker[Session], tmp_path: Path) -> None:
    version = deploy(sessions, tmp_path / "playbooks")
    record(sessions, version)
    with sessions() as s:
        s.execute(text("SET enable_seqscan = off"))  # a tiny table is scanned anyway; ask whether an index serves
        statements = [
            "SELECT version, step, metric, sum(count) FROM analytics_steps WHERE playbook_id = 'trial' AND day >= '2026-01-01' GROUP BY version, step, metric",
            "SELECT version, step, count(*) FROM runs WHERE playbook_id = 'trial' AND status <> 'ended' GROUP BY version, step",
        ]
        for sql in statements:
            plan = "\n".join(s.execute(text("EXPLAIN " + sql)).scalars())
            for table in ("runs", "messages", "run_steps"):
                assert f"Seq Scan on {table}" not in plan, plan


@on_both_stores()
def test_analytics_counts_lines_projected_in_pieces_and_again_as_fill_does(sessions: sessionmaker[Session], tmp_path: Path) -> None:
    """A run's lines arrive over several projections (the first from its first line, the next
    reading the lines before it), each written twice as a retried activity does: the rollups
    hold what `fill` counts from the rows."""
    version = deploy(sessions, tmp_path / "playbooks")
    r1, r2, r3 = history(version)
    pieces = [
        r1.model_copy(update={"records": r1.records[:2], "position": 2, "status": "running", "outcome": None, "ended_at": None}),
        r1.model_copy(update={"records": r1.records[2:]}),
        r2,
        r3,
    ]
    for piece in pieces:
        for _ in range(2):
            with sessions.begin() as s:
                project_runs(s, [piece])

    def rows(s: Session) -> list[tuple[Any, ...]]:
        return [tuple(r) for model in (RunRollup, StepRollup, GapRollup) for r in sorted(s.execute(select(model.__table__))) if r[-1]]

    with sessions.begin() as s:
        live = rows(s)
        for model in (RunRollup, StepRollup, GapRollup):
            s.execute(delete(model))
        fill(s)
        assert rows(s) == live
    assert reach(answer(sessions))["nudge"][0] == 1  # the last piece's lines were counted once
