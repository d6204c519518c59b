"""Find, before anything runs, the resource bombs an expression or template spells out.

What can be computed from the source alone is computed here with the bounds of
`touchpoint.dsl.bounds`: constant arithmetic (``10 ** (10 ** 9)``, ``'x' * 1000000000``), filters and
``range`` over constants (``'a'|center(10**9)``, ``range(10**9)``), number literals too big, and
loops whose constant sizes multiply past the operation limit. Each finding carries the source line.
What depends on data (an account's contacts, a macro calling itself) is bounded at run time.
"""

from __future__ import annotations

import operator
from collections.abc import Callable
from typing import Any

from jinja2 import nodes
from jinja2.sandbox import MAX_RANGE

from touchpoint.dsl import bounds
from touchpoint.dsl.sandbox import expression_environment, is_internal

_UNKNOWN = object()
_OPERATORS: dict[type[nodes.BinExpr], str] = {
    nodes.Add: "+",
    nodes.Sub: "-",
    nodes.Mul: "*",
    nodes.Div: "/",
    nodes.FloorDiv: "//",
    nodes.Mod: "%",
    nodes.Pow: "**",
}
_TABLE: dict[str, Callable[[Any, Any], Any]] = {
    "+": operator.add,
    "-": operator.sub,
    "*": operator.mul,
    "/": operator.truediv,
    "//": operator.floordiv,
    "%": operator.mod,
    "**": operator.pow,
}


class _Finder:
    def __init__(self) -> None:
        self.found: list[tuple[int, str]] = []
        self._context: Any = None

    def report(self, node: nodes.Node, message: str) -> None:
        self.found.append((node.lineno or 1, message))

    # ------------------------------------------------------------------ constant values

    def value(self, node: nodes.Node) -> Any:
        """The value of ``node`` when the source alone decides it, else `_UNKNOWN`; children first."""
        try:
            return self._value(node)
        except bounds.LimitExceeded as exc:
            self.report(node, str(exc))
        except Exception:
            pass
        return _UNKNOWN

    def _value(self, node: nodes.Node) -> Any:
        if is_internal(node):
            assert isinstance(node, nodes.Filter) and node.node is not None
            inner = self.value(node.node)
            if node.name == "tp_join" and isinstance(inner, list):
                return bounds.bounded_join(False, inner)
            return inner
        if isinstance(node, nodes.Const):
            return bounds.check_size(node.value, "this number")
        if isinstance(node, (nodes.List, nodes.Tuple)):
            items = [self.value(item) for item in node.items]
            if any(item is _UNKNOWN for item in items):
                return _UNKNOWN
            return bounds.check_size(items if isinstance(node, nodes.List) else tuple(items), "this list")
        if isinstance(node, nodes.BinExpr):
            left, right = self.value(node.left), self.value(node.right)
            if left is _UNKNOWN or right is _UNKNOWN:
                return _UNKNOWN
            return bounds.binop(_OPERATORS[type(node)], left, right, _TABLE)
        if isinstance(node, (nodes.Neg, nodes.Pos)):
            inner = self.value(node.node)
            return _UNKNOWN if inner is _UNKNOWN else (-inner if isinstance(node, nodes.Neg) else +inner)
        if isinstance(node, nodes.Concat):
            parts = [self.value(part) for part in node.nodes]
            return _UNKNOWN if any(p is _UNKNOWN for p in parts) else bounds.bounded_join(False, parts)
        if isinstance(node, nodes.Call):
            return self._call(node)
        if isinstance(node, nodes.Filter):
            return self._filter(node)
        self.visit_children(node)
        return _UNKNOWN

    def _arguments(self, node: nodes.Call | nodes.Filter) -> tuple[list[Any], dict[str, Any]] | None:
        args = [self.value(arg) for arg in node.args]
        kwargs = {str(kw.key): self.value(kw.value) for kw in node.kwargs}
        for extra in (node.dyn_args, node.dyn_kwargs):
            if extra is not None:
                self.value(extra)
                return None
        if any(v is _UNKNOWN for v in [*args, *kwargs.values()]):
            return None
        return args, kwargs

    def _call(self, node: nodes.Call) -> Any:
        callee = node.node
        if not isinstance(callee, nodes.Name):
            self.value(callee)
        arguments = self._arguments(node)
        if arguments is None or not (isinstance(callee, nodes.Name) and callee.name == "range"):
            return _UNKNOWN
        args, kwargs = arguments
        span = range(*args, **kwargs)
        if len(span) > MAX_RANGE:
            raise bounds.LimitExceeded(f"`range` of {len(span):,} numbers is above the limit of {MAX_RANGE:,}")
        return span

    def _filter(self, node: nodes.Filter) -> Any:
        subject = _UNKNOWN if node.node is None else self.value(node.node)
        arguments = self._arguments(node)
        func = expression_environment().filters.get(node.name)
        if subject is _UNKNOWN or arguments is None or func is None or node.name in ("random",):
            return _UNKNOWN
        args, kwargs = arguments
        with bounds.budget():
            result = func(self.context(), subject, *args, **kwargs)
            if isinstance(result, (str, list, tuple, dict)):
                return result
            return _UNKNOWN  # a generator, a date, ...: leave it to run time

    def context(self) -> Any:
        if self._context is None:
            self._context = expression_environment().from_string("").new_context({})
        return self._context

    def visit_children(self, node: nodes.Node) -> None:
        for child in node.iter_child_nodes():
            self.value(child)

    # ------------------------------------------------------------------ loops

    def loops(self, node: nodes.Node, runs: int) -> None:
        """Report the first loop whose constant size, times the loops around it, passes the limit."""
        for child in node.iter_child_nodes():
            if isinstance(child, nodes.For):
                iterable = child.iter.node if isinstance(child.iter, nodes.Filter) and is_internal(child.iter, "tp_loop") else child.iter
                assert iterable is not None
                items = self.quiet_value(iterable)
                count = len(items) if isinstance(items, (list, tuple, str, range, dict)) else 1
                total = runs * max(count, 1)
                if total > bounds.MAX_OPERATIONS:
                    self.report(
                        child,
                        f"these loops run {total:,} times, above the limit of {bounds.MAX_OPERATIONS:,} operations;"
                        " loop over fewer items or nest fewer loops",
                    )
                    continue
                self.loops(child, total)
            else:
                self.loops(child, runs)

    def quiet_value(self, node: nodes.Node) -> Any:
        found = len(self.found)
        result = self.value(node)
        del self.found[found:]  # the value pass reports these
        return result


def find_bombs(ast: nodes.Node) -> list[tuple[int, str]]:
    """``(line, message)`` for each bound the source alone shows it passes, in source order."""
    finder = _Finder()
    try:
        with bounds.budget():
            finder.value(ast)
            finder.loops(ast, 1)
    except RecursionError:
        return [(1, "it nests too deeply to check; split it into smaller expressions")]
    except bounds.LimitExceeded as exc:
        finder.found.append((1, str(exc)))
    unique = sorted(set(finder.found))
    return unique
