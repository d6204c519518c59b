"""Scenario 5: validating 100 generated playbooks with their templates, and a folder of bombs.

Touchpoint: `touchpoint.dsl.validate.load_project` (schema, names in expressions and templates,
template files, versions). The baseline is the floor of any validator: reading every YAML file
with PyYAML and parsing every template with Jinja2, checking nothing.

Shipped: `touchpoint validate playbooks/` as the command runs it, the overlap check included
(every sample account simulated with every playbook over 90 days: `touchpoint.overlaps`); its
baseline is the same validation without the overlap check.

Bombs: what `touchpoint validate` does with an exponent tower in a `when:`, a template that
repeats a text a billion times, nested loops of 10^10 iterations, templates that include each
other and a YAML "billion laughs": each must be reported, the whole within 2 s (the goal moved
here from the tests, which check the reports).
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


BOMB_PLAYBOOKS = {
    "tower.yaml": 'playbook: tower\ntrigger: manual\nsteps:\n  - if: "10 ** (10 ** 9) > 1"\n    then: [{wait: 1d}]\n',
    "mail.yaml": "playbook: mail\ntrigger: manual\nsteps:\n  - email: {template: big}\n  - email: {template: loops}\n",
    "laughs.yaml": "a: &a [x,x,x,x,x,x,x,x,x,x]\n" + "".join(f"{c}: &{c} [{','.join(['*' + p] * 10)}]\n" for p, c in zip("abcdefgh", "bcdefghi", strict=True)),
}
BOMB_TEMPLATES = {
    "big.subject.j2": "Hi",
    "big.html.j2": "<p>{{ 'x' * 1000000000 }}</p>{{ 'a'|center(1000000000) }}",
    "loops.subject.j2": "Hi",
    "loops.html.j2": "{% for i in range(100000) %}{% for j in range(100000) %}x{% endfor %}{% endfor %}{% include 'again.html.j2' %}",
    "again.html.j2": "{% include 'loops.html.j2' %}",
}


def bombs(root: Path) -> Path:
    """A playbooks folder of resource bombs (see the module docs)."""
    (root / "templates").mkdir(parents=True, exist_ok=True)
    (root / "workspace.yaml").write_text(WORKSPACE)
    for name, text in BOMB_PLAYBOOKS.items():
        (root / name).write_text(text)
    for name, text in BOMB_TEMPLATES.items():
        (root / "templates" / name).write_text(text)
    return root


def validate_bombs(root: Path) -> float:
    """Validate the bombs folder as `touchpoint validate` does; the wall time.

    Raises:
        RuntimeError: a bomb went unreported.
    """
    from touchpoint.email.check import check_templates

    begin = time.monotonic()
    project = load_project(root)
    problems = [*project.problems, *check_templates(project, root / "samples")]
    wall = time.monotonic() - begin
    text = "\n".join(str(p) for p in problems)
    for expected in ("tower.yaml:4", "laughs.yaml:", "big.html.j2:1", "these loops run", "include or extend each other"):
        if expected not in text:
            raise RuntimeError(f"validate did not report {expected!r}:\n{text}")
    return wall


SHIPPED = Path(__file__).resolve().parent.parent / "playbooks"


def validate_shipped(root: Path = SHIPPED) -> tuple[float, float]:
    """Wall times of validating the shipped playbooks with and without the overlap check.

    Raises:
        RuntimeError: the shipped playbooks do not validate.
    """
    from touchpoint.email.check import check_templates
    from touchpoint.overlaps import sample_reports

    begin = time.monotonic()
    project = load_project(root)
    problems = [*project.problems, *check_templates(project, root / "samples")]
    checked = time.monotonic() - begin
    if problems:
        raise RuntimeError("\n".join(str(p) for p in problems))
    sample_reports(project, root / "samples")
    return time.monotonic() - begin, checked


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
        bomb_root = bombs(Path(tmp) / "bombs")
        bomb_wall = validate_bombs(bomb_root)
        begin = time.monotonic()
        bare_parse(bomb_root)
        bomb_bare = time.monotonic() - begin
    shipped, shipped_checks = validate_shipped()
    scenario = Scenario("validation", f"Validation of {count} playbooks with {count * 4} templates; of a folder of bombs; the shipped playbooks with the overlap check", "< 2 s each")
    scenario.figures.append(Figure("wall time", "s", round(wall, 3), round(bare, 3), "lower"))
    scenario.figures.append(Figure("bombs: wall time", "s", round(bomb_wall, 3), max(round(bomb_bare, 3), 0.001), "lower"))
    scenario.figures.append(Figure("shipped, overlaps included: wall time", "s", round(shipped, 3), round(shipped_checks, 3), "lower"))
    scenario.met = wall < 2.0 and bomb_wall < 2.0 and shipped < 2.0
    scenario.notes.append(f"Baseline: PyYAML and Jinja2 parsing the same {files} files with no checks (a floor, not a competitor).")
    scenario.notes.append("Shipped: the baseline is the same validation without the overlap check of the sample accounts.")
    return scenario
