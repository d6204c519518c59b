"""Scenario: `touchpoint analytics` and the console's playbook page at volume (issue #25).

A PostgreSQL schema (the tests' server, `tests/pg.py`) holds 100,000 accounts, 300,000 runs of one
playbook with a holdout and a split (two versions, a year of enrollments, 10% held out, 10% in
flight), their timelines (about 5 lines a run) and 2,000,000 messages, with 300,000 engagement
events. The rows are seeded in bulk; the rollups are then counted by migration 0009's fill
(`touchpoint.store.rollups.fill`), the same rules the store applies as rows arrive. Measured:
`playbook_analytics` (all runs, `--since` 30 days, `--version`), the console's playbook page
through the API app, and, as a note, one live `project_runs` (a run moving on, with two new lines) on top.

The baseline is the same answer computed without rollups: a GROUP BY over `runs` and a count of
distinct runs per step over `run_steps` (what the console's `steps_reached` did before).
"""

from __future__ import annotations

import asyncio
import random
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
from sqlalchemy import func, insert, select
from sqlalchemy.orm import Session

from activities.store import project_runs
from bench.common import Figure, Scenario, write_project
from touchpoint.analytics import playbook_analytics
from touchpoint.config import load_settings
from touchpoint.deploy import deploy_project
from touchpoint.dsl.runtime import RunProjection, StepRecord
from touchpoint.dsl.validate import load_project
from touchpoint.store import Account, Event, Message, Run, RunStep, make_engine, migrate, repo, session_factory
from touchpoint.store.rollups import fill

PLAYBOOK = """\
playbook: trial
trigger: {event: account.created}
goal: "account.properties.converted"
holdout: {percent: 10, for: 30d}
audience: [champion]
steps:
  - email: {template: hello}
    id: welcome
  - wait: 3d
    id: pause
  - split:
      friendly: {weight: 1, steps: [{email: {template: hello}, id: nudge}]}
      formal: {weight: 1, steps: [{email: {template: hello}, id: formal}]}
    id: tone
  - wait: 7d
    id: settle
  - email: {template: hello}
    id: checkin
"""
CHUNK = 20_000


def _chunks(s: Session, model: type[Any], rows: Any) -> None:
    batch: list[dict[str, Any]] = []
    for row in rows:
        batch.append(row)
        if len(batch) == CHUNK:
            s.execute(insert(model), batch)
            batch = []
    if batch:
        s.execute(insert(model), batch)


def seed(s: Session, versions: list[str], accounts: int, runs: int, messages: int, now: datetime) -> None:
    """Accounts, runs, timelines, messages and engagement events, in bulk (no rollup counted)."""
    rng = random.Random(25)
    _chunks(s, Account, ({"id": f"a{i}", "name": f"A {i}", "doc": {"id": f"a{i}", "name": f"A {i}"}} for i in range(accounts)))
    plan: list[tuple[str, datetime, bool, str]] = []

    def run_rows() -> Any:
        for i in range(runs):
            started = now - timedelta(days=rng.uniform(0, 365))
            held = rng.random() < 0.1
            variant = "" if held else rng.choice(["friendly", "formal"])
            flight = started > now - timedelta(days=30) and rng.random() < 0.3
            converted = rng.random() < (0.3 if held else 0.4)
            plan.append((f"r{i}", started, held, variant))
            yield {
                "id": f"r{i}", "workflow_id": f"account/a{i % accounts}", "playbook_id": "trial", "version": versions[i % 2],
                "account_id": f"a{i % accounts}", "status": "running" if flight else "ended", "step": "pause" if flight else None,
                "outcome": None if flight else "converted" if converted else "completed", "started_at": started,
                "ended_at": None if flight else started + timedelta(days=rng.uniform(1, 29) if converted else 30),
                "vars": {}, "held_out": held, "enrolled_until": started + timedelta(days=30),
                "variant": f"tone={variant}" if variant else None, "updated_at": now,
            }

    _chunks(s, Run, run_rows())

    def lines() -> Any:
        for run_id, started, held, variant in plan:
            if held:
                yield {"run_id": run_id, "at": started, "day": 0, "step": "holdout", "action": "held_out", "detail": {}, "seq": 1}
                continue
            steps = [("welcome", "email", 0), ("pause", "wait", 0), ("tone", "split", 3), (variant and ("nudge" if variant == "friendly" else "formal"), "email", 3), ("settle", "wait", 3), ("checkin", "email", 10)]
            for seq, (step, action, day) in enumerate(steps, 1):
                yield {"run_id": run_id, "at": started + timedelta(days=day, minutes=seq), "day": day, "step": step, "action": action, "detail": {"to": "kim@x.example"}, "seq": seq}

    _chunks(s, RunStep, lines())
    treated = [(run_id, variant) for run_id, _, held, variant in plan if not held]

    def message_rows() -> Any:
        for i in range(messages):
            run_id, variant = treated[i % len(treated)]
            step = ("welcome", "nudge" if variant == "friendly" else "formal", "checkin")[(i // len(treated)) % 3]
            yield {"id": f"m{i}", "run_id": run_id, "playbook_id": "trial", "step": step, "to_email": f"c{i}@x.example", "status": "sent" if i % 50 else "failed", "sent_at": now}

    _chunks(s, Message, message_rows())
    kinds = ["email.delivered"] * 2 + ["email.opened"]
    _chunks(s, Event, ({"id": f"sg{i}", "account_id": "a0", "type": kinds[i % 3], "at": now, "data": {"message_id": f"m{i * 6}"}} for i in range(messages // 20 * 3)))


def timed(work: Any, repeat: int = 5) -> float:
    """The median of ``repeat`` runs of ``work``, in milliseconds (after one warm-up)."""
    work()
    times = []
    for _ in range(repeat):
        begin = time.perf_counter()
        work()
        times.append((time.perf_counter() - begin) * 1000)
    return sorted(times)[len(times) // 2]


async def run(accounts: int = 100_000, runs: int = 300_000, messages: int = 2_000_000) -> Scenario:
    """Seed the volume into a PostgreSQL schema of its own, fill the rollups, time the reads."""
    from tests import pg
    from touchpoint.api.app import create_app
    from touchpoint.temporal_server import start_time_skipping

    scenario = Scenario("analytics", "Analytics at volume (PostgreSQL)", "touchpoint analytics and the console's playbook page under 300 ms")
    with tempfile.TemporaryDirectory(prefix="touchpoint-bench-analytics-") as tmp, pg.schema("tp_bench") as schema:
        url = pg.schema_url(schema)
        engine = make_engine(url)
        migrate(engine)
        sessions = session_factory(engine)
        folder = write_project(Path(tmp) / "playbooks", {"trial": PLAYBOOK})
        project = load_project(folder)
        project.raise_for_problems()
        with sessions.begin() as s:
            deploy_project(s, project)
        (folder / "trial.yaml").write_text(PLAYBOOK.replace("wait: 7d", "wait: 8d"))
        with sessions.begin() as s:
            deploy_project(s, load_project(folder))
            versions = repo.playbook_versions(s, "trial")
        now = datetime.now(UTC)
        begin = time.monotonic()
        with sessions.begin() as s:
            seed(s, versions, accounts, runs, messages, now)
        seeded = time.monotonic() - begin
        begin = time.monotonic()
        with sessions.begin() as s:
            fill(s)
        filled = time.monotonic() - begin
        with sessions() as s:
            s.execute(select(func.count()).select_from(Run)).scalar()  # warm the connection
            s.connection().exec_driver_sql("ANALYZE")
        with sessions() as s:
            whole = timed(lambda: playbook_analytics(s, "trial"))
            recent = timed(lambda: playbook_analytics(s, "trial", since=(now - timedelta(days=30)).date()))
            one = timed(lambda: playbook_analytics(s, "trial", version=versions[0]))
            answer = playbook_analytics(s, "trial")
            baseline = timed(lambda: _without_rollups(s), repeat=1)
        env = await start_time_skipping()  # the app needs a client; the page uses none
        try:
            app = create_app(load_settings(home=Path(tmp) / "home", database_url=url), env.client, sessions)
            async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://bench") as http:
                page = await http.get("/console/playbooks/trial")
                assert page.status_code == 200, page.text[:300]
                times = []
                for _ in range(5):
                    started = time.perf_counter()
                    await http.get("/console/playbooks/trial")
                    times.append((time.perf_counter() - started) * 1000)
                console_ms = sorted(times)[2]
        finally:
            await env.shutdown()
        live = _live_projection(sessions, versions[0], now)
        engine.dispose()
    scenario.figures = [
        Figure("playbook_analytics, all 300,000 runs", "ms", whole, baseline, "lower"),
        Figure("playbook_analytics --since 30 days", "ms", recent, baseline, "lower"),
        Figure("playbook_analytics --version", "ms", one, baseline, "lower"),
        Figure("console playbook page", "ms", console_ms, baseline, "lower"),
    ]
    scenario.met = max(whole, recent, one, console_ms) < 300
    scenario.notes = [
        f"seeded {accounts:,} accounts, {runs:,} runs, their timelines and {messages:,} messages in {seeded:.0f} s; "
        f"migration 0009's fill counted them in {filled:.0f} s",
        f"answer: {answer.totals.enrolled:,} enrolled, {answer.totals.held_out:,} held out, {answer.totals.in_flight:,} in flight; {answer.uplift.sentence}",
        "baseline: the same run and reach counts by GROUP BY over runs and run_steps (no rollups)",
        f"one live project_runs at this volume (a run's row, two timeline lines and their counts): {live:.1f} ms",
    ]
    return scenario


def _without_rollups(s: Session) -> None:
    s.execute(select(Run.version, Run.variant, Run.held_out, Run.status, Run.outcome, func.count()).where(Run.playbook_id == "trial").group_by(Run.version, Run.variant, Run.held_out, Run.status, Run.outcome)).all()
    s.execute(select(RunStep.step, func.count(func.distinct(RunStep.run_id))).join(Run, Run.id == RunStep.run_id).where(Run.playbook_id == "trial").group_by(RunStep.step)).all()


def _live_projection(sessions: Any, version: str, now: datetime) -> float:
    """One run moving on at volume: its row, two new timeline lines and their counts."""
    records = [StepRecord(at=now, day=0, step="welcome", action="email", detail={}, seq=1), StepRecord(at=now, day=0, step="pause", action="wait", detail={}, seq=2)]
    projection = RunProjection(run_id="live", workflow_id="account/a0", playbook="trial", version=version, account_id="a0", status="running", started_at=now, position=2, records=records, enrolled_until=now + timedelta(days=30))
    begin = time.perf_counter()
    with sessions.begin() as s:
        project_runs(s, [projection])
    return (time.perf_counter() - begin) * 1000


if __name__ == "__main__":
    print(asyncio.run(run()).as_json())
