"""Property tests: random YAML and random expressions never crash or hang the loader and validator.

Whatever the input, `load_yaml` and `load_project` answer with data and problems, `check_expression`
and `check_text` with problems, and `evaluate` with a value or an `ExpressionError`: never another
exception. Examples are bounded and derandomized (a fixed seed); each has a deadline. To explore
further by hand: ``TOUCHPOINT_PROPERTY_EXAMPLES=3000 TOUCHPOINT_PROPERTY_RANDOM=1 pytest tests/test_properties.py``.
"""

from __future__ import annotations

import os
import string
from pathlib import Path

import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from touchpoint.dsl import expressions as ex
from touchpoint.dsl.schema import STEP_KINDS
from touchpoint.dsl.validate import load_project
from touchpoint.dsl.yamlpos import load_yaml

from .test_validate import WORKSPACE

BOUNDED = settings(
    max_examples=int(os.environ.get("TOUCHPOINT_PROPERTY_EXAMPLES", "150")),
    deadline=2000,
    derandomize=os.environ.get("TOUCHPOINT_PROPERTY_RANDOM") is None,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)

KEYS = [
    "playbook", "trigger", "steps", "event", "when", "manual", "date", "schedule", "offset", "id", "on_error",
    "template", "to", "title", "text", "then", "else", "timeout", "on_timeout", "until", "max", "every",
    "audience", "exit_when", "goal", "reenroll", "vars", "fields", "url", "json", *STEP_KINDS, "wiat", "emial",
]
SCALARS = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(10**30), max_value=10**30),
    st.floats(allow_nan=True, allow_infinity=True),
    st.sampled_from(["3d", "1w", "P3D", "account.created", "welcome", "true", "csm", "{{ account.name }}", "10 ** 10 ** 9", "-1d", "NO", "yes"]),
    st.text(max_size=30),
)
YAML_VALUES = st.recursive(
    SCALARS,
    lambda inner: st.one_of(
        st.lists(inner, max_size=4),
        st.dictionaries(st.one_of(st.sampled_from(KEYS), st.text(max_size=8)), inner, max_size=5),
    ),
    max_leaves=25,
)
PLAYBOOK_LIKE = st.fixed_dictionaries(
    {"playbook": st.one_of(st.just("p"), st.text(max_size=10)), "trigger": YAML_VALUES, "steps": st.lists(YAML_VALUES, max_size=5)},
    optional={"exit_when": YAML_VALUES, "goal": YAML_VALUES, "audience": YAML_VALUES},
)
RAW_YAML = st.one_of(
    st.text(max_size=200),
    st.text(alphabet=": -[]{}\n#&*!|>'\"%@`,?", max_size=120),
    st.sampled_from(["a: &x [*x]", "- !!python/object:os.system {}", "a: b\na: c", "{", "\t- x", "? [a]\n: b"]),
)


def _folder(tmp_path: Path) -> Path:
    root = tmp_path / "pb"
    (root / "templates").mkdir(parents=True, exist_ok=True)
    (root / "workspace.yaml").write_text(WORKSPACE)
    (root / "templates" / "welcome.subject.j2").write_text("Hi")
    (root / "templates" / "welcome.html.j2").write_text("<p>{{ account.name }}</p>")
    return root


@BOUNDED
@given(text=RAW_YAML)
def test_properties_load_yaml_answers_every_text(text: str) -> None:
    data, positions, problems = load_yaml(text)
    assert all(p.line >= 1 for p in problems)
    assert positions.line_of(("steps", 3, "anything")) >= 1


@BOUNDED
@given(document=st.one_of(PLAYBOOK_LIKE, YAML_VALUES))
def test_properties_validator_reports_random_playbooks_as_problems(tmp_path_factory: object, document: object) -> None:
    import tempfile

    with tempfile.TemporaryDirectory() as scratch:
        root = _folder(Path(scratch))
        (root / "random.yaml").write_text(yaml.safe_dump(document, allow_unicode=True))
        project = load_project(root)
        assert all(p.line >= 1 and p.file.endswith("random.yaml") for p in project.problems)
        assert project.problems or "p" in project.playbooks or project.playbooks


@BOUNDED
@given(text=RAW_YAML)
def test_properties_validator_reports_random_text_as_problems(text: str) -> None:
    import tempfile

    with tempfile.TemporaryDirectory() as scratch:
        root = _folder(Path(scratch))
        (root / "random.yaml").write_text(text)
        project = load_project(root)
        assert all(p.line >= 1 for p in project.problems)


ATOMS = st.one_of(
    st.integers(min_value=-(10**12), max_value=10**12).map(str),
    st.sampled_from(["0", "1", "2", "10", "100000", "1000000000", "9" * 40, "1.5", "1e308", "-0.0"]),
    st.text(alphabet=string.ascii_letters + " %{}:>0123456789", max_size=12).map(repr),
    st.sampled_from(
        [
            "account.name", "account.arr", "account.seats.licensed", "account.properties.x", "account.contacts",
            "run.vars.y", "event.data", "now", "today", "none", "true", "[1, 2, 3]", "{'a': 1}", "range(5)",
            "cycler", "namespace", "lipsum", "''.__class__", "account.__dict__", "acount",
        ]
    ),
)
BINARY = ["+", "-", "*", "/", "//", "%", "**", "~", "in", "not in", "==", "<", "and", "or"]
FILTERS = [
    "center(1000000000)", "indent(1000000000)", "join(',')", "list", "sum", "length", "upper", "format(1)",
    "replace('', 'xx')", "batch(1000000000, 'x')", "wordwrap(1, wrapstring='xxxxxxxx')", "default(1)", "int",
    "first", "unique", "sort", "tojson", "rollup('id')", "truncate(3)", "map('upper')", "nosuchfilter",
]


def _combine(inner: st.SearchStrategy[str]) -> st.SearchStrategy[str]:
    return st.one_of(
        st.tuples(inner, st.sampled_from(BINARY), inner).map(lambda t: f"{t[0]} {t[1]} {t[2]}"),
        st.tuples(inner, st.sampled_from(FILTERS)).map(lambda t: f"{t[0]}|{t[1]}"),
        inner.map(lambda e: f"({e})"),
        inner.map(lambda e: f"-{e}"),
        inner.map(lambda e: f"not {e}"),
        st.tuples(inner, inner, inner).map(lambda t: f"{t[0]} if {t[1]} else {t[2]}"),
        st.tuples(inner, st.sampled_from(["center", "ljust", "zfill", "replace", "format", "join", "split"]), inner).map(
            lambda t: f"({t[0]}).{t[1]}({t[2]})"
        ),
        inner.map(lambda e: f"range({e})"),
        inner.map(lambda e: f"[{e}, {e}]"),
    )


EXPRESSIONS = st.one_of(st.recursive(ATOMS, _combine, max_leaves=12), st.text(max_size=40))
CONTEXT = {
    "account": {
        "name": "Acme", "arr": 120000, "seats": {"licensed": 100, "active": 50}, "properties": {},
        "contacts": [{"email": "a@x.com", "name": "A"}], "id": "acme",
    },
    "run": {"vars": {}},
    "event": {"data": {}},
    "now": "2026-01-01T00:00:00Z",
    "today": "2026-01-01",
}


@BOUNDED
@given(source=EXPRESSIONS)
def test_properties_expressions_check_and_evaluate_without_tracebacks(source: str) -> None:
    problems = ex.check_expression(source, ex.scope())
    assert all(p.line >= 1 and p.message for p in problems)
    try:
        ex.evaluate(source, CONTEXT)
    except ex.ExpressionError as exc:
        assert str(exc).startswith("expression `")


@BOUNDED
@given(source=EXPRESSIONS, wrapper=st.sampled_from(["{{ %s }}", "{%% for x in %s %%}{{ x }}{%% endfor %%}", "{%% if %s %%}y{%% endif %%}", "{%% set v = %s %%}{{ v ~ v }}"]))
def test_properties_inline_templates_check_and_render_without_tracebacks(source: str, wrapper: str) -> None:
    text = wrapper % source
    problems = ex.check_text(text, ex.scope())
    assert all(p.line >= 1 and p.message for p in problems)
    try:
        ex.render_text(text, CONTEXT)
    except ex.ExpressionError as exc:
        assert str(exc).startswith("template `")
