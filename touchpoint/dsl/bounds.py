"""What one expression or template may cost: sizes, operations, nesting depth and render time.

Every value an expression or template makes is at most `MAX_SIZE` units (a character of a text,
an item of a list, a few digits of a number; see `size`), every whole number at most
`MAX_INT_BITS` bits, every rendered output at most `MAX_SIZE` characters. One evaluation or
render may spend at most `MAX_OPERATIONS` operations: a loop iteration, a call, an include, or
an item (or 64 characters) of the input a filter, method or operator walks over. Calls (macros, `caller()`,
recursive loops) nest at most `MAX_DEPTH` deep.

Bounds are checked before the work where the work can explode (``'x' * 10**9``, ``10 ** 10**9``,
``'a'|center(10**9)``, ``'%999999999d' % 1``) and after it elsewhere. Operations are counted, never
timed, so a workflow replays the same way; only a `budget` opened with ``seconds`` (email
rendering, in activities) also stops at a wall-clock deadline.

::

    SecurityError (jinja2)
    └── LimitExceeded       a bound was reached; the message names it and the limit
"""

from __future__ import annotations

import re
import string
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from contextlib import contextmanager
from contextvars import ContextVar
from functools import wraps
from typing import Any

from jinja2.exceptions import SecurityError
from jinja2.runtime import markup_join, str_join

MAX_SIZE = 1_000_000
"""Characters in a text or rendered output; items (nested items counted) in a list or mapping."""
MAX_INT_BITS = 4096
"""Bits in a whole number (about 1,230 decimal digits)."""
MAX_OPERATIONS = 1_000_000
"""Loop iterations, calls, includes, items walked by filters, methods and operators (64 characters
of a text count as one item)."""
MAX_DEPTH = 50
"""Nested calls: a macro calling a macro, `caller()`, `loop(...)` of a recursive loop."""
CALL_COST = 10
"""Operations one call counts: a macro call costs about as much as ten loop iterations."""
RENDER_SECONDS = 10.0
"""Wall-clock bound of one email render (activities and `validate`; never in workflow code)."""
_CLOCK_EVERY = 256


class LimitExceeded(SecurityError):
    """An expression or template reached one of the bounds of this module."""


class Budget:
    """What one evaluation or render has spent so far."""

    __slots__ = ("deadline", "depth", "operations")

    def __init__(self, *, seconds: float | None = None) -> None:
        self.operations = 0
        self.depth = 0
        self.deadline = None if seconds is None else time.monotonic() + seconds

    def spend(self, units: int = 1) -> None:
        """Count ``units`` operations.

        Raises:
            LimitExceeded: past `MAX_OPERATIONS`, or past the deadline of a timed budget.
        """
        before = self.operations
        self.operations += units
        if self.operations > MAX_OPERATIONS:
            raise LimitExceeded(
                f"it runs more than {MAX_OPERATIONS:,} operations (loop iterations, calls and items"
                " walked); loop over fewer items or nest fewer loops"
            )
        if self.deadline is not None and (self.operations // _CLOCK_EVERY != before // _CLOCK_EVERY or units > 1):
            if time.monotonic() > self.deadline:
                raise LimitExceeded(f"it took longer than {RENDER_SECONDS:g} s to render; loop over fewer items")


_CURRENT: ContextVar[Budget | None] = ContextVar("touchpoint_budget", default=None)


@contextmanager
def budget(*, seconds: float | None = None) -> Iterator[Budget]:
    """The budget of the evaluation or render in progress, opened here when none is.

    Nested uses (an include, an expression evaluated while a template renders) share the
    outermost budget.
    """
    active = _CURRENT.get()
    if active is not None:
        yield active
        return
    fresh = Budget(seconds=seconds)
    token = _CURRENT.set(fresh)
    try:
        yield fresh
    finally:
        _CURRENT.reset(token)


def spend(units: int = 1) -> None:
    """Count operations against the active budget (nothing outside an evaluation or render)."""
    active = _CURRENT.get()
    if active is not None:
        active.spend(units)


@contextmanager
def nested() -> Iterator[None]:
    """One level of call nesting (and `CALL_COST` operations).

    Raises:
        LimitExceeded: deeper than `MAX_DEPTH`.
    """
    active = _CURRENT.get()
    if active is None:
        yield
        return
    active.spend(CALL_COST)
    active.depth += 1
    try:
        if active.depth > MAX_DEPTH:
            raise LimitExceeded(
                f"calls nest deeper than {MAX_DEPTH} levels (a macro or recursive loop that calls itself without end?)"
            )
        yield
    finally:
        active.depth -= 1


# ---------------------------------------------------------------------------- sizes


_FLAT = frozenset({int, float, bool, type(None)})


def size(value: Any, cap: int = MAX_SIZE) -> int:
    """How big a value is, counted until it passes ``cap`` (so the count costs at most ``cap`` steps).

    A text counts its characters, a list, tuple, set or mapping 1 plus its items' sizes (keys
    included, each item at least 1), a whole number one unit per 8 bits, anything else 1.
    """
    total = 0
    stack = [value]
    while stack and total <= cap:
        item = stack.pop()
        kind = type(item)
        if kind in _FLAT:
            total += 1 + (item.bit_length() // 8 if kind is int else 0)
        elif isinstance(item, (str, bytes)):
            total += max(len(item), 1)
        elif isinstance(item, (list, tuple, set, frozenset)):
            total += 1 + len(item)
            if total <= cap:
                stack.extend([x for x in item if type(x) not in _FLAT or (type(x) is int and x.bit_length() > 8)])
        elif isinstance(item, Mapping):
            total += 1 + 2 * len(item)
            if total <= cap:
                stack.extend([x for x in (*item.keys(), *item.values()) if type(x) not in _FLAT])
        elif isinstance(item, int):
            total += 1 + item.bit_length() // 8
        else:
            total += 1
    return total


def _length(value: Any) -> int:
    try:
        return len(value) if isinstance(value, (str, bytes, list, tuple, set, frozenset, dict, range)) else 0
    except OverflowError:  # a range too long for len()
        return MAX_SIZE + 1


def cost(value: Any) -> int:
    """Operations to charge for walking ``value``: one per item, one per 64 characters of a text."""
    if isinstance(value, (str, bytes)):
        return len(value) // 64
    return _length(value)


def _too_big(what: str, amount: float) -> LimitExceeded:
    return LimitExceeded(f"{what} would be {amount:,.0f} long, above the limit of {MAX_SIZE:,}")


def check_size(value: Any, what: str = "the result") -> Any:
    """``value`` itself, when it is within `MAX_SIZE`.

    Raises:
        LimitExceeded: it is bigger.
    """
    if isinstance(value, int) and not isinstance(value, bool):
        if value.bit_length() > MAX_INT_BITS:
            raise LimitExceeded(f"{what} is a number of {value.bit_length():,} bits, above the limit of {MAX_INT_BITS:,}")
        return value
    if isinstance(value, (str, bytes, list, tuple, set, frozenset, Mapping)):
        measured = size(value)
        if measured > MAX_SIZE:
            raise _too_big(what, measured)
    return value


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_sequence(value: Any) -> bool:
    return isinstance(value, (str, bytes, list, tuple))


# ---------------------------------------------------------------------------- operators


def binop(operator: str, left: Any, right: Any, table: Mapping[str, Callable[[Any, Any], Any]]) -> Any:
    """``left <operator> right`` via ``table``, refused before it starts when the result would be too big.

    Raises:
        LimitExceeded: the result would pass `MAX_SIZE` or `MAX_INT_BITS`.
    """
    if operator == "**" and _is_int(left) and _is_int(right) and right > 0 and abs(left) > 1:
        bits = right * (abs(left).bit_length() - (1 if _is_power_of_two(abs(left)) else 0))
        if bits > MAX_INT_BITS:
            raise LimitExceeded(f"`{left} ** {right}` would have about {bits:,} bits, above the limit of {MAX_INT_BITS:,}")
    elif operator == "*":
        if _is_int(left) and _is_int(right):
            bits = left.bit_length() + right.bit_length()
            if bits > MAX_INT_BITS:
                raise LimitExceeded(f"a product of about {bits:,} bits is above the limit of {MAX_INT_BITS:,}")
        else:
            sequence, times = (left, right) if _is_int(right) else (right, left)
            if _is_sequence(sequence) and _is_int(times) and times > 0:
                unit = len(sequence) if isinstance(sequence, (str, bytes)) else size(sequence, MAX_SIZE // times + 1)
                total = unit * times
                if total > MAX_SIZE:
                    raise _too_big("the repeated text or list", max(len(sequence) * times, total if len(sequence) * times <= MAX_SIZE else 0))
                spend(cost(sequence) * times)
    elif operator == "+" and _is_sequence(left) and _is_sequence(right):
        total = size(left) + size(right)
        if total > MAX_SIZE:
            raise _too_big("the joined text or list", total)
        spend(cost(left) + cost(right))
    elif operator == "%" and isinstance(left, str):
        check_percent_format(left, right)
    return check_size(table[operator](left, right))


def _is_power_of_two(value: int) -> bool:
    return value & (value - 1) == 0


# `%` conversions: flags, then a width and a precision, either of which may be `*`.
_PERCENT = re.compile(r"%(?:\([^)]*\))?[#0\- +]*(\*|\d+)?(?:\.(\*|\d+))?")


def check_percent_format(template: str, args: Any) -> None:
    """Refuse a ``%`` format whose widths or precisions would make a text too big.

    Raises:
        LimitExceeded: a width or precision above `MAX_SIZE`, or one given as ``*``.
    """
    spend(cost(template))
    for match in _PERCENT.finditer(template):
        for number in match.groups():
            if number == "*":
                raise LimitExceeded("a `*` width or precision in a `%` format is not allowed; write the number")
            if number is not None and int(number) > MAX_SIZE:
                raise _too_big("a formatted field", int(number))
    if isinstance(args, (tuple, list, Mapping)):
        check_size(args, "the formatted values")


def check_format_spec(template: str) -> None:
    """Refuse a ``str.format`` template whose field widths would make a text too big.

    Raises:
        LimitExceeded: a width or precision above `MAX_SIZE`, or one given by a nested field.
    """
    spend(cost(template))
    try:
        fields = list(string.Formatter().parse(template))
    except ValueError:
        return  # str.format raises the same error with its own message
    for _, _, spec, _ in fields:
        if not spec:
            continue
        if "{" in spec:
            raise LimitExceeded("a nested `{}` in a format spec is not allowed; write the width")
        for number in re.findall(r"\d+", spec):
            if int(number) > MAX_SIZE:
                raise _too_big("a formatted field", int(number))


# ---------------------------------------------------------------------------- calls and filters


def _int_arg(args: tuple[Any, ...], kwargs: Mapping[str, Any], index: int, name: str, default: Any) -> Any:
    if len(args) > index:
        return args[index]
    return kwargs.get(name, default)


def check_str_method(obj: Any, args: tuple[Any, ...], kwargs: Mapping[str, Any]) -> None:
    """Refuse a call of a text's method that would make a text too big (``'a'.center(10**9)``).

    Raises:
        LimitExceeded: the result would pass `MAX_SIZE`.
    """
    owner = getattr(obj, "__self__", None)
    if not isinstance(owner, str):
        return
    name = getattr(obj, "__name__", "")
    spend(cost(owner))
    if name in ("center", "ljust", "rjust", "zfill"):
        width = _int_arg(args, kwargs, 0, "width", 0)
        if _is_int(width) and width > MAX_SIZE:
            raise _too_big(f"`{name}({width})`", width)
    elif name == "expandtabs":
        tabsize = _int_arg(args, kwargs, 0, "tabsize", 8)
        if _is_int(tabsize) and len(owner) * max(tabsize, 1) > MAX_SIZE:
            raise _too_big("the expanded text", len(owner) * tabsize)
    elif name == "replace" and len(args) >= 2 and isinstance(args[0], str) and isinstance(args[1], str):
        _check_replace(owner, args[0], args[1], args[2] if len(args) > 2 else kwargs.get("count", -1))
    elif name == "join" and args:
        _check_join(owner, args[0])
    elif name == "translate" and args and isinstance(args[0], Mapping):
        longest = max((len(v) for v in args[0].values() if isinstance(v, str)), default=1)
        if len(owner) * longest > MAX_SIZE:
            raise _too_big("the translated text", len(owner) * longest)


def _check_replace(text: str, old: str, new: str, count: Any) -> None:
    hits = text.count(old) if old else len(text) + 1
    if _is_int(count) and count >= 0:
        hits = min(hits, count)
    total = len(text) + hits * (len(new) - len(old))
    if total > MAX_SIZE:
        raise _too_big("the replaced text", total)


def _check_join(separator: str, items: Any) -> None:
    if not isinstance(items, (list, tuple)):
        return
    spend(len(items))
    total = len(separator) * max(len(items) - 1, 0)
    for item in items:
        total += len(item) if isinstance(item, str) else size(item)
        if total > MAX_SIZE:
            raise _too_big("the joined text", total)


def bounded_concat(parts: Iterable[str]) -> str:
    """Join rendered output (a template, a macro, a `{% set %}` block), at most `MAX_SIZE` characters.

    Raises:
        LimitExceeded: the output passes `MAX_SIZE` characters.
    """
    out: list[str] = []
    total = 0
    for part in parts:
        total += len(part)
        if total > MAX_SIZE:
            raise LimitExceeded(f"the output is longer than {MAX_SIZE:,} characters; loop over fewer items")
        out.append(part)
    return "".join(out)


def bounded_join(autoescape: bool, parts: Iterable[Any]) -> str:
    """The ``~`` operator: join the parts' texts, escaping them as Jinja2 does, at most `MAX_SIZE` long."""
    joined: str = markup_join(parts) if autoescape else str_join(parts)
    spend(cost(joined))
    check_size(joined, "the joined text")
    return joined


def bounded_iteration(items: Any) -> Iterator[Any]:
    """Iterate ``items``, one operation per item (the loops of templates go through here)."""
    for item in items:
        spend()
        yield item


_FILTER_CHECKS: dict[str, Callable[[Any, tuple[Any, ...], Mapping[str, Any]], None]] = {}


def _filter_check(name: str) -> Callable[[Callable[[Any, tuple[Any, ...], Mapping[str, Any]], None]], Any]:
    def register(check: Callable[[Any, tuple[Any, ...], Mapping[str, Any]], None]) -> Any:
        _FILTER_CHECKS[name] = check
        return check

    return register


@_filter_check("center")
def _center(value: Any, args: tuple[Any, ...], kwargs: Mapping[str, Any]) -> None:
    width = _int_arg(args, kwargs, 0, "width", 80)
    if _is_int(width) and width > MAX_SIZE:
        raise _too_big(f"`center({width})`", width)


@_filter_check("indent")
def _indent(value: Any, args: tuple[Any, ...], kwargs: Mapping[str, Any]) -> None:
    width = _int_arg(args, kwargs, 0, "width", 4)
    unit = len(width) if isinstance(width, str) else width if _is_int(width) else 0
    lines = str(value).count("\n") + 1
    if unit * lines > MAX_SIZE:
        raise _too_big("the indented text", unit * lines)


@_filter_check("format")
def _format(value: Any, args: tuple[Any, ...], kwargs: Mapping[str, Any]) -> None:
    if isinstance(value, str):
        check_percent_format(value, args or kwargs)


@_filter_check("replace")
def _replace(value: Any, args: tuple[Any, ...], kwargs: Mapping[str, Any]) -> None:
    if len(args) >= 2:
        _check_replace(str(value), str(args[0]), str(args[1]), _int_arg(args, kwargs, 2, "count", -1))


@_filter_check("wordwrap")
def _wordwrap(value: Any, args: tuple[Any, ...], kwargs: Mapping[str, Any]) -> None:
    wrapstring = _int_arg(args, kwargs, 2, "wrapstring", None)
    if isinstance(wrapstring, str) and len(str(value)) * max(len(wrapstring), 1) > MAX_SIZE:
        raise _too_big("the wrapped text", len(str(value)) * len(wrapstring))


@_filter_check("join")
def _join_filter(value: Any, args: tuple[Any, ...], kwargs: Mapping[str, Any]) -> None:
    separator = _int_arg(args, kwargs, 0, "d", "")
    if isinstance(value, (list, tuple)) and isinstance(separator, str):
        _check_join(separator, value)


@_filter_check("batch")
def _batch(value: Any, args: tuple[Any, ...], kwargs: Mapping[str, Any]) -> None:
    count = _int_arg(args, kwargs, 0, "linecount", 1)
    if _is_int(count) and count > MAX_SIZE:
        raise _too_big("a batch", count)


@_filter_check("slice")
def _slice(value: Any, args: tuple[Any, ...], kwargs: Mapping[str, Any]) -> None:
    count = _int_arg(args, kwargs, 0, "slices", 1)
    if _is_int(count) and count > MAX_SIZE:
        raise _too_big("the list of slices", count)


@_filter_check("truncate")
def _truncate(value: Any, args: tuple[Any, ...], kwargs: Mapping[str, Any]) -> None:
    end = _int_arg(args, kwargs, 2, "end", "...")
    if isinstance(end, str):
        check_size(end, "the truncation mark")


def bounded_filter(name: str, func: Callable[..., Any]) -> Callable[..., Any]:
    """``func`` as a filter that counts its work and refuses results that would be too big.

    The wrapper takes the render context (Jinja2's ``pass_context``), which also keeps Jinja2
    from running it while compiling a template (constant folding), before any bound applies.
    """
    from jinja2.utils import pass_context

    pass_arg = getattr(getattr(func, "jinja_pass_arg", None), "name", None)
    check = _FILTER_CHECKS.get(name)

    @pass_context
    @wraps(func)
    def bounded(context: Any, value: Any, *args: Any, **kwargs: Any) -> Any:
        spend(1 + cost(value))
        if check is not None:
            check(value, args, kwargs)
        if pass_arg == "context":
            result = func(context, value, *args, **kwargs)
        elif pass_arg == "eval_context":
            result = func(context.eval_ctx, value, *args, **kwargs)
        elif pass_arg == "environment":
            result = func(context.environment, value, *args, **kwargs)
        else:
            result = func(value, *args, **kwargs)
        return check_size(result, f"the result of `{name}`")

    return bounded


def bounded_lipsum(n: int = 5, html: bool = True, min: int = 20, max: int = 100) -> str:
    """Jinja2's ``lipsum`` with at most 100 paragraphs of at most 1,000 words."""
    from jinja2.utils import generate_lorem_ipsum

    if not (_is_int(n) and _is_int(max)) or n > 100 or max > 1000:
        raise LimitExceeded("lipsum() makes at most 100 paragraphs of at most 1000 words")
    return str(generate_lorem_ipsum(n=n, html=html, min=min, max=max))
