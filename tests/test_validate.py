"""`touchpoint validate`: every broken playbook is reported at its file, line and field."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest
from typer.testing import CliRunner

from touchpoint.cli.main import app
from touchpoint.dsl.validate import load_project

WORKSPACE = """\
timezone: America/New_York
sender: {email: success@example.com, name: Example CS}
segments:
  enterprise: "account.seats.licensed >= 1000"
  digital: "true"
"""


def make_folder(root: Path, playbooks: dict[str, str], templates: dict[str, str] | None = None) -> Path:
    (root / "templates").mkdir(parents=True, exist_ok=True)
    (root / "workspace.yaml").write_text(WORKSPACE)
    for name, text in playbooks.items():
        (root / name).write_text(textwrap.dedent(text))
    base = {"welcome.subject.j2": "Welcome, {{ contact.name }}", "welcome.html.j2": "<p>Hi {{ account.name }}</p>"}
    for name, text in {**base, **(templates or {})}.items():
        (root / "templates" / name).write_text(text)
    return root


def problems_of(root: Path) -> list[str]:
    return [f"{Path(p.file).name}:{p.line}: {p.field}: {p.message}" for p in load_project(root).problems]


GOOD = """\
playbook: good
trigger: {event: account.created, when: "account.segment == 'enterprise'"}
audience: [champion]
steps:
  - email: {template: welcome}
    id: welcome
  - wait: 3d
  - wait_for: {event: setup.sso_configured, timeout: 14d, on_timeout: [{task: {title: "Chase SSO for {{ account.name }}"}}]}
  - if: "account.seats.active / account.seats.licensed < 0.5"
    then: [{note: {text: "Low activation"}}]
    else: [{set: {activated: "true"}}]
"""


def test_validate_accepts_a_good_playbook(tmp_path: Path) -> None:
    root = make_folder(tmp_path, {"good.yaml": GOOD})
    project = load_project(root)
    assert project.problems == []
    assert list(project.playbooks) == ["good"]
    assert len(project.playbooks["good"].version) == 12


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        ("  - wiat: 3d\n", "bad.yaml:5: steps[1]: unknown step `wiat` (did you mean `wait`?)"),
        ("  - wait: 3x\n", "bad.yaml:5: steps[1].wait: expected a duration like 3d, 12h, 90m, 2w or P3D, found '3x'"),
        ("  - task: {title: Call, priorty: high}\n", "bad.yaml:5: steps[1].task: unknown key `priorty` (did you mean `priority`?)"),
        ("  - note:\n      text: hi\n      colour: red\n", "bad.yaml:7: steps[1].note: unknown key `colour`"),
        ("  - email: {template: welcome}\n    wait: 3d\n", "bad.yaml:5: steps[1]: a step has exactly one action key, found `email`, `wait`"),
        ("  - wait_for: {event: a.b}\n", "bad.yaml:5: steps[1].wait_for.timeout: `timeout` is required"),
        ("  - task: {title: t}\n    on_error: contine\n", "bad.yaml:6: steps[1].on_error: expected 'continue' or 'stop', found 'contine' (did you mean `continue`?)"),
        ("  - email: {template: welcome, approval: {by: the-csm}}\n", "bad.yaml:5: steps[1].email.approval.by: expected `csm`, `owner` or an email address, found 'the-csm'"),
        ("  - email:\n      template: welcome\n      approval:\n        on_timeout: sned\n", "bad.yaml:8: steps[1].email.approval.on_timeout: expected 'send' or 'skip', found 'sned' (did you mean `send`?)"),
        ("  - email: {template: welcome, approval: {timeout: 0d}}\n", "bad.yaml:5: steps[1].email.approval.timeout: expected a duration longer than zero"),
        ("  - email: {template: welcome, approval: {by: csm, timout: 2d}}\n", "bad.yaml:5: steps[1].email.approval: unknown key `timout` (did you mean `timeout`?)"),
    ],
)
def test_validate_reports_schema_errors_at_their_line(tmp_path: Path, body: str, expected: str) -> None:
    text = "playbook: bad\ntrigger: manual\nsteps:\n  - wait: 1d\n" + body
    root = make_folder(tmp_path, {"bad.yaml": text})
    found = problems_of(root)
    assert any(p.startswith(expected) for p in found), found


@pytest.mark.parametrize(
    ("step", "expected"),
    [
        ('  - if: "acount.segment == \'x\'"\n    then: [{wait: 1d}]\n', "bad.yaml:5: steps[1].if: unknown name `acount`"),
        ('  - if: "account.seat.licensed > 3"\n    then: [{wait: 1d}]\n', "bad.yaml:5: steps[1].if: unknown field `seat` of `account` (did you mean `seats`?)"),
        ('  - set: {x: "cycler.__init__.__globals__"}\n', "bad.yaml:5: steps[1].set.x: `__init__` is not allowed"),
        ("  - note: {text: \"{{ ''.__class__.__mro__ }}\"}\n", "bad.yaml:5: steps[1].note.text: `__class__` is not allowed"),
        ("  - start: {playbook: nowhere}\n", "bad.yaml:5: steps[1].start.playbook: no playbook `nowhere`"),
        ("  - email: {template: welcom}\n", "bad.yaml:5: steps[1].email.template: template `welcom` has no templates/welcom.subject.j2 (did you mean `welcome`?)"),
        ("  - email: {template: welcome, to: [champoin]}\n", "bad.yaml:5: steps[1].email.to[0]: `champoin` is neither a known role"),
        ('  - wait: 1d\n    id: one\n', "bad.yaml:6: steps[1].id: step id `one` is already used at line 4"),
        ('  - set: {n: "account.properties.anything.at.all"}\n', None),
        ('  - task: {title: "{{ run.vars.x }} {{ event.data.y }} {{ account.metrics.z }}"}\n', None),
    ],
)
def test_validate_checks_names_used_by_expressions(tmp_path: Path, step: str, expected: str | None) -> None:
    text = "playbook: bad\ntrigger: manual\nsteps:\n  - {wait: 1d, id: one}\n" + step
    root = make_folder(tmp_path, {"bad.yaml": text})
    found = problems_of(root)
    if expected is None:
        assert found == []
    else:
        assert any(p.startswith(expected) for p in found), found


def test_validate_names_the_template_file_and_line(tmp_path: Path) -> None:
    root = make_folder(
        tmp_path,
        {"p.yaml": "playbook: p\ntrigger: manual\nsteps:\n  - email: {template: hello}\n"},
        {"hello.subject.j2": "Hi", "hello.html.j2": "<p>ok</p>\n<p>{{ contact.nme }}</p>\n{% include 'part.html.j2' %}", "part.html.j2": "{{ acct.name }}"},
    )
    found = problems_of(root)
    assert any(p.startswith("hello.html.j2:2: : unknown field `nme` of `contact` (did you mean `name`?)") and "p.yaml:4" in p for p in found), found
    assert any(p.startswith("part.html.j2:1: : unknown name `acct` (did you mean `account`?)") for p in found), found


def test_validate_reports_every_problem_in_every_file(tmp_path: Path) -> None:
    root = make_folder(
        tmp_path,
        {
            "a.yaml": "playbook: a\ntrigger: manual\nsteps:\n  - wiat: 1d\n",
            "b.yaml": "playbook: b\ntrigger: {event: Account.Created}\nsteps:\n  - wait: 1d\n",
            "c.yaml": "playbook: c\ntrigger: manual\nsteps:\n  - wait: 1d\n  bad: [\n",
        },
    )
    found = problems_of(root)
    assert any(p.startswith("a.yaml:4: steps[0]: unknown step `wiat`") for p in found), found
    assert any(p.startswith("b.yaml:2: trigger.event: 'Account.Created' is not a valid event") for p in found), found
    assert any(p.startswith("c.yaml:") and "invalid YAML" in p for p in found), found


def test_validate_rejects_duplicate_yaml_keys_and_keeps_norway(tmp_path: Path) -> None:
    root = make_folder(tmp_path, {"d.yaml": "playbook: d\ntrigger: manual\nsteps:\n  - wait: 1d\nsteps:\n  - wait: 2d\n"})
    (root / "workspace.yaml").write_text(WORKSPACE + "holidays: [US, NO]\n")
    found = problems_of(root)
    assert any(p.startswith("d.yaml:5: ") and "appears twice" in p for p in found), found
    assert not any("holidays" in p for p in found), found


def test_validate_cli_exit_codes_and_output(tmp_path: Path) -> None:
    runner = CliRunner()
    good = make_folder(tmp_path / "good", {"good.yaml": GOOD})
    result = runner.invoke(app, ["validate", str(good)])
    assert result.exit_code == 0, result.output
    assert "ok good (" in result.output and "5 steps" not in result.output
    bad = make_folder(tmp_path / "bad", {"bad.yaml": "playbook: bad\ntrigger: manual\nsteps:\n  - wiat: 1d\n"})
    result = runner.invoke(app, ["validate", str(bad)])
    assert result.exit_code == 1
    assert "bad.yaml:4: steps[0]: unknown step `wiat` (did you mean `wait`?)" in result.output
    assert "Traceback" not in result.output


def test_validate_allows_jinja_loop_variables_in_templates(tmp_path: Path) -> None:
    text = "playbook: p\ntrigger: manual\nsteps:\n  - task:\n      title: t\n      notes: \"{% for c in contacts %}{{ c.email }}{{ ',' if not loop.last }}{% endfor %}\"\n"
    root = make_folder(tmp_path, {"p.yaml": text})
    assert problems_of(root) == []


def test_validate_explains_step_keys_put_inside_the_action(tmp_path: Path) -> None:
    root = make_folder(tmp_path, {"p.yaml": "playbook: p\ntrigger: manual\nsteps:\n  - note: {text: x, when: \"true\"}\n"})
    found = problems_of(root)
    assert any(p.startswith("p.yaml:4: steps[0].note: unknown key `when` inside `note`: `when` belongs on the step") for p in found), found


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        # A misspelled action key on the 3rd line of a list item: its own line, not the item's.
        ("  - id: later\n    when: \"true\"\n    wiat: 3d\n", "bad.yaml:7: steps[1]: unknown step `wiat` (did you mean `wait`?)"),
        ("  - id: later\n    emial: {template: welcome}\n", "bad.yaml:6: steps[1]: unknown step `emial` (did you mean `email`?)"),
        ("  - note:\n      text: hi\n\n      colour: red\n", "bad.yaml:8: steps[1].note: unknown key `colour`"),
    ],
)
def test_validate_reports_a_misspelled_key_at_its_own_line(tmp_path: Path, body: str, expected: str) -> None:
    text = "playbook: bad\ntrigger: manual\nsteps:\n  - wait: 1d\n" + body
    root = make_folder(tmp_path, {"bad.yaml": text})
    found = problems_of(root)
    assert any(p.startswith(expected) for p in found), found


def test_validate_reports_a_misspelled_trigger_key_at_its_own_line(tmp_path: Path) -> None:
    text = "playbook: bad\ntrigger:\n  when: \"true\"\n  evnt: account.created\nsteps:\n  - wait: 1d\n"
    root = make_folder(tmp_path, {"bad.yaml": text})
    found = problems_of(root)
    assert any(p.startswith("bad.yaml:4: trigger: expected exactly one of") for p in found), found


def test_validate_accepts_approval_and_refuses_it_in_schedule_playbooks(tmp_path: Path) -> None:
    approved = """\
    playbook: approved
    trigger: manual
    audience: [champion]
    steps:
      - email: {template: welcome, approval: {by: owner, timeout: 36h, on_timeout: send}}
      - email: {template: welcome, approval: {by: lead@example.com}}
      - email: {template: welcome, approval: {}}
    """
    digest = """\
    playbook: digest
    trigger: {schedule: "0 9 * * mon"}
    steps:
      - email: {template: digest, for_each: csm, approval: {by: csm}}
    """
    root = make_folder(tmp_path, {"approved.yaml": approved, "digest.yaml": digest}, {"digest.subject.j2": "Your week", "digest.html.j2": "<p>{{ accounts | length }}</p>"})
    project = load_project(root)
    (step,) = [s for s in project.playbooks["approved"].playbook.steps[2:]]
    assert step.email.approval is not None  # type: ignore[attr-defined]
    assert (step.email.approval.by, step.email.approval.timeout.days, step.email.approval.on_timeout) == ("csm", 2, "skip")  # type: ignore[attr-defined]
    assert problems_of(root) == ["digest.yaml:4: steps[0].email.approval: `approval` needs an account's run to hold the email; a schedule playbook sends once per tick (approve the digest's content in its templates instead)"]
