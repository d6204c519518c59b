"""Scenario 5: validating 100 generated playbooks with their templates.

Touchpoint: `touchpoint.dsl.validate.load_project` (schema, names in expressions and templates,
template files, versions). The baseline is the floor of any validator: reading every YAML file
with PyYAML and parsing every template with Jinja2, checking nothing.
"""

from __future__ import annotations

import tempfile
import time
from pathlib import Path

import yaml
from jinja2 import Environment

from bench.common import WORKSPACE, Figure, Scenario
from touchpoint.dsl.validate import load_project

PLAYBOOK = """\
playbook: gen-{i}
name: Generated playbook {i}
trigger:
  event: account.created
  when: "account.seats.licensed >= {seats}"
audience: [champion, admin]
exit_when: "account.properties.churned"
goal: "account.metrics.integrations >= 2"
steps:
  - email: {{template: gen-{i}-welcome}}
    id: welcome
  - wait: 2d
  - task: {{title: "Kickoff with {{{{ account.name }}}}", owner: csm, due: 3d, priority: high}}
    id: kickoff
  - wait_for: {{event: setup.sso_configured, timeout: 10d, on_timeout: [{{email: {{template: gen-{i}-nudge, to: [admin]}}, id: nudge}}]}}
    id: sso
  - if: "account.seats.active / account.seats.licensed < 0.5"
    then:
      - note: {{text: "Low activation for {{{{ account.name }}}}: {{{{ account.seats.active }}}} seats"}}
    else:
      - update: {{fields: {{stage: "activated"}}}}
  - set: {{ratio: "account.seats.active / account.seats.licensed"}}
  - repeat:
      every: 7d
      times: 3
      steps:
        - email: {{template: gen-{i}-nudge}}
          id: weekly
"""
WELCOME_SUBJECT = "Welcome, {{ account.name }}"
WELCOME_HTML = "<p>Hi {{ contact.name }},</p><p>{{ account.name }} has {{ account.seats.licensed }} seats.</p>{% if account.csm %}<p>{{ account.csm.name }}</p>{% endif %}"
NUDGE_SUBJECT = "Next steps for {{ account.name }}"
NUDGE_HTML = "<p>Day {{ run.day }}: {% for c in contacts %}{{ c.email }} {% endfor %}</p>"


def generate(root: Path, count: int = 100) -> Path:
    """A playbooks folder with ``count`` playbooks, two templates (subject and HTML) each."""
    (root / "templates").mkdir(parents=True, exist_ok=True)
    (root / "workspace.yaml").write_text(WORKSPACE)
    for i in range(count):
        (root / f"gen-{i}.yaml").write_text(PLAYBOOK.format(i=i, seats=10 + i))
        for name, text in ((f"gen-{i}-welcome.subject.j2", WELCOME_SUBJECT), (f"gen-{i}-welcome.html.j2", WELCOME_HTML), (f"gen-{i}-nudge.subject.j2", NUDGE_SUBJECT), (f"gen-{i}-nudge.html.j2", NUDGE_HTML)):
            (root / "templates" / name).write_text(text)
    return root


def bare_parse(root: Path) -> int:
    """Read every YAML file and parse every template, checking nothing; returns the file count."""
    env = Environment()
    files = 0
    for path in sorted(root.glob("*.yaml")):
        yaml.safe_load(path.read_text())
        files += 1
    for path in sorted((root / "templates").glob("*.j2")):
        env.parse(path.read_text())
        files += 1
    return files


def run(count: int = 100) -> Scenario:
    """Validate ``count`` generated playbooks; the folder must come out clean.

    Raises:
        ContractError: the generator wrote an invalid playbook (a bug in the bench).
    """
    with tempfile.TemporaryDirectory(prefix="touchpoint-bench-") as tmp:
        root = generate(Path(tmp) / "playbooks", count)
        begin = time.monotonic()
        project = load_project(root)
        wall = time.monotonic() - begin
        project.raise_for_problems()
        if len(project.playbooks) != count:
            raise RuntimeError(f"expected {count} valid playbooks, found {len(project.playbooks)}")
        begin = time.monotonic()
        files = bare_parse(root)
        bare = time.monotonic() - begin
    scenario = Scenario("validation", f"Validation of {count} playbooks with {count * 4} templates", "< 2 s")
    scenario.figures.append(Figure("wall time", "s", round(wall, 3), round(bare, 3), "lower"))
    scenario.met = wall < 2.0
    scenario.notes.append(f"Baseline: PyYAML and Jinja2 parsing the same {files} files with no checks (a floor, not a competitor).")
    return scenario
