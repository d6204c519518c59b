"""Record workflow histories of this release into `tests/histories/` for the Replayer.

    PYTHONPATH=. .venv/bin/python -m tests.record_histories

Run it on a release before changing workflow code, and commit the files: `tests/test_replay.py`
replays every recorded history against the current workflows, so a change that would break runs
in flight (a new command without a `workflow.patched()` guard, a reordered activity) fails CI.
Each history is a real run on the time-skipping server with a real store and outbox.
"""

from __future__ import annotations

import asyncio
import tempfile
import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from activities.deps import Deps
from touchpoint import approvals
from touchpoint.config import load_settings
from touchpoint.deploy import deploy_project
from touchpoint.dsl.accounts import AccountDoc
from touchpoint.dsl.runtime import EventIn, RunResult, StartRequest
from touchpoint.dsl.schedule import ScheduleRunInput, ScheduleRunResult
from touchpoint.dsl.validate import load_project
from touchpoint.ingest import put_account, send_event, start_now
from touchpoint.migration import migrate
from touchpoint.store import repo
from touchpoint.temporal_server import start_time_skipping
from worker import build_worker
from workflows.messages import AccountState

HERE = Path(__file__).resolve().parent
OUT = HERE / "histories"
PLAYBOOKS = HERE.parent / "playbooks"

WORKSPACE = """\
timezone: UTC
sender: {email: cs@example.com}
send_window: {days: [mon, tue, wed, thu, fri, sat, sun], hours: "00:00-24:00"}
"""
RUN = """\
playbook: p
trigger: {event: account.created}
audience: [champion]
scorecard:
  target: {score: 80, by_day: 10}
  milestones: [{id: m, weight: 1, event: x.done}]
  checkpoints: [{day: 3, below: 50, steps: [{note: {text: behind}}]}]
steps:
  - email: {template: welcome}
  - draft: {prompt: idea, into: idea, fallback: idea_fallback}
  - if: "account.seats.licensed > 100"
    then: [{task: {title: "Call {{ account.name }}", due: 2d}}]
  - split: {a: {weight: 1, steps: [{wait: 1d}]}, b: {weight: 1, steps: [{wait: 2d}]}}
    id: ab
  - wait_for: {event: x.done, timeout: 3d}
  - repeat: {every: 2d, times: 2, steps: [{note: {text: "r{{ run.round }}"}}]}
"""
REVIEW = """\
playbook: review
trigger: {event: review.asked}
audience: [champion]
steps:
  - email: {template: welcome, approval: {by: csm, timeout: 2d}}
    id: welcome_review
  - note: {text: reviewed}
    id: reviewed
"""
ACCOUNT = AccountDoc.model_validate(
    {
        "id": "acme",
        "name": "Acme",
        "timezone": "UTC",
        "seats": {"licensed": 300, "active": 100},
        "csm": {"name": "Dana", "email": "dana@example.com"},
        "contacts": [{"email": "kim@acme.example", "name": "Kim", "role": "champion"}],
    }
)


async def main() -> None:
    OUT.mkdir(exist_ok=True)
    env = await start_time_skipping()
    root = Path(tempfile.mkdtemp())
    settings = load_settings(home=root / "home", database_url=f"sqlite:///{root}/store.db")
    deps = Deps.from_settings(settings)
    queue = f"record-{uuid.uuid4().hex[:6]}"
    folder = root / "playbooks"
    (folder / "templates").mkdir(parents=True)
    (folder / "workspace.yaml").write_text(WORKSPACE)
    (folder / "p.yaml").write_text(RUN)
    (folder / "review.yaml").write_text(REVIEW)
    (folder / "templates" / "welcome.subject.j2").write_text("Welcome, {{ account.name }}")
    (folder / "templates" / "welcome.html.j2").write_text("<p>Hi {{ contact.name }}</p>")
    (folder / "templates" / "idea.txt.j2").write_text("One AI workflow for {{ account.name }}")
    (folder / "templates" / "idea_fallback.txt.j2").write_text("Automate the weekly report of {{ account.name }}.")
    try:
        async with build_worker(env.client, deps, task_queue=queue, strict_imports=True):
            project = load_project(folder)
            with deps.sessions.begin() as s:
                deploy_project(s, project)

            # One run from start to end, in an account workflow that ends with it.
            one = AccountState(account_id="acme", account=ACCOUNT, finish_after_run=True, starts=[StartRequest(playbook="p", run_id="run-recorded")])
            handle = await env.client.start_workflow("Account", one, id="account/acme/run-recorded", task_queue=queue, result_type=RunResult)
            await handle.result()
            (OUT / "account_run.json").write_text((await handle.fetch_history()).to_json())

            # An account workflow: an upsert that starts a run, usage, a health change, a start.
            await put_account(env.client, queue, deps.sessions, ACCOUNT)
            await send_event(env.client, queue, deps.sessions, "acme", EventIn(id="e-usage", type="usage.reported", data={"metrics": {"weekly_active_users": 80}}))
            await send_event(env.client, queue, deps.sessions, "acme", EventIn(id="e-health", type="health.changed", data={"score": 40, "previous_score": 70, "tier": "red", "previous_tier": "green", "breakdown": {}}))
            await send_event(env.client, queue, deps.sessions, "acme", EventIn(id="e-done", type="x.done"))
            # An email held for approval, approved with an edit as the console or the API would.
            await send_event(env.client, queue, deps.sessions, "acme", EventIn(id="e-review", type="review.asked"))
            request = await until(deps, lambda s: next(iter(repo.list_approvals(s, account_id="acme", status="pending")), None))
            edit = approvals.Decision(decision="approved", by="lead@example.com", subject="Reviewed: welcome, {{ contact.name }}")
            await approvals.decide(env.client, queue, deps.sessions, settings.home / "templates", request.id, edit)
            await until(deps, lambda s: [r for r in repo.list_runs(s, playbook_id="review") if r.status == "ended"])
            account = env.client.get_workflow_handle("account/acme")
            for _ in range(200):
                with deps.sessions() as s:
                    if len(repo.list_events(s, account_id="acme")) >= 8:
                        break
                await asyncio.sleep(0.05)
            (OUT / "account.json").write_text((await account.fetch_history()).to_json())
            await account.terminate("recorded")

            # A ScheduleRun of the shipped weekly digest over the sample accounts.
            shipped = load_project(PLAYBOOKS)
            with deps.sessions.begin() as s:
                deploy_project(s, shipped)
            tick = datetime(2027, 3, 1, 13, 0, tzinfo=UTC)
            with deps.sessions.begin() as s:
                repo.upsert_account(s, {"id": "contoso", "name": "Contoso", "arr": 96000, "csm": {"name": "Dana", "email": "dana@example.com"}}, [])
                repo.record_event(s, "seat-1", "contoso", "seats.changed", datetime(2027, 2, 28, tzinfo=UTC), {"licensed": 450, "previous_licensed": 500, "active": 180, "delta": -50, "delta_pct": -10.0})
            schedule = await env.client.start_workflow("ScheduleRun", ScheduleRunInput(playbook="weekly-seat-digest", tick=tick), id="schedule-recorded", task_queue=queue, result_type=ScheduleRunResult)
            await schedule.result()
            (OUT / "schedule_run.json").write_text((await schedule.fetch_history()).to_json())
    finally:
        await deps.close()
        await env.shutdown()
    await record_continued(root)
    print(f"recorded {', '.join(sorted(p.name for p in OUT.glob('*.json')))} in {OUT}")


async def until(deps: Deps, probe: Any) -> Any:
    """Poll ``probe(session)`` on the store until it returns something truthy (30 s at most)."""
    for _ in range(600):
        with deps.sessions() as s:
            found = probe(s)
        if found:
            return found
        await asyncio.sleep(0.05)
    raise RuntimeError("the recorded run did not get there in 30 s")


CONTINUED = """\
playbook: w
trigger: {event: webinar.attended}
scorecard:
  target: {score: 80, by_day: 60}
  milestones: [{id: m, weight: 1, event: x.done}]
steps:
  - note: {text: "thanks {{ account.name }}"}
  - wait_for: {event: x.done, timeout: 30d, seen: true}
  - repeat: {every: 7d, times: 3, steps: [{note: {text: "r{{ run.round }}"}}]}
"""


async def record_continued(root: Path) -> None:
    """An account workflow that continued as new with a run in flight (`account_continued.json`):
    a dev server that suggests continue-as-new after 40 history events."""
    from touchpoint.temporal_server import start_dev_server

    env = await start_dev_server(extra_args=["--dynamic-config-value", "limit.historyCount.suggestContinueAsNew=40"])
    settings = load_settings(home=root / "home2", database_url=f"sqlite:///{root}/store2.db")
    deps = Deps.from_settings(settings)
    queue = f"record-{uuid.uuid4().hex[:6]}"
    folder = root / "continued"
    folder.mkdir()
    (folder / "workspace.yaml").write_text(WORKSPACE)
    (folder / "w.yaml").write_text(CONTINUED)
    (folder / "m.yaml").write_text("playbook: m\ntrigger: manual\nsteps:\n  - wait: 30d\n  - note: {text: later}\n")
    try:
        async with build_worker(env.client, deps, task_queue=queue, strict_imports=True):
            with deps.sessions.begin() as s:
                deploy_project(s, load_project(folder))
            await put_account(env.client, queue, deps.sessions, ACCOUNT)
            await send_event(env.client, queue, deps.sessions, "acme", EventIn(id="w0", type="webinar.attended"))
            # The updates: a start that answers (POST /runs) and a migration to a second version.
            answer = await start_now(env.client, queue, "acme", "m")
            assert answer.result == "started", answer
            for _ in range(200):
                with deps.sessions() as s:
                    if repo.list_runs(s, playbook_id="w") and repo.list_runs(s, playbook_id="w")[0].step:
                        break
                await asyncio.sleep(0.05)
            (folder / "w.yaml").write_text(CONTINUED.replace("timeout: 30d", "timeout: 20d"))
            with deps.sessions.begin() as s:
                deploy_project(s, load_project(folder))
            report = await migrate(env.client, deps.sessions, "w")
            assert [m.moved for m in report.moves] == [True], report.moves
            handle = env.client.get_workflow_handle("account/acme")
            first = (await handle.describe()).run_id
            for index in range(60):
                await send_event(env.client, queue, deps.sessions, "acme", EventIn(id=f"u{index}", type="usage.reported", data={"metrics": {"n": index}}))
                await asyncio.sleep(0.1)
                if (await handle.describe()).run_id != first:
                    break
            else:
                raise RuntimeError("the account workflow did not continue as new")
            history = await env.client.get_workflow_handle("account/acme", run_id=first).fetch_history()
            (OUT / "account_continued.json").write_text(history.to_json())
            await handle.terminate("recorded")
    finally:
        await deps.close()
        await env.shutdown()


if __name__ == "__main__":
    asyncio.run(main())
