"""Bounded expressions and templates: bombs are refused by `validate` at their line, and fail at
run time as clear errors when only the data shows them; the sandbox's escape protections stay."""

from __future__ import annotations

import shutil
import tracemalloc
from pathlib import Path

import pytest

from touchpoint.dsl import bounds
from touchpoint.dsl import expressions as ex
from touchpoint.dsl.sandbox import expression_environment
from touchpoint.dsl.validate import load_project
from touchpoint.email.errors import TemplateRenderError
from touchpoint.email.render import render_email
from touchpoint.simulate import simulate, simulate_on_server

from .test_validate import make_folder, problems_of

PLAYBOOKS = Path(__file__).resolve().parent.parent / "playbooks"

# Each would hang Jinja2's compiler or allocate gigabytes without the bounds.
EXPRESSION_BOMBS = [
    ("10 ** (10 ** 9)", "bits, above the limit of 4,096"),
    ("(10 ** 10) ** (10 ** 10)", "bits, above the limit"),
    ("'x' * 1000000000", "would be 1,000,000,000 long"),
    ("1000000000 * ['x']", "would be 1,000,000,000 long"),
    ("[1] * 100000 * 100000", "long, above the limit of 1,000,000"),
    ("'a'|center(1000000000)", "`center(1000000000)` would be"),
    ("'%0999999999d' % 1", "a formatted field would be"),
    ("'%s'|format('x')|indent(1000000000)", "the indented text would be"),
    ("range(10 ** 9)|list", "`range` of 1,000,000,000 numbers"),
    ("('x' * 999999) ~ ('y' * 999999)", "the joined text would be"),
    ("2 ** 5000 * 2 ** 5000", "bits, above the limit"),
]


@pytest.mark.parametrize(("source", "reason"), EXPRESSION_BOMBS)
def test_bounds_static_check_refuses_constant_bombs(source: str, reason: str) -> None:
    tracemalloc.start()
    try:
        problems = ex.check_expression(source, ex.scope())
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert any(reason in p.message for p in problems), problems
    assert peak < 20_000_000, f"checking `{source}` used {peak:,} bytes"


@pytest.mark.parametrize(
    ("source", "reason"),
    [
        ("account.name * 1000000000", "would be 4,000,000,000 long"),
        ("account.arr ** account.arr", "bits, above the limit"),
        ("account.name|center(account.arr)", "`center(100000000)` would be"),
        ("account.name.center(account.arr)", "`center(100000000)` would be"),
        ("account.name.ljust(account.arr)", "`ljust(100000000)` would be"),
        ("'{:>' ~ account.arr ~ '}'", None),  # a harmless text: building a format is fine
        ("('{:>' ~ account.arr ~ '}').format(1)", "a formatted field would be"),
        ("('%' ~ account.arr ~ 's') % 'x'", "a formatted field would be"),
        ("'ab'.replace('', account.name * 200000)", "the replaced text would be"),
        ("(account.name * 100000)|wordwrap(1, wrapstring=account.name * 1000)", "the wrapped text would be"),
        ("lipsum(account.arr)", "lipsum() makes at most"),
    ],
)
def test_bounds_evaluate_stops_data_driven_bombs_with_an_expression_error(source: str, reason: str | None) -> None:
    context = {"account": {"name": "Acme", "arr": 100_000_000}}
    assert ex.check_expression(source, {"account": "*"}) == []  # nothing to see statically
    if reason is None:
        assert isinstance(ex.evaluate(source, context), str)
        return
    with pytest.raises(ex.ExpressionError, match="failed: ") as caught:
        ex.evaluate(source, context)
    assert reason in str(caught.value)


@pytest.mark.parametrize(
    ("source", "reason"),
    [
        ("{% for i in range(n) %}{{ 'y' * 1000 }}{% endfor %}", "the output is longer than"),
        ("{% for i in range(n) %}{% for j in range(n) %}{% endfor %}{% endfor %}", "more than 1,000,000 operations"),
        ("{% macro f(k) %}{{ f(k) }}{% endmacro %}{{ f(1) }}", "calls nest deeper than 50"),
        ("{% macro f(k) %}{% if k %}{{ f(k-1) }}{{ f(k-1) }}{% endif %}{% endmacro %}{{ f(30) }}", "more than 1,000,000 operations"),
        ("{% set ns = namespace(s='x') %}{% for i in range(n) %}{% set ns.s = ns.s ~ ns.s %}{% endfor %}", "the joined text would be"),
        ("{% for x in items recursive %}{{ loop(items) }}{% endfor %}", "calls nest deeper than 50"),
        ("{% for i in range(n) %}{{ 5 in items }}{% endfor %}", "more than 1,000,000 operations"),
    ],
)
def test_bounds_render_text_stops_loops_recursion_and_output(source: str, reason: str) -> None:
    assert [p for p in ex.check_text(source, {"n": None, "items": None}) if "operations" in p.message] == []
    with pytest.raises(ex.ExpressionError) as caught:
        ex.render_text(source, {"n": 100_000, "items": list(range(100_000))})
    assert reason in str(caught.value)


def test_bounds_workflow_budget_counts_operations_not_time() -> None:
    # The same expression spends the same operations every time: replay decides identically.
    spent = []
    for _ in range(3):
        with bounds.budget() as budget:
            ex.evaluate("items|map('upper')|join(',')|length", {"items": ["a"] * 5000})
        assert budget.deadline is None
        spent.append(budget.operations)
    assert len(set(spent)) == 1 and spent[0] > 5000


def test_bounds_keep_ordinary_templates_working() -> None:
    context = {"account": {"name": "Acme", "arr": 120000, "contacts": [{"name": "Ann"}, {"name": "Bo"}]}, "items": [3, 1, 2]}
    assert ex.evaluate("account.arr * 2 + 1 - 1 // 1 % 7 ** 2", context) == 240000 + 1 - 1 // 1 % 49
    assert ex.evaluate("'ab' * 3 ~ '!' ~ (2 ** 10)", context) == "ababab!1024"
    assert ex.evaluate("items|sort|join('-')", context) == "1-2-3"
    assert ex.evaluate("'{:>6}'.format(account.name)", context) == "  Acme"
    assert ex.evaluate("'%05d' % 42", context) == "00042"
    assert ex.evaluate("3 in items and 9 not in items", context) is True
    text = "{% for c in account.contacts %}{{ loop.index }}:{{ c.name ~ '.' }}{% if not loop.last %} {% endif %}{% endfor %}"
    assert ex.render_text(text, context) == "1:Ann. 2:Bo."
    macro = "{% macro row(c) %}<{{ c.name }}>{% endmacro %}{% for c in account.contacts %}{{ row(c) }}{% endfor %}"
    assert ex.render_text(macro, context) == "<Ann><Bo>"


@pytest.mark.parametrize(
    "source",
    ["''.__class__.__mro__", "cycler.__init__.__globals__", "account.__class__", "(1).__class__.__subclasses__()"],
)
def test_bounds_keep_the_sandbox_escape_protections(source: str) -> None:
    with pytest.raises(ex.ExpressionError, match="unsafe|not safely|access to attribute|is not a field"):
        ex.evaluate(source, {"account": {"name": "Acme"}})


def test_bounds_constant_folding_no_longer_runs_at_compile_time() -> None:
    # Jinja2 folds constant sub-expressions while compiling; ours compiles without computing them.
    env = expression_environment()
    env.compile_expression("10 ** (10 ** 9)")
    env.from_string("{{ 'a'|center(1000000000) }}{{ 'x' * 10 ** 9 }}{{ [1] * 10 ** 9 ~ 'x' }}")


def _playbook(when: str) -> str:
    return f"playbook: bomb\ntrigger: manual\nsteps:\n  - wait: 1d\n  - if: \"{when}\"\n    then: [{{note: {{text: hi}}}}]\n"


def test_bounds_validate_reports_bombs_at_their_file_and_line(tmp_path: Path) -> None:
    root = make_folder(
        tmp_path,
        {
            "bomb.yaml": _playbook("10 ** (10 ** 9) > 1"),
            "mail.yaml": "playbook: mail\ntrigger: manual\nsteps:\n  - email: {template: big}\n",
            "loop.yaml": "playbook: loop\ntrigger: manual\nsteps:\n  - email: {template: loops}\n",
        },
        {
            "big.subject.j2": "Hi",
            "big.html.j2": "<p>ok</p>\n<p>{{ 'x' * 1000000000 }}</p>\n",
            "loops.subject.j2": "Hi",
            "loops.html.j2": "{% for i in range(100000) %}\n{% for j in range(100000) %}x{% endfor %}{% endfor %}\n{% include 'self.html.j2' %}",
            "self.html.j2": "a\n{% include 'loops.html.j2' %}",
        },
    )
    tracemalloc.start()
    try:
        found = problems_of(root)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert any(p.startswith("bomb.yaml:5: steps[1].if: `10 ** 1000000000` would have about") for p in found), found
    assert any(p.startswith("big.html.j2:2: : the repeated text or list would be 1,000,000,000 long") for p in found), found
    assert any(p.startswith("loops.html.j2:2: : these loops run 10,000,000,000 times") for p in found), found
    assert any(p.startswith("self.html.j2:2: : the templates include or extend each other without end") for p in found), found
    assert peak < 50_000_000, f"validate used {peak:,} bytes"


def _templates(tmp_path: Path, html: str, **more: str) -> Path:
    folder = tmp_path / "templates"
    folder.mkdir()
    (folder / "t.subject.j2").write_text("Hi")
    (folder / "t.html.j2").write_text(html)
    for name, text in more.items():
        (folder / name).write_text(text)
    return folder


@pytest.mark.parametrize(
    ("html", "more", "reason"),
    [
        ("<p>\n{{ account.name * account.arr * 10 }}</p>", {}, "t.html.j2:2"),
        ("{% for c in account.contacts %}{% for i in range(account.arr) %}x{% endfor %}{% endfor %}", {}, "more than 1,000,000 operations"),
        ("{% for c in account.contacts %}{% for i in range(account.arr) %}{{ c }}{% endfor %}{% endfor %}", {}, "the output is longer than"),
        ("<p>{% include 'loop.html.j2' %}</p>", {"loop.html.j2": "x\n{% include 't.html.j2' %}"}, "nest too deeply"),
        ("{% macro f(k) %}{{ f(k) }}{% endmacro %}{{ f(1) }}", {}, "calls nest deeper than 50"),
    ],
)
def test_bounds_render_email_fails_as_a_template_error(tmp_path: Path, html: str, more: dict[str, str], reason: str) -> None:
    folder = _templates(tmp_path, html, **more)
    context = {"account": {"name": "Acme", "arr": 100_000, "contacts": [{"name": str(i)} for i in range(100)]}}
    with pytest.raises(TemplateRenderError) as caught:
        render_email(folder, "t", context, locales=[], unsubscribe_url="https://x.invalid/u")
    assert reason in str(caught.value)


async def test_bounds_a_run_time_bomb_fails_its_step_and_the_run_goes_on(tmp_path: Path) -> None:
    shutil.copytree(PLAYBOOKS, tmp_path / "playbooks")
    folder = tmp_path / "playbooks"
    for other in folder.glob("*.yaml"):
        if other.name not in ("workspace.yaml", "health.yaml"):
            other.unlink()
    (folder / "bomb.yaml").write_text(
        "playbook: bomb\ntrigger: manual\nsteps:\n"
        "  - if: \"(account.name * 1000000000)|length > 1\"\n    then: [{note: {text: never}}]\n"
        "  - note: {text: after}\n"
    )
    assert load_project(folder).problems == []
    # The server-less interpreter, then the workflow itself on the time-skipping server.
    for sim in (
        simulate(folder / "bomb.yaml", folder / "samples" / "digital.yaml", days=2),
        await simulate_on_server(folder / "bomb.yaml", folder / "samples" / "digital.yaml", days=2),
    ):
        failed = [r for r in sim.records if r.action == "if"]
        assert failed and failed[0].detail.get("status") == "failed", sim.records
        assert "would be" in str(failed[0].detail), failed[0].detail
        assert [r.detail.get("text") for r in sim.records if r.action == "note"] == ["after"]


def test_bounds_validate_and_simulate_commands_refuse_a_bomb_with_its_line(tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from touchpoint.cli.main import app

    root = make_folder(tmp_path, {"bomb.yaml": _playbook("10 ** (10 ** 9) > 1")})
    (root / "acme.yaml").unlink(missing_ok=True)
    account = tmp_path / "acme.yaml"
    account.write_text("id: acme\nname: Acme\n")
    runner = CliRunner()
    for args in (["validate", str(root)], ["simulate", str(root / "bomb.yaml"), "--account", str(account)]):
        result = runner.invoke(app, args)
        assert result.exit_code == 1, (args, result.output)
        assert "bomb.yaml:5: steps[1].if: `10 ** 1000000000` would have about" in result.output, result.output
        assert "Traceback" not in result.output
