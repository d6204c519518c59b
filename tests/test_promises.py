"""Promises the README makes that no other test held: each through a public path.

- `changes.seats.changed` (the dotted form) in a schedule playbook, on a tick started as its
  Temporal Schedule starts it, read from the outbox;
- `exit: converted`, a `split` without an `id` (its variant in `run.vars['steps[N]']`) and an
  email with neither `to` nor `audience` (every contact), through `touchpoint.simulate`: on both
  hosts, `simulate` (server-less, what `touchpoint simulate` prints) and `simulate_on_server`
  (the time-skipping server with the real workflows and activities).
"""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from tests.conftest import Stack, write_folder
from touchpoint.dsl.schedule import ScheduleRunInput, ScheduleRunResult
from touchpoint.simulate import Simulated, simulate, simulate_on_server
from touchpoint.store import repo

HOSTS = ("without-server", "on-server")


async def run_sim(host: str, playbook: Path, account: Path) -> Simulated:
    """One simulation from ``TICK`` for 10 days on ``host``."""
    if host == "without-server":
        return simulate(playbook, account, start=TICK, days=10)
    return await simulate_on_server(playbook, account, start=TICK, days=10)

WORKSPACE = """\
timezone: UTC
sender: {email: cs@example.com, name: CS}
send_window: {days: [mon, tue, wed, thu, fri, sat, sun], hours: "00:00-24:00"}
"""
TICK = datetime(2027, 3, 1, 8, 0, tzinfo=UTC)  # a Monday 08:00: the digest's tick
DOTTED = """\
playbook: dotted-digest
trigger: {schedule: "0 8 * * mon"}
steps:
  - id: digest
    when: "changes.seats.changed | length > 0"
    email: {template: digest, to: [cs-leadership@example.com]}
  - id: renewals
    when: "changes.renewal.moved | length > 0"
    email: {template: digest, to: [renewals@example.com]}
"""
DIGEST = {
    "templates/digest.subject.j2": "{{ changes.seats.changed | length }} seat changes, {{ changes['seats.changed'] | length }} by brackets",
    "templates/digest.html.j2": (
        "<ul>{% for e in changes.seats.changed | sort(attribute='account.name') %}"
        "<li>{{ e.account.name }}: {{ e.data.delta }}</li>{% endfor %}</ul>"
    ),
}


async def test_promises_schedule_playbook_reads_changes_in_the_dotted_form(stack: Stack, folder: Path) -> None:
    write_folder(folder, {"workspace.yaml": WORKSPACE, "dotted-digest.yaml": DOTTED, **DIGEST})
    stack.deploy(folder)
    with stack.deps.sessions.begin() as s:
        for account, name in (("acme", "Acme"), ("globex", "Globex"), ("initech", "Initech")):
            repo.upsert_account(s, {"id": account, "name": name, "csm": {"name": "Dana", "email": "dana@example.com"}}, [])
        repo.record_event(s, "seat-1", "globex", "seats.changed", TICK - timedelta(days=2), {"delta": 200})
        repo.record_event(s, "seat-2", "acme", "seats.changed", TICK - timedelta(days=1), {"delta": -50})
        # Before the previous tick (a week ago): not this digest's.
        repo.record_event(s, "seat-0", "initech", "seats.changed", TICK - timedelta(days=9), {"delta": 5})
    result: ScheduleRunResult = await stack.client.execute_workflow(
        "ScheduleRun",
        ScheduleRunInput(playbook="dotted-digest", tick=TICK),
        id=f"schedule-dotted-{uuid.uuid4().hex[:6]}",
        task_queue=stack.task_queue,
        result_type=ScheduleRunResult,
    )
    assert result.outcome == "completed"
    with stack.deps.sessions() as s:
        sent = [m for m in repo.list_messages(s, limit=100) if m.status == "sent"]
    # The dotted `when` held for seats.changed; a type without events is an empty list.
    assert [(m.to_email, m.subject) for m in sent] == [("cs-leadership@example.com", "2 seat changes, 2 by brackets")]
    assert "<li>Acme: -50</li><li>Globex: 200</li>" in sent[0].html
    assert "Initech" not in sent[0].html
    assert len(list(stack.settings.outbox_dir.glob("*.eml"))) == 1


SIM_TEMPLATES = {
    "templates/hi.subject.j2": "Hi {{ account.name }}",
    "templates/hi.html.j2": "<p>Hi {{ contact.name }}</p>",
}
ACCOUNT = """\
id: {id}
name: Acme
timezone: UTC
csm: {{name: Dana, email: dana@example.com}}
contacts:
  - {{email: kim@acme.example, name: Kim, role: champion}}
  - {{email: lee@acme.example, name: Lee, role: admin}}
  - {{email: max@acme.example, name: Max, role: user}}
"""


def sim_folder(root: Path, playbook: str, account_id: str = "acme") -> tuple[Path, Path]:
    folder = write_folder(root / "playbooks", {"workspace.yaml": WORKSPACE, "p.yaml": playbook, **SIM_TEMPLATES})
    account = root / "account.yaml"
    account.write_text(ACCOUNT.format(id=account_id))
    return folder / "p.yaml", account


@pytest.mark.parametrize("host", HOSTS)
async def test_promises_exit_converted_ends_the_run_as_converted(tmp_path: Path, host: str) -> None:
    body = """\
playbook: p
trigger: manual
steps:
  - note: {text: before}
    id: before
  - exit: converted
    id: done
  - note: {text: never}
    id: never
"""
    sim = await run_sim(host, *sim_folder(tmp_path, body))
    assert sim.outcome == "converted"
    assert [r.step for r in sim.records if r.action == "note"] == ["before"]
    (exit_record,) = [r for r in sim.records if r.action == "exit"]
    assert exit_record.step == "done"


@pytest.mark.parametrize("host", HOSTS)
async def test_promises_split_without_id_keeps_its_variant_in_run_vars_by_path(tmp_path: Path, host: str) -> None:
    body = """\
playbook: p
trigger: manual
steps:
  - note: {text: start}
  - split:
      a: {weight: 1, steps: [{note: {text: "in a"}}]}
      b: {weight: 1, steps: [{note: {text: "in b"}}]}
  - note: {text: "variant {{ run.vars['steps[1]'] }}"}
    id: said
  - if: "run.vars['steps[1]'] in ['a', 'b']"
    then: [{note: {text: known}, id: known}]
"""
    seen = set()
    for account_id in ("acme", "globex", "initech", "umbrella", "hooli", "wayne"):
        sim = await run_sim(host, *sim_folder(tmp_path / account_id, body, account_id))
        (split,) = [r for r in sim.records if r.action == "split"]
        variant = split.detail["variant"]
        texts = [r.detail.get("text") for r in sim.records if r.action == "note"]
        assert texts == ["start", f"in {variant}", f"variant {variant}", "known"], texts
        seen.add(variant)
    assert seen == {"a", "b"}  # the stored value follows the account's own variant


@pytest.mark.parametrize("host", HOSTS)
async def test_promises_email_without_to_or_audience_goes_to_every_contact(tmp_path: Path, host: str) -> None:
    body = """\
playbook: p
trigger: manual
steps:
  - email: {template: hi}
    id: everyone
"""
    sim = await run_sim(host, *sim_folder(tmp_path, body))
    assert sim.outcome == "completed"
    emails = [r for r in sim.records if r.action == "email"]
    assert sorted(r.detail["to"] for r in emails) == ["kim@acme.example", "lee@acme.example", "max@acme.example"]
    assert all(r.step == "everyone" and r.detail.get("status", "sent") == "sent" for r in emails)
