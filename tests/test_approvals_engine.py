"""The approval phase of the interpreter alone (`touchpoint.engine.approving`): effects answered by
hand, so pauses, moves to another version and odd decisions are exact."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

from tests.conftest import write_folder
from touchpoint.dsl.accounts import AccountDoc
from touchpoint.dsl.runtime import ApprovalInput, ApprovalResult, EventIn, SendEmailInput, SendEmailResult
from touchpoint.dsl.validate import load_project
from touchpoint.engine import machine, migrate
from touchpoint.engine.program import Effect, EffectDone, Output, Program
from touchpoint.engine.state import RunState

T0 = datetime(2026, 3, 2, 9, 0, tzinfo=UTC)
WORKSPACE = 'timezone: UTC\nsender: {email: cs@example.com}\nsend_window: {days: [mon, tue, wed, thu, fri, sat, sun], hours: "00:00-24:00"}\n'
ACCOUNT = AccountDoc.model_validate(
    {"id": "acme", "name": "Acme", "csm": {"name": "Dana", "email": "dana@example.com"}, "contacts": [{"email": "kim@acme.example", "role": "champion"}]}
)
PLAYBOOK = """\
playbook: p
trigger: manual
audience: [champion]
steps:
  - email: {{template: welcome, approval: {{timeout: {timeout}}}}}
    id: welcome
  - set: {{done: "true"}}
"""


def program(tmp_path: Path, timeout: str, version: str) -> Program:
    folder = write_folder(
        tmp_path / version,
        {"workspace.yaml": WORKSPACE, "p.yaml": PLAYBOOK.format(timeout=timeout), "templates/welcome.subject.j2": "Hi", "templates/welcome.html.j2": "<p>Hi</p>"},
    )
    project = load_project(folder)
    project.raise_for_problems()
    return Program(project.playbooks["p"].playbook, project.workspace, version)


def requested(old: Program) -> tuple[RunState, Output]:
    """A run whose request was stored: what the answer to `request_approval` produced."""
    state, out = machine.start(old, ACCOUNT, run_id="r1", event=EventIn(type="manual"), now=T0)
    (effect,) = out.effects
    assert effect.kind == "request_approval" and isinstance(effect.input, ApprovalInput)
    assert effect.input.approver == "dana@example.com" and [r.recipient.email for r in effect.input.recipients] == ["kim@acme.example"]
    answer = ApprovalResult(approval_id=effect.input.approval_id, approver="dana@example.com", task_id="task_1", to=["kim@acme.example"])
    return state, machine.step(old, state, ACCOUNT, T0, EffectDone(id=effect.id, result=answer))


def decided(approval_id: str | None, decision: str = "approved", **data: str) -> EventIn:
    return EventIn(type="approval.decided", data={"approval_id": approval_id, "decision": decision, **data} if approval_id else {"decision": decision, **data})


def sends(out: Output) -> list[Effect]:
    return [e for e in out.effects if e.kind == "send_email"]


def test_approvals_engine_a_paused_run_holds_the_approved_email_until_resumed(tmp_path: Path) -> None:
    v1 = program(tmp_path, "2d", "v1")
    state, out = requested(v1)
    hold = state.threads[0].frames[-1].approval
    assert hold is not None and [r.detail["status"] for r in out.records] == ["requested"]
    assert machine.next_wake(state) == T0 + timedelta(days=2)
    machine.step(v1, state, ACCOUNT, T0 + timedelta(hours=1), machine.Pause(reason="checking"))
    out = machine.step(v1, state, ACCOUNT, T0 + timedelta(hours=2), decided(hold.id, by="lead@example.com"))
    assert [(r.action, r.detail.get("status"), r.detail.get("by")) for r in out.records] == [("approval", "approved", "lead@example.com")]
    assert sends(out) == []  # paused: held before its side effect
    out = machine.step(v1, state, ACCOUNT, T0 + timedelta(hours=3), machine.Resume())
    (send,) = sends(out)
    assert isinstance(send.input, SendEmailInput) and send.input.approval_id == hold.id and send.input.edit_html is None
    out = machine.step(v1, state, ACCOUNT, T0 + timedelta(hours=3), EffectDone(id=send.id, result=SendEmailResult(status="sent", to="kim@acme.example", subject="Hi")))
    assert out.records[0].detail["held"] == {"since": T0.isoformat(), "reason": "approval"}
    assert state.ended and state.vars == {"done": True}


def test_approvals_engine_a_second_decision_and_one_for_another_request_change_nothing(tmp_path: Path) -> None:
    v1 = program(tmp_path, "2d", "v1")
    state, _ = requested(v1)
    hold = state.threads[0].frames[-1].approval
    assert hold is not None
    out = machine.step(v1, state, ACCOUNT, T0, decided("apr_someone_else"))
    assert out.records == [] and out.effects == []
    out = machine.step(v1, state, ACCOUNT, T0, decided(hold.id, "rejected", reason="no"))
    assert [(r.action, r.detail.get("status"), r.detail.get("reason")) for r in out.records] == [("approval", "rejected", "no"), ("set", None, None)]
    assert state.ended and out.effects == []  # the step was skipped; the run went on and ended
    late = machine.step(v1, state, ACCOUNT, T0, decided(hold.id))
    assert late.effects == []


def test_approvals_engine_a_pending_request_moves_to_a_new_version_with_what_it_rendered(tmp_path: Path) -> None:
    v1, v2 = program(tmp_path, "2d", "v1"), program(tmp_path, "5d", "v2")
    state, _ = requested(v1)
    hold = state.threads[0].frames[-1].approval
    assert hold is not None
    move, after, _ = migrate.apply(v1, v2, state, ACCOUNT, T0 + timedelta(hours=1))
    assert after is not None and (move.from_step, move.to_step) == ("welcome", "welcome")
    kept = after.threads[0].frames[-1].approval
    assert kept is not None and kept.id == hold.id and machine.next_wake(after) == T0 + timedelta(days=2)
    out = machine.step(v2, after, ACCOUNT, T0 + timedelta(hours=2), decided(hold.id, subject="Hello {{ contact.email }}"))
    (send,) = sends(out)
    assert isinstance(send.input, SendEmailInput) and (send.input.approval_id, send.input.edit_subject) == (hold.id, "Hello {{ contact.email }}")
    assert send.input.run.version == "v2"


def test_approvals_engine_a_request_that_fails_pauses_or_fails_the_step(tmp_path: Path) -> None:
    v1 = program(tmp_path, "2d", "v1")
    state, out = machine.start(v1, ACCOUNT, run_id="r1", event=EventIn(type="manual"), now=T0)
    (effect,) = out.effects
    out = machine.step(v1, state, ACCOUNT, T0, EffectDone(id=effect.id, error="the store is read-only", error_type="ConfigurationError"))
    assert state.status == "paused" and [r.action for r in out.records] == ["paused"]
    out = machine.step(v1, state, ACCOUNT, T0 + timedelta(hours=1), machine.Resume())
    (again,) = out.effects
    assert again.kind == "request_approval" and isinstance(again.input, ApprovalInput)
    assert again.input.approval_id == effect.input.approval_id  # the same request, asked again
    out = machine.step(v1, state, ACCOUNT, T0 + timedelta(hours=1), EffectDone(id=again.id, error="template missing", error_type="Rejected"))
    assert [(r.action, r.detail.get("status")) for r in out.records] == [("email", "failed"), ("set", None)]
    assert state.ended and state.vars == {"done": True}  # on_error: continue
