"""Expressions and inline templates: compile once, check names statically, evaluate safely.

Static checks run at validation time against the names of contract section 2, so a typo such as
``acount.segment`` or ``account.seat.licensed`` fails `touchpoint validate`, never a customer's
email. Free-form maps accept any key.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from functools import lru_cache
from typing import Any, Union

from jinja2 import Template, TemplateSyntaxError, nodes
from jinja2.exceptions import TemplateError
from jinja2.parser import Parser

from touchpoint.dsl import bounds
from touchpoint.dsl.errors import hint
from touchpoint.dsl.sandbox import expression_environment

# ---------------------------------------------------------------------------- the names of section 2

FREE = "*"
"""Marks a free-form map: any key below is allowed."""
LEAF: None = None
"""A scalar value: its own methods and attributes are not checked."""

Shape = Union[dict[str, "Shape"], str, None, list["Shape"]]

PERSON: Shape = {"name": LEAF, "email": LEAF}
CONTACT: Shape = {k: LEAF for k in ("email", "name", "role", "locale", "timezone", "country")}
ACCOUNT: Shape = {
    **{k: LEAF for k in ("id", "name", "segment", "region", "country", "timezone", "locale", "plan", "arr")},
    "created_at": LEAF,
    "renewal_date": LEAF,
    "seats": {"licensed": LEAF, "active": LEAF},
    "csm": PERSON,
    "owner": PERSON,
    "health": {k: LEAF for k in ("score", "tier", "previous_score", "previous_tier", "updated_at")},
    "metrics": FREE,
    "properties": FREE,
    "contacts": [CONTACT],
}
EVENT: Shape = {"id": LEAF, "type": LEAF, "at": LEAF, "data": FREE}
RUN: Shape = {
    **{k: LEAF for k in ("id", "playbook", "version", "started_at", "day", "round", "step")},
    "vars": FREE,
    "scorecard": {"score": LEAF, "target": LEAF, "by_day": LEAF, "met": LEAF, "milestones": FREE},
}
ACCOUNT_SCOPE: dict[str, Shape] = {
    "account": ACCOUNT,
    "contacts": [CONTACT],
    "event": EVENT,
    "run": RUN,
    "now": LEAF,
    "today": LEAF,
}
#: Jinja2's own globals, allowed everywhere (their dunder attributes are refused like any other).
JINJA_GLOBALS = ("range", "dict", "lipsum", "cycler", "joiner", "namespace", "true", "false", "none")
#: Names Jinja2 defines inside templates: `loop` in for loops, `super` and `self` in blocks, `caller`.
TEMPLATE_LOCALS = ("loop", "super", "self", "caller", "varargs", "kwargs")


def scope(
    *,
    run: bool = True,
    event: bool = True,
    schedule: bool = False,
    email: bool = False,
    account: bool = True,
) -> dict[str, Shape]:
    """The names visible at one place of a playbook."""
    names: dict[str, Shape] = {"now": LEAF, "today": LEAF}
    if account and not schedule:
        names["account"] = ACCOUNT
        names["contacts"] = [CONTACT]
    if schedule:
        names["accounts"] = [ACCOUNT]
        names["changes"] = FREE
    if event:
        names["event"] = EVENT
    if run:
        names["run"] = RUN
    if email:
        names["contact"] = CONTACT
        names["unsubscribe_url"] = LEAF
    return names


# ---------------------------------------------------------------------------- problems


@dataclass(frozen=True)
class NameProblem:
    """A problem with a name used by an expression or template (``line`` within the source)."""

    message: str
    line: int = 1


class ExpressionError(ValueError):
    """An expression or template that does not compile or does not run (or passes a bound)."""


# What a failing expression or template raises: Jinja2's errors, the bounds' `LimitExceeded`, a
# filter given a value of the wrong type (TypeError, AttributeError, ...), RecursionError for a
# source nested too deeply or includes that recurse. Any of them is the expression's failure.
_RUN_ERRORS = (Exception,)


# ---------------------------------------------------------------------------- compile / evaluate


def parse_expression(source: str) -> nodes.Expr:
    """Parse an expression (no ``{{ }}``) into Jinja2's AST.

    Raises:
        TemplateSyntaxError: with the position of the problem.
    """
    env = expression_environment()
    parser = Parser(env, source, state="variable")
    expr = parser.parse_expression()
    if not parser.stream.eos:
        token = parser.stream.current
        raise TemplateSyntaxError(f"unexpected {token.value!r} after the expression", token.lineno, None, None)
    return expr


@lru_cache(maxsize=4096)
def _compiled_expression(source: str) -> Any:
    compiled = expression_environment().compile_expression(source, undefined_to_none=False)
    # The template's globals are a ChainMap over the environment's, which Jinja2 copies twice
    # per call; the environment's globals never change once built, so one flat copy is the same.
    compiled._template.globals = dict(compiled._template.globals)
    return compiled


@lru_cache(maxsize=4096)
def _compiled_text(source: str) -> Template:
    return expression_environment().from_string(source)


def evaluate(source: str, context: Mapping[str, Any]) -> Any:
    """Evaluate an expression in the sandbox.

    Raises:
        ExpressionError: naming the expression and what went wrong.
    """
    try:
        with bounds.budget():
            result = _compiled_expression(source)(**context)
    except _RUN_ERRORS as exc:
        raise ExpressionError(f"expression `{source}` failed: {_reason(exc)}") from None
    # Jinja returns StrictUndefined unevaluated when an expression is a bare unknown name.
    if type(result).__name__ == "StrictUndefined":
        raise ExpressionError(f"expression `{source}` failed: {result._undefined_message}")
    return result


@lru_cache(maxsize=4096)
def root_names(source: str) -> frozenset[str] | None:
    """The top-level names an expression reads (None when it does not parse: it needs them all).

    An expression binds no names of its own, so every `Name` in it is looked up in the context:
    a context holding just these names evaluates it exactly as the whole context would.
    """
    try:
        parsed = parse_expression(source)
    except (TemplateError, ValueError, OverflowError, RecursionError):
        return None
    return frozenset(node.name for node in parsed.find_all(nodes.Name))


def is_true(source: str | None, context: Mapping[str, Any]) -> bool:
    """An optional condition: None is true."""
    return True if source is None else bool(evaluate(source, context))


def render_text(source: str, context: Mapping[str, Any]) -> str:
    """Render an inline text template (a task title, a note, a webhook value)."""
    if "{" not in source:
        return source
    try:
        return _compiled_text(source).render(**context)
    except _RUN_ERRORS as exc:
        raise ExpressionError(f"template `{source}` failed: {_reason(exc)}") from None


def _reason(exc: BaseException) -> str:
    if isinstance(exc, RecursionError):
        return "it nests too deeply (a template that includes or extends itself?)"
    return str(exc)


# ---------------------------------------------------------------------------- static checks


def check_expression(source: str, names: Mapping[str, Shape]) -> list[NameProblem]:
    """Compile an expression and check every name it uses against ``names``."""
    parsed = _parsed_expression(source)
    if isinstance(parsed, NameProblem):
        return [parsed]
    return check_ast(parsed, names, kind="expression", source=source)


def check_text(source: str, names: Mapping[str, Shape]) -> list[NameProblem]:
    """Compile an inline template and check every name it uses."""
    parsed = _parsed_text(source)
    if isinstance(parsed, NameProblem):
        return [parsed]
    return check_ast(parsed, names, kind="template", source=source)


# Parsing and compiling depend on the source alone, so a source used by many playbooks or loads
# is parsed once; `check_ast` only reads the tree. The names are checked on every call.


@lru_cache(maxsize=4096)
def _parsed_expression(source: str) -> nodes.Template | NameProblem:
    try:
        ast = parse_expression(source)
        _compiled_expression(source)
    except TemplateSyntaxError as exc:
        return NameProblem(f"invalid expression `{source}`: {exc.message}", exc.lineno or 1)
    except TemplateError as exc:  # e.g. an unknown filter
        return NameProblem(f"invalid expression `{source}`: {exc}")
    except (ValueError, OverflowError, RecursionError) as exc:  # a number literal past Python's limit, deep nesting
        return NameProblem(f"invalid expression `{source}`: {_reason(exc)}")
    return nodes.Template([nodes.Output([ast])])


@lru_cache(maxsize=4096)
def _parsed_text(source: str) -> nodes.Template | NameProblem:
    try:
        ast = expression_environment().parse(source)
        _compiled_text(source)
    except TemplateSyntaxError as exc:
        return NameProblem(f"invalid template `{source}`: {exc.message}", exc.lineno or 1)
    except TemplateError as exc:
        return NameProblem(f"invalid template `{source}`: {exc}")
    except (ValueError, OverflowError, RecursionError) as exc:
        return NameProblem(f"invalid template `{source}`: {_reason(exc)}")
    return ast


def check_ast(ast: nodes.Template, names: Mapping[str, Shape], *, kind: str, source: str | None = None) -> list[NameProblem]:
    """Check names, fields, unsafe attributes and bounds in a parsed template or expression."""
    from touchpoint.dsl.static_bounds import find_bombs

    problems: list[NameProblem] = []
    local = _locally_defined(ast) | (set(TEMPLATE_LOCALS) if kind == "template" else set())
    available = sorted(set(names) | set(JINJA_GLOBALS) | local)
    quoted = f" in `{source}`" if source and kind == "expression" else ""

    unsafe = [
        (attr, node.lineno)
        for node in ast.find_all((nodes.Getattr, nodes.Getitem))
        if (attr := _accessed(node)) is not None
        and attr.startswith("_")
    ]
    if unsafe:
        # Pre-order search finds the outermost access first; the innermost is the one written first.
        attr, line = unsafe[-1]
        problems.append(NameProblem(f"`{attr}` is not allowed{quoted}: names starting with `_` are refused by the sandbox", line))

    reported: set[str] = set()
    for node in ast.find_all(nodes.Name):
        if node.ctx != "load" or node.name in local or node.name in JINJA_GLOBALS:
            continue
        if node.name not in names and node.name not in reported:
            reported.add(node.name)
            problems.append(NameProblem(f"unknown name `{node.name}`{quoted}{hint(node.name, available)}; available: {', '.join(n for n in available if n not in JINJA_GLOBALS)}", node.lineno))

    for chain, line in _chains(ast):
        root = chain[0]
        if not isinstance(root, str) or root in local or root not in names:
            continue
        problem = _check_chain(chain, names[root])
        if problem:
            problems.append(NameProblem(problem + quoted, line))
    for line, message in find_bombs(ast):
        problems.append(NameProblem(f"{message}{quoted}", line))
    return problems


def _accessed(node: nodes.Node) -> str | None:
    if isinstance(node, nodes.Getattr):
        return str(node.attr)
    if isinstance(node, nodes.Getitem):
        return _const_str(node.arg)
    return None


def _const_str(node: nodes.Node) -> str | None:
    return node.value if isinstance(node, nodes.Const) and isinstance(node.value, str) else None


def _locally_defined(ast: nodes.Template) -> set[str]:
    found: set[str] = set()
    for node in ast.find_all(nodes.Name):
        if node.ctx in ("store", "param"):
            found.add(node.name)
    for macro in ast.find_all(nodes.Macro):
        found.add(macro.name)
    return found


def _chains(ast: nodes.Node) -> Iterable[tuple[list[str | int], int]]:
    """Attribute chains rooted at a name, outermost only: `account.seats.licensed`."""
    inner: set[int] = set()
    for node in ast.find_all((nodes.Getattr, nodes.Getitem)):
        if id(node) in inner:
            continue
        chain: list[str | int] = []
        cursor: nodes.Node = node
        while isinstance(cursor, (nodes.Getattr, nodes.Getitem)):
            inner.add(id(cursor))
            if isinstance(cursor, nodes.Getattr):
                chain.append(cursor.attr)
            elif isinstance(cursor.arg, nodes.Const) and isinstance(cursor.arg.value, (str, int)):
                chain.append(cursor.arg.value)
            else:
                chain.append("*")
            cursor = cursor.node
        if isinstance(cursor, nodes.Name):
            chain.append(cursor.name)
            chain.reverse()
            yield chain, node.lineno


def _check_chain(chain: list[str | int], shape: Shape) -> str | None:
    path = str(chain[0])
    for part in chain[1:]:
        if shape is LEAF or shape == FREE:
            return None
        if isinstance(shape, list):
            if isinstance(part, int) or part == "*":
                shape = shape[0]
                path += f"[{part}]"
                continue
            return None  # a list method or filter-like use; not a field
        assert isinstance(shape, dict)
        if part == "*":
            return None
        if not isinstance(part, str) or part not in shape:
            fields = sorted(shape)
            return f"unknown field `{part}` of `{path}`{hint(str(part), fields)}; its fields: {', '.join(fields)}"
        shape = shape[part]
        path += f".{part}"
    return None


