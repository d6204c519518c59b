"""`touchpoint preview` and the template render check of `touchpoint validate`."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from typer.testing import CliRunner

from tests.conftest import write_folder
from tests.servers.sendgrid_server import run_sendgrid_server
from touchpoint.cli.main import app
from touchpoint.dsl.validate import load_project
from touchpoint.email.check import check_templates

PLAYBOOK = """\
playbook: branches
trigger: manual
audience: [champion, admin]
steps:
  - email: {template: welcome}
    id: welcome
  - if: "account.seats.active / account.seats.licensed < 0.5"
    id: activation
    then:
      - email: {template: nudge, to: [admin]}
        id: nudge_admins
    else:
      - email: {template: kudos, to: [champion]}
  - split:
      short: {weight: 1, steps: [{email: {template: short}, id: short_mail}]}
      long: {weight: 1, steps: [{email: {template: long}, id: long_mail}]}
    id: length
  - wait_for:
      event: setup.sso_configured
      timeout: 5d
      on_timeout: [{email: {template: sso, to: [csm]}, id: sso_chase}]
"""
TEMPLATES = {
    "templates/welcome.subject.j2": "Welcome to {{ account.name }}, {{ contact.name }}",
    "templates/welcome.html.j2": "<p>Hello {{ contact.name }} &amp; team</p>",
    "templates/welcome.de.subject.j2": "Willkommen bei {{ account.name }}, {{ contact.name }}",
    "templates/welcome.de.html.j2": "<p>Hallo {{ contact.name }}</p>",
    "templates/nudge.subject.j2": "Only {{ account.seats.active }} active seats",
    "templates/nudge.html.j2": "<p>Invite your team</p>",
    "templates/nudge.de.subject.j2": "Nur {{ account.seats.active }} aktive Plätze",
    "templates/kudos.subject.j2": "Great adoption",
    "templates/kudos.html.j2": "<p>Well done</p>",
    "templates/short.subject.j2": "Short ({{ run.vars.length }})",
    "templates/short.html.j2": "<p>short</p>",
    "templates/long.subject.j2": "Long ({{ run.vars.length }})",
    "templates/long.html.j2": "<p>long</p>",
    "templates/sso.subject.j2": "SSO for {{ account.name }} is late",
    "templates/sso.html.j2": "<p>{{ contact.name }}, please chase</p>",
}
WORKSPACE = "timezone: UTC\nsender: {email: cs@example.com, name: CS Team}\n"
ACCOUNT = """\
id: acme
name: Acme
seats: {licensed: 100, active: 20}
csm: {name: Dana, email: dana@example.com}
contacts:
  - {email: kim@acme.example, name: Kim, role: champion, locale: en}
  - {email: lee@acme.example, name: Lee, role: admin, locale: de}
"""


def make_project(root: Path) -> tuple[Path, Path]:
    folder = write_folder(root / "playbooks", {"workspace.yaml": WORKSPACE, "branches.yaml": PLAYBOOK, **TEMPLATES})
    account = root / "acme.yaml"
    account.write_text(ACCOUNT)
    return folder / "branches.yaml", account


def invoke(args: list[str], env: dict[str, str] | None = None) -> Any:
    return CliRunner().invoke(app, args, env=env, catch_exceptions=False)


def test_preview_renders_every_branch_and_locale(tmp_path: Path) -> None:
    playbook, account = make_project(tmp_path)
    out = tmp_path / "out"
    result = invoke(["preview", str(playbook), "--account", str(account), "--out", str(out), "--json"])
    assert result.exit_code == 0, result.output
    rows = [json.loads(line) for line in result.output.splitlines()]
    got = {(r["step"], r["locale"]): r for r in rows}
    assert sorted(got) == [
        ("long_mail", "default"),
        ("nudge_admins", "de"),
        ("nudge_admins", "default"),
        ("short_mail", "default"),
        ("sso_chase", "default"),
        ("steps[1].else[0]", "default"),
        ("welcome", "de"),
        ("welcome", "default"),
    ]
    assert got[("welcome", "default")]["subject"] == "Welcome to Acme, Kim"
    # The German variant is rendered for the contact who reads German.
    assert got[("welcome", "de")]["subject"] == "Willkommen bei Acme, Lee"
    assert got[("nudge_admins", "de")]["subject"] == "Nur 20 aktive Plätze"
    # Each split variant sees itself in run.vars, as the run would.
    assert got[("short_mail", "default")]["subject"] == "Short (short)"
    assert got[("long_mail", "default")]["subject"] == "Long (long)"
    assert got[("sso_chase", "default")]["recipient"] == "dana@example.com"
    assert got[("sso_chase", "default")]["line"] == 21
    # Each variant names who gets it when a run sends it: Kim reads English, Lee German.
    assert got[("welcome", "default")]["receives"] == ["kim@acme.example"]
    assert got[("welcome", "de")]["receives"] == ["lee@acme.example"]
    assert got[("nudge_admins", "de")]["receives"] == ["lee@acme.example"]
    assert got[("nudge_admins", "default")]["receives"] == []
    assert got[("sso_chase", "default")]["receives"] == ["dana@example.com"]
    for row in rows:
        html, text = Path(row["html"]), Path(row["text"])
        assert html.parent == out / "acme" and text.parent == out / "acme"
        assert html.name == f"{html.name.rsplit('.', 2)[0]}.{row['locale']}.html"
        assert "/unsubscribe/" in html.read_text() and "/unsubscribe/" in text.read_text()
    assert "Hallo Lee" in (out / "acme" / "welcome.de.html").read_text()
    assert "Hello Kim &amp; team" in (out / "acme" / "welcome.default.html").read_text()
    assert "Hello Kim & team" in (out / "acme" / "welcome.default.txt").read_text()


def test_preview_of_a_second_account_keeps_the_first_ones_files(tmp_path: Path) -> None:
    playbook, account = make_project(tmp_path)
    other = tmp_path / "globex.yaml"
    other.write_text(ACCOUNT.replace("id: acme", "id: globex").replace("name: Acme", "name: Globex").replace("name: Kim", "name: Kira"))
    out = tmp_path / "out"
    for doc in (account, other):
        result = invoke(["preview", str(playbook), "--account", str(doc), "--out", str(out), "--json"])
        assert result.exit_code == 0, result.output
    assert "Hallo Lee" in (out / "acme" / "welcome.de.html").read_text()
    assert "Hello Kim" in (out / "acme" / "welcome.default.html").read_text()
    assert "Hello Kira" in (out / "globex" / "welcome.default.html").read_text()
    assert sorted(p.name for p in out.iterdir()) == ["acme", "globex"]


def test_preview_prints_plain_rows_when_piped(tmp_path: Path) -> None:
    playbook, account = make_project(tmp_path)
    out = tmp_path / "o"
    result = invoke(["preview", str(playbook), "--account", str(account), "--out", str(out)])
    assert result.exit_code == 0, result.output
    title, header, *rows = result.output.splitlines()
    assert title == f"branches for acme: 8 emails in {out / 'acme'}"
    assert header.split() == ["step", "locale", "receives", "subject", "files"]
    assert len(rows) == 8
    # One line per email, whole: the German welcome, who gets it, its subject and its files.
    (german,) = [row for row in rows if row.startswith("welcome ") and " de " in row]
    assert german.split()[:3] == ["welcome", "de", "lee@acme.example"]
    assert "Willkommen bei Acme, Lee" in german and german.endswith("welcome.de.html welcome.de.txt")
    (english,) = [row for row in rows if row.startswith("nudge_admins ") and " default " in row]
    assert "(no contact)" in english


def test_preview_send_to_sends_each_email_to_only_that_address(tmp_path: Path) -> None:
    playbook, account = make_project(tmp_path)
    with run_sendgrid_server("SG.preview.key") as sg:
        env = {
            "TOUCHPOINT_HOME": str(tmp_path / "home"),
            "TOUCHPOINT_EMAIL_BACKEND": "sendgrid",
            "SENDGRID_API_KEY": "SG.preview.key",
            "TOUCHPOINT_SENDGRID_URL": sg.url,
        }
        args = [
            "preview",
            str(playbook),
            "--account",
            str(account),
            "--out",
            str(tmp_path / "out"),
            "--send-to",
            "qa@example.org",
            "--json",
        ]
        result = invoke(args, env)
        assert result.exit_code == 0, result.output
        rows = [json.loads(line) for line in result.output.splitlines()]
        assert len(sg.sent) == len(rows) == 8
        assert all(mail.recipients == ["qa@example.org"] for mail in sg.sent)
        assert all(not p.get("cc") and not p.get("bcc") for mail in sg.sent for p in mail.body["personalizations"])
        subjects = sorted(mail.body["subject"] for mail in sg.sent)
        assert subjects == sorted(f"[TEST] {r['subject']}" for r in rows)
        assert all(r["sent_to"] == "qa@example.org" for r in rows)


def test_preview_send_to_reports_a_refused_key(tmp_path: Path) -> None:
    playbook, account = make_project(tmp_path)
    with run_sendgrid_server("SG.right.key") as sg:
        env = {
            "TOUCHPOINT_HOME": str(tmp_path / "home"),
            "TOUCHPOINT_EMAIL_BACKEND": "sendgrid",
            "SENDGRID_API_KEY": "SG.wrong.key",
            "TOUCHPOINT_SENDGRID_URL": sg.url,
        }
        args = [
            "preview",
            str(playbook),
            "--account",
            str(account),
            "--out",
            str(tmp_path / "out"),
            "--send-to",
            "qa@example.org",
            "--json",
        ]
        result = invoke(args, env)
        assert result.exit_code == 1
        rows = [json.loads(line) for line in result.output.splitlines() if line.startswith("{")]
        assert rows and all("SENDGRID_API_KEY" in r["error"] for r in rows)
        assert sg.sent == []


def test_preview_without_send_to_sends_nothing(tmp_path: Path) -> None:
    playbook, account = make_project(tmp_path)
    home = tmp_path / "home"
    result = invoke(
        ["preview", str(playbook), "--account", str(account), "--out", str(tmp_path / "out")],
        {"TOUCHPOINT_HOME": str(home)},
    )
    assert result.exit_code == 0, result.output
    assert not (home / "outbox").exists()


def test_check_templates_reports_render_errors_at_template_and_step_lines(tmp_path: Path) -> None:
    folder = write_folder(
        tmp_path / "playbooks",
        {
            "workspace.yaml": WORKSPACE,
            "p.yaml": "playbook: p\ntrigger: manual\nsteps:\n  - note: {text: hi}\n  - email: {template: csm, to: [champion]}\n    id: intro\n",
            "templates/csm.subject.j2": "Meet your CSM",
            "templates/csm.html.j2": "<p>Hello</p>\n<p>{{ account.csm.name | length }} letters</p>\n",
            "samples/with-csm.yaml": "id: good\nname: Good\ncsm: {name: Dana, email: dana@example.com}\ncontacts: [{email: a@good.example, role: champion}]\n",
            "samples/no-csm.yaml": "id: bare\nname: Bare\ncontacts: [{email: b@bare.example, role: champion}]\n",
            "samples/events.yaml": "- {after: 1d, type: setup.sso_configured}\n",
        },
    )
    project = load_project(folder)
    assert project.problems == []
    problems = check_templates(project, folder / "samples")
    assert len(problems) == 1
    (problem,) = problems
    assert problem.file.endswith("templates/csm.html.j2") and problem.line == 2
    assert "`bare`" in problem.message and "`good`" not in problem.message
    assert f"{folder / 'p.yaml'}:5" in problem.message or "p.yaml:5" in problem.message


def test_preview_writes_what_the_approver_will_review(tmp_path: Path) -> None:
    body = PLAYBOOK.replace("  - email: {template: welcome}\n", "  - email: {template: welcome, approval: {by: csm, timeout: 36h, on_timeout: send}}\n")
    folder = write_folder(tmp_path / "playbooks", {"workspace.yaml": WORKSPACE, "branches.yaml": body, **TEMPLATES})
    account = tmp_path / "acme.yaml"
    account.write_text(ACCOUNT)
    out = tmp_path / "out"
    result = invoke(["preview", str(folder / "branches.yaml"), "--account", str(account), "--out", str(out), "--json"])
    assert result.exit_code == 0, result.output
    items = [json.loads(line) for line in result.stdout.splitlines()]
    welcome = [item for item in items if item["step"] == "welcome"]
    assert welcome and all(item["approval"]["by"] == "dana@example.com" for item in welcome)
    assert all(item["approval"] is None for item in items if item["step"] != "welcome")
    review = Path(welcome[0]["approval"]["file"])
    assert review == out / "acme" / "welcome.approval.txt"
    text = review.read_text()
    # The approver reads each recipient's own email: Kim's in English, Lee's in German.
    assert "by        dana@example.com, until 36h after the request (then: send as rendered)" in text
    assert "to kim@acme.example (Kim)\nsubject: Welcome to Acme, Kim\nHello Kim & team" in text
    assert "to lee@acme.example (Lee)\nsubject: Willkommen bei Acme, Lee\nHallo Lee" in text
    table = invoke(["preview", str(folder / "branches.yaml"), "--account", str(account), "--out", str(out)])
    assert f"approval of welcome: by dana@example.com within 36h (then send), as the approver sees it: {review}" in table.stdout
