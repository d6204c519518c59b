"""The `draft` step in `validate`: its keys and files at their lines, and the safety rule of
contract section 12 (an email that can read a draft value needs `approval`), directly, through
`set`, through `update` (in the same playbook and in another), through an include and a layout,
and through dynamic reads of `run.vars`."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest

from touchpoint.dsl.validate import load_project

WORKSPACE = "timezone: UTC\ncrm: {fields: {ai_summary: AI_Summary__c, plan: Plan__c}}\n"
TEMPLATES = {
    "plan_prompt.txt.j2": "Write a plan for {{ account.name }}: {{ run.vars.objective }}\n",
    "plan_fallback.txt.j2": "A plan for {{ account.name }}.\n",
    "note.subject.j2": "A note for {{ account.name }}",
    "note.html.j2": "<p>Hello {{ contact.name }}</p>",
}
HEAD = """\
playbook: p
trigger: manual
audience: [champion]
steps:
  - draft: {prompt: plan_prompt, into: plan, fallback: plan_fallback}
    id: plan
"""


def folder(root: Path, steps: str, templates: dict[str, str] | None = None, others: dict[str, str] | None = None) -> Path:
    (root / "templates").mkdir(parents=True, exist_ok=True)
    (root / "workspace.yaml").write_text(WORKSPACE)
    (root / "p.yaml").write_text(HEAD + steps)
    for name, text in (others or {}).items():
        (root / name).write_text(textwrap.dedent(text))
    for name, text in {**TEMPLATES, **(templates or {})}.items():
        (root / "templates" / name).write_text(text)
    return root


def problems(root: Path) -> list[str]:
    return [f"{Path(p.file).name}:{p.line}: {p.field}: {p.message}" for p in load_project(root).problems]


def one_refusal(root: Path, line: int, step: str, what: str, where: str) -> None:
    (found,) = problems(root)
    assert found.startswith(f"p.yaml:{line}: ") and f"email step `{step}` can send a draft value unreviewed" in found, found
    assert what in found and where in found, found
    assert "add `approval: {by: csm}` to this email step" in found


PLAN_EMAIL = {"plan.subject.j2": "Your plan", "plan.html.j2": "<p>Hi {{ contact.name }}</p>\n<div>{{ run.vars.plan }}</div>"}


def test_draft_safety_an_email_reading_the_draft_needs_approval(tmp_path: Path) -> None:
    root = folder(tmp_path, "  - email: {template: plan}\n    id: plan_email\n", PLAN_EMAIL)
    one_refusal(root, 7, "plan_email", "`run.vars.plan`", "templates/plan.html.j2:2")
    # With an approval the same email is fine, and so is an internal step that carries the draft.
    (root / "p.yaml").write_text(HEAD + "  - email: {template: plan, approval: {by: csm}}\n    id: plan_email\n  - task: {title: Review, notes: '{{ run.vars.plan }}'}\n  - note: {text: '{{ run.vars.plan }}'}\n  - webhook: {url: 'https://hooks.example/x', json: {text: '{{ run.vars.plan }}'}}\n")
    assert problems(root) == []


def test_draft_safety_an_email_not_reading_the_draft_needs_no_approval(tmp_path: Path) -> None:
    root = folder(tmp_path, "  - set: {objective: \"'faster'\"}\n  - email: {template: other}\n", {"other.subject.j2": "Hi", "other.html.j2": "<p>{{ run.vars.objective }} {{ run.vars.get('objective') }}</p>"})
    assert problems(root) == []


@pytest.mark.parametrize(
    ("source", "what"),
    [
        ("summary: \"run.vars.plan | truncate(80)\"", "`run.vars.summary`"),
        ("summary: \"'Plan: ' ~ run.vars['plan']\"", "`run.vars.summary`"),
        ("summary: \"run.vars.get('plan')\"", "`run.vars.summary`"),
    ],
)
def test_draft_safety_a_set_from_the_draft_is_a_draft_value(tmp_path: Path, source: str, what: str) -> None:
    steps = f"  - set: {{{source}}}\n  - email: {{template: summary}}\n    id: summary_email\n"
    root = folder(tmp_path, steps, {"summary.subject.j2": "Summary", "summary.html.j2": "<p>{{ run.vars.summary }}</p>"})
    one_refusal(root, 8, "summary_email", what, "templates/summary.html.j2:1")


def test_draft_safety_a_chain_of_sets_in_any_order_carries_the_draft(tmp_path: Path) -> None:
    # `b` is set from `a` before `a` is set from the draft (a repeat runs them again): both are draft values.
    steps = """\
  - repeat:
      every: 7d
      times: 2
      steps:
        - set: {b: "run.vars.a"}
        - set: {a: "run.vars.plan"}
  - email: {template: b}
    id: b_email
"""
    root = folder(tmp_path, steps, {"b.subject.j2": "B", "b.html.j2": "<p>{{ run.vars.b }}</p>"})
    (found,) = problems(root)
    assert "`run.vars.b`" in found and "b_email" in found


def test_draft_safety_an_update_from_the_draft_taints_the_field_in_every_playbook(tmp_path: Path) -> None:
    steps = "  - update: {fields: {ai_summary: '{{ run.vars.plan }}'}}\n    id: save_plan\n"
    other = """\
    playbook: later
    trigger: {event: renewal.due}
    audience: [champion]
    steps:
      - email: {template: crm_prop}
        id: by_name
      - email: {template: crm_mapped}
        id: by_crm_name
      - email: {template: crm_dynamic}
        id: dynamic
      - email: {template: crm_other}
        id: other_field
    """
    templates = {
        "crm_prop.subject.j2": "S", "crm_prop.html.j2": "<p>{{ account.properties.ai_summary }}</p>",
        "crm_mapped.subject.j2": "S", "crm_mapped.html.j2": "<p>{{ account.properties['AI_Summary__c'] }}</p>",
        "crm_dynamic.subject.j2": "S", "crm_dynamic.html.j2": "{% for k in account.properties %}<p>{{ k }}</p>{% endfor %}",
        "crm_other.subject.j2": "S", "crm_other.html.j2": "<p>{{ account.properties.industry }}</p>",
    }
    root = folder(tmp_path, steps, templates, {"later.yaml": other})
    found = problems(root)
    assert [f.split(": ", 2)[0] for f in found] == ["later.yaml:5", "later.yaml:7", "later.yaml:9"], found
    assert "`account.properties.ai_summary`" in found[0] and "`account.properties.AI_Summary__c`" in found[1]
    assert "`account.properties` read dynamically" in found[2]


def test_draft_safety_an_update_through_an_expression_taints_too(tmp_path: Path) -> None:
    steps = "  - update: {fields: {plan: {expr: \"run.vars.plan | upper\"}}}\n  - email: {template: plan_field}\n    id: plan_field\n"
    root = folder(tmp_path, steps, {"plan_field.subject.j2": "Your {{ account.plan }} plan", "plan_field.html.j2": "<p>Hi</p>"})
    one_refusal(root, 8, "plan_field", "`account.plan`", "templates/plan_field.subject.j2:1")


@pytest.mark.parametrize(
    ("html", "partial"),
    [
        ('<p>Hi</p>{% include "_plan.html.j2" %}', "<div>{{ run.vars.plan }}</div>"),
        ('{% extends "_layout.html.j2" %}{% block body %}<p>Hi</p>{% endblock %}', None),
        ('{% import "_macros.html.j2" as m %}{{ m.show() }}', None),
    ],
)
def test_draft_safety_an_include_a_layout_or_a_macro_file_reading_the_draft_counts(tmp_path: Path, html: str, partial: str | None) -> None:
    templates = {
        "inc.subject.j2": "Plan", "inc.html.j2": html,
        "_plan.html.j2": partial or "",
        "_layout.html.j2": "<body>{% block body %}{% endblock %}<footer>{{ run.vars.plan }}</footer></body>",
        "_macros.html.j2": "{% macro show() %}<p>{{ run.vars.plan }}</p>{% endmacro %}",
    }
    root = folder(tmp_path, "  - email: {template: inc}\n    id: inc_email\n", templates)
    # (validate does not know names bound by `{% import %}` yet: only the draft rule matters here)
    (found,) = [f for f in problems(root) if "draft value" in f]
    assert "`run.vars.plan`" in found and "p.yaml:7:" in found
    assert any(f"templates/{name}:" in found for name in ("_plan.html.j2", "_layout.html.j2", "_macros.html.j2")), found


@pytest.mark.parametrize(
    "html",
    [
        "{% for key, value in run.vars.items() %}<p>{{ value }}</p>{% endfor %}",
        "{% for key in run.vars %}<p>{{ key }}</p>{% endfor %}",
        "{% set name = 'pl' ~ 'an' %}<p>{{ run.vars[name] }}</p>",
        "<pre>{{ run.vars | tojson }}</pre>",
        "{% set r = run %}<p>{{ r.vars.plan }}</p>",
        "{% set v = run.vars %}<p>{{ v.plan }}</p>",
    ],
)
def test_draft_safety_a_dynamic_read_of_run_vars_is_a_draft_value(tmp_path: Path, html: str) -> None:
    root = folder(tmp_path, "  - email: {template: dyn}\n    id: dyn_email\n", {"dyn.subject.j2": "Hi", "dyn.html.j2": html})
    one_refusal(root, 7, "dyn_email", "`run.vars` read dynamically", "templates/dyn.html.j2:1")


def test_draft_safety_a_dynamic_read_without_any_draft_is_fine(tmp_path: Path) -> None:
    root = tmp_path
    (root / "templates").mkdir()
    (root / "workspace.yaml").write_text(WORKSPACE)
    (root / "p.yaml").write_text("playbook: p\ntrigger: manual\nsteps:\n  - set: {a: \"1\"}\n  - email: {template: dyn, to: [champion]}\n")
    (root / "templates" / "dyn.subject.j2").write_text("Hi")
    (root / "templates" / "dyn.html.j2").write_text("{% for k, v in run.vars.items() %}{{ v }}{% endfor %}")
    assert problems(root) == []


def test_draft_safety_a_locale_variant_reading_the_draft_counts(tmp_path: Path) -> None:
    templates = {"loc.subject.j2": "Plan", "loc.html.j2": "<p>Hi</p>", "loc.de.html.j2": "<p>Hallo</p><p>{{ run.vars.plan }}</p>"}
    root = folder(tmp_path, "  - email: {template: loc}\n    id: loc_email\n", templates)
    one_refusal(root, 7, "loc_email", "`run.vars.plan`", "templates/loc.de.html.j2:1")


def test_draft_safety_an_address_from_the_draft_counts(tmp_path: Path) -> None:
    root = folder(tmp_path, "  - email: {template: note, to: [\"run.vars.plan\"]}\n    id: to_draft\n")
    one_refusal(root, 7, "to_draft", "`run.vars.plan`", "its `to`")


# ---------------------------------------------------------------------------- the step's own keys


@pytest.mark.parametrize(
    ("step", "expected"),
    [
        ("  - draft: {prompt: plan_prompt, into: plan2, fallback: missing_fallback}\n", "p.yaml:7: steps[1].draft.fallback: no templates/missing_fallback.txt.j2 for `missing_fallback`"),
        ("  - draft: {prompt: plan_promt, into: plan2}\n", "p.yaml:7: steps[1].draft.prompt: no templates/plan_promt.txt.j2 for `plan_promt` (did you mean `plan_prompt`?)"),
        ("  - draft: {prompt: plan_prompt, into: 'not a name'}\n", "p.yaml:7: steps[1].draft.into: 'not a name' is not a valid into"),
        ("  - draft: {prompt: plan_prompt, into: x, max_words: 0}\n", "p.yaml:7: steps[1].draft.max_words: input should be greater than or equal to 1"),
        ("  - draft: {prompt: plan_prompt, into: x, words: 10}\n", "p.yaml:7: steps[1].draft: unknown key `words`"),
        ("  - draft: {into: x}\n", "p.yaml:7: steps[1].draft.prompt: `prompt` is required"),
    ],
)
def test_draft_safety_the_draft_step_is_checked_at_its_lines(tmp_path: Path, step: str, expected: str) -> None:
    found = problems(folder(tmp_path, step))
    assert any(f.startswith(expected) for f in found), found


def test_draft_safety_a_prompt_is_checked_as_a_text_template_without_a_recipient(tmp_path: Path) -> None:
    root = folder(tmp_path, "", {"plan_prompt.txt.j2": "Plan for {{ contact.name }} at {{ acount.name }}\n"})
    found = problems(root)
    assert any("plan_prompt.txt.j2:1" in f and "unknown name `contact`" in f and "(used by the step at" in f for f in found), found
    assert any("unknown name `acount`" in f and "did you mean `account`" in f for f in found), found


def test_draft_safety_the_prompt_and_fallback_are_part_of_the_version(tmp_path: Path) -> None:
    root = folder(tmp_path, "")
    before = load_project(root).playbooks["p"].version
    (root / "templates" / "plan_fallback.txt.j2").write_text("Another plan.\n")
    assert load_project(root).playbooks["p"].version != before


def test_draft_safety_a_schedule_playbook_may_not_draft(tmp_path: Path) -> None:
    root = folder(tmp_path, "")
    (root / "p.yaml").write_text("playbook: p\ntrigger: {schedule: '0 9 * * mon'}\nsteps:\n  - draft: {prompt: plan_prompt, into: plan}\n")
    (found,) = problems(root)
    assert "p.yaml:4:" in found and "a `draft` step needs an account" in found


def test_draft_safety_the_shipped_renewal_plan_is_refused_without_its_approval(tmp_path: Path) -> None:
    import shutil

    shipped = Path(__file__).resolve().parent.parent / "playbooks"
    root = tmp_path / "playbooks"
    shutil.copytree(shipped, root)
    text = (root / "renewal-ai-plan.yaml").read_text()
    assert "      approval: {by: csm, timeout: 5d, on_timeout: skip}\n" in text
    (root / "renewal-ai-plan.yaml").write_text(text.replace("      approval: {by: csm, timeout: 5d, on_timeout: skip}\n", ""))
    line = 1 + text.splitlines().index("  - email:", text.splitlines().index("    id: plan_task"))
    (found,) = problems(root)
    assert found.startswith(f"renewal-ai-plan.yaml:{line}: ") and "email step `plan_email`" in found
    assert "`run.vars.plan`, read by templates/renewal-plan" in found
