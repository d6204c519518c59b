"""The one Jinja2 environment of the contract: sandboxed, strict, and dict-friendly.

Expressions (`when:`, `goal`, ...) and templates (email files, task titles, ...) both run here.
- Sandboxed and immutable: ``''.__class__`` and ``cycler.__init__.__globals__`` raise
  ``SecurityError``, and templates cannot change the data they are given.
- Strict: an unknown name or a missing field of a known object is an error, never "".
- Free-form maps (`account.properties`, `account.metrics`, `event.data`, `run.vars`) are
  `FreeMap`s: a missing key there is ``None`` at run time.
- A dict's keys win over its methods: `account.properties.items` is the CRM field `items`
  (only when no such key exists do the read-only `items`, `keys`, `values`, `get` answer).
- ``None`` renders as an empty string, so a missing free-form value leaves a blank.
- Dates subtract to a number of days (`account.renewal_date - today` is an int).
- One filter beyond Jinja2's: `rollup(key, weight='arr')` groups events or accounts by a key and
  ranks the groups by the ARR of their distinct accounts (schedule playbooks' reviews).
- Bounded (`touchpoint.dsl.bounds`): arithmetic, filters, method calls, `~`, loops, includes and
  output count their work and refuse results past the limits. Jinja2 folds constant
  sub-expressions while compiling; here no operator or filter is folded (operators are
  intercepted, filters take the context), so compiling costs what the source's size does.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from datetime import date, datetime, timedelta
from types import CodeType
from typing import Any

from jinja2 import StrictUndefined, Template, Undefined, nodes
from jinja2.sandbox import ImmutableSandboxedEnvironment
from jinja2.utils import pass_context
from jinja2.visitor import NodeTransformer

from touchpoint.dsl import bounds


class Day(date):
    """A date whose difference with another date is a whole number of days."""

    def __sub__(self, other: Any) -> Any:  # type: ignore[override]
        if isinstance(other, datetime):
            other = other.date()
        if isinstance(other, date):
            return (date(self.year, self.month, self.day) - date(other.year, other.month, other.day)).days
        if isinstance(other, int):
            return Day.of(date(self.year, self.month, self.day) - timedelta(days=other))
        return date.__sub__(self, other)

    def __rsub__(self, other: Any) -> Any:
        if isinstance(other, date):
            return (date(other.year, other.month, other.day) - date(self.year, self.month, self.day)).days
        return NotImplemented

    def __add__(self, other: Any) -> Any:
        if isinstance(other, int) and not isinstance(other, bool):
            other = timedelta(days=other)
        result = date(self.year, self.month, self.day) + other
        return Day.of(result) if isinstance(result, date) else result

    __radd__ = __add__

    @classmethod
    def of(cls, value: date) -> Day:
        """A `Day` for a date (or the date part of a datetime)."""
        if isinstance(value, datetime):
            value = value.date()
        return cls(value.year, value.month, value.day)


# Read-only dict methods still reachable as attributes when the mapping has no such key.
_MAPPING_METHODS = frozenset({"items", "keys", "values", "get"})


class FreeMap(dict[str, Any]):
    """A free-form map: a missing key reads as ``None`` in templates and expressions.

    Nested plain dicts read through a ``FreeMap`` are free-form too.
    """

    def __missing__(self, key: str) -> None:
        return None


def _finalize(value: object) -> object:
    # A missing free-form value is None; print it as nothing, not as "None".
    return "" if value is None else value


def _wrap(value: object) -> object:
    if isinstance(value, dict) and not isinstance(value, FreeMap):
        return FreeMap(value)
    return value


def _dig(item: Any, path: str) -> Any:
    value = item
    for part in path.split("."):
        if isinstance(value, dict):
            value = value.get(part)
        else:
            value = getattr(value, part, None)
        if value is None:
            return None
    return value


def rollup(items: Iterable[Any], key: str, weight: str = "arr") -> list[dict[str, Any]]:
    """Group events (or accounts) by ``key`` and rank the groups by the accounts' ``weight``.

    Args:
        items: Events with an ``account`` (or accounts themselves).
        key: A dotted path in each item, e.g. ``data.feature`` or ``account.csm.email``.
        weight: An account field summed once per distinct account in a group (default ``arr``).

    Returns:
        ``[{key, count, accounts, arr, items}]``, heaviest first, then by key: ``count`` is the
        number of items, ``accounts`` the number of distinct accounts, ``arr`` the sum of their
        ``weight``.
    """
    groups: dict[Any, dict[str, Any]] = {}
    seen: dict[Any, set[Any]] = {}
    for item in items:
        value = _dig(item, key)
        if value is None:
            continue
        account = item.get("account") if isinstance(item, dict) and "account" in item else item
        group = groups.setdefault(value, {"key": value, "count": 0, "accounts": 0, "arr": 0, "items": []})
        group["count"] += 1
        group["items"].append(item)
        account_id = _dig(account, "id")
        if account_id not in seen.setdefault(value, set()):
            seen[value].add(account_id)
            group["accounts"] += 1
            amount = _dig(account, weight)
            if isinstance(amount, (int, float)) and not isinstance(amount, bool):
                group["arr"] += amount
    return sorted(groups.values(), key=lambda g: (-g["arr"], -g["accounts"], str(g["key"])))



# Filters the compiled code calls in place of what Jinja2 would run unchecked (see `_Bounded`).
_LOOP, _JOIN, _COST = "tp_loop", "tp_join", "tp_cost"
INTERNAL_FILTERS = (_LOOP, _JOIN, _COST)


@pass_context
def _loop_filter(context: Any, items: Any) -> Any:
    return bounds.bounded_iteration(items)


@pass_context
def _join_filter(context: Any, parts: Any) -> str:
    return bounds.bounded_join(bool(context.eval_ctx.autoescape), parts)


@pass_context
def _cost_filter(context: Any, value: Any) -> Any:
    bounds.spend(1 + bounds.cost(value))
    return value


def _internal(node: nodes.Node, name: str) -> nodes.Filter:
    return nodes.Filter(node, name, [], [], None, None, lineno=node.lineno)


def is_internal(node: nodes.Node, name: str | None = None) -> bool:
    """Whether ``node`` is one of the filters `TouchpointEnvironment` puts into compiled templates."""
    return isinstance(node, nodes.Filter) and node.name in ((name,) if name else INTERNAL_FILTERS)


class _Bounded(NodeTransformer):
    """Routes loops, ``~`` and ``in`` through counting filters (idempotent)."""

    def visit_For(self, node: nodes.For) -> nodes.Node:
        self.generic_visit(node)
        if not is_internal(node.iter, _LOOP):
            node.iter = _internal(node.iter, _LOOP)
        return node

    def visit_Concat(self, node: nodes.Concat) -> nodes.Node:
        self.generic_visit(node)
        return _internal(nodes.List(list(node.nodes), lineno=node.lineno), _JOIN)

    def visit_Call(self, node: nodes.Call) -> nodes.Node:
        # `loop(children)` of a recursive loop iterates like a loop.
        self.generic_visit(node)
        if isinstance(node.node, nodes.Name) and node.node.name == "loop" and node.args and not is_internal(node.args[0], _LOOP):
            node.args[0] = _internal(node.args[0], _LOOP)
        return node

    def visit_Operand(self, node: nodes.Operand) -> nodes.Node:
        self.generic_visit(node)
        if node.op in ("in", "notin") and not is_internal(node.expr, _COST):
            node.expr = _internal(node.expr, _COST)
        return node


class BoundedTemplate(Template):
    """A template whose render spends one budget, shared with the templates it includes."""

    def render(self, *args: Any, **kwargs: Any) -> str:
        """Render as Jinja2 does, within `touchpoint.dsl.bounds`' limits."""
        with bounds.budget():
            return super().render(*args, **kwargs)


class TouchpointEnvironment(ImmutableSandboxedEnvironment):
    """Sandboxed Jinja2 environment with Touchpoint's mapping rules and bounds (see module docs).

    Defaults to ``StrictUndefined``; any other ``Environment`` option can be passed through.
    """

    intercepted_binops = frozenset({"+", "-", "*", "/", "//", "%", "**"})
    concat = staticmethod(bounds.bounded_concat)  # type: ignore[assignment]
    template_class = BoundedTemplate

    def __init__(self, **options: Any) -> None:
        options.setdefault("undefined", StrictUndefined)
        options.setdefault("finalize", _finalize)
        super().__init__(**options)
        self.filters["rollup"] = rollup
        self.filters = {name: bounds.bounded_filter(name, func) for name, func in self.filters.items()}
        self.filters.update({_LOOP: _loop_filter, _JOIN: _join_filter, _COST: _cost_filter})
        self.globals["lipsum"] = bounds.bounded_lipsum

    def _generate(self, source: nodes.Template, name: str | None, filename: str | None, defer_init: bool = False) -> str:
        _Bounded().visit(source)
        source.set_environment(self)
        return super()._generate(source, name, filename, defer_init)

    def call_binop(self, context: Any, operator: str, left: Any, right: Any) -> Any:
        """Arithmetic, refused before it starts when its result would pass the bounds."""
        return bounds.binop(operator, left, right, self.binop_table)

    def call(__self, __context: Any, __obj: Any, *args: Any, **kwargs: Any) -> Any:
        """Call from a template: one operation and one level of nesting; a too-big result is refused."""
        bounds.check_str_method(__obj, args, kwargs)
        with bounds.nested():
            result = super().call(__context, __obj, *args, **kwargs)
        return bounds.check_size(result)

    def wrap_str_format(self, value: Any) -> Any:
        """``str.format`` as Jinja2's sandbox runs it, refusing widths that would make a text too big."""
        wrapped = super().wrap_str_format(value)
        if wrapped is None:
            return None
        template = str(value.__self__)

        def checked(*args: Any, **kwargs: Any) -> Any:
            bounds.check_format_spec(template)
            return bounds.check_size(wrapped(*args, **kwargs))

        return checked

    def get_template(self, name: Any, parent: str | None = None, globals: Any = None) -> Any:
        """Load a template; during a render (an include, an import) that is one operation."""
        bounds.spend()
        return super().get_template(name, parent, globals)

    def select_template(self, names: Any, parent: str | None = None, globals: Any = None) -> Any:
        """Load the first existing template; during a render that is one operation."""
        bounds.spend()
        return super().select_template(names, parent, globals)

    def getattr(self, obj: Any, attribute: str) -> Any:
        """Look up ``obj.attribute``: a mapping's key first, then the sandboxed attribute."""
        if isinstance(obj, Mapping):
            if attribute in obj:
                return self._value_of(obj, attribute)
            if attribute in _MAPPING_METHODS:
                return super().getattr(obj, attribute)
            return self._missing_key(obj, attribute)
        return super().getattr(obj, attribute)

    def getitem(self, obj: Any, argument: Any) -> Any:
        """Look up ``obj[argument]``; on a mapping, only its keys (never its methods)."""
        if isinstance(obj, Mapping):
            try:
                if argument in obj:
                    return self._value_of(obj, argument)
            except TypeError:  # an unhashable subscript, e.g. a list
                pass
            return self._missing_key(obj, argument)
        return super().getitem(obj, argument)

    @staticmethod
    def _value_of(obj: Mapping[Any, Any], key: Any) -> Any:
        value = obj[key]
        return _wrap(value) if isinstance(obj, FreeMap) else value

    def _missing_key(self, obj: Mapping[Any, Any], key: Any) -> Any:
        if isinstance(obj, FreeMap):
            return None
        fields = ", ".join(str(k) for k in obj) or "none"
        hint = f"{key!r} is not a field here; fields: {fields}"
        undefined: Undefined = self.undefined(hint=hint, obj=obj, name=str(key))
        return undefined


_EXPRESSION_ENV: TouchpointEnvironment | None = None

#: Where a command keeps compiled expressions between its runs (`touchpoint.cache.using` sets
#: it): ``code_store(text, compile)`` answers the code for ``text``. None in workers and the API.
code_store: Callable[[str, Callable[[], CodeType]], CodeType] | None = None


class _ExpressionEnvironment(TouchpointEnvironment):
    """The expression environment: its compiled code may come from the CLI's cache."""

    def compile(self, source: Any, name: str | None = None, filename: str | None = None, raw: bool = False, defer_init: bool = False) -> Any:
        """Compile as Jinja2 does; while a command's cache is in use, once per text across runs."""
        if raw:
            return super().compile(source, name, filename, raw=True, defer_init=defer_init)
        store = code_store
        if store is None or name is not None or filename is not None or defer_init:
            return super().compile(source, name, filename, defer_init=defer_init)
        # An expression arrives as a tree (its repr holds every field), an inline text as text.
        text = source if isinstance(source, str) else f"tree:{source!r}"
        return store(text, lambda: super(_ExpressionEnvironment, self).compile(source))


def expression_environment() -> TouchpointEnvironment:
    """The shared environment for expressions and inline text templates (no file loader)."""
    global _EXPRESSION_ENV
    if _EXPRESSION_ENV is None:
        _EXPRESSION_ENV = _ExpressionEnvironment(autoescape=False)
    return _EXPRESSION_ENV
