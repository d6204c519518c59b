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
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import date, datetime, timedelta
from typing import Any

from jinja2 import StrictUndefined, Undefined
from jinja2.sandbox import ImmutableSandboxedEnvironment


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


class TouchpointEnvironment(ImmutableSandboxedEnvironment):
    """Sandboxed Jinja2 environment with Touchpoint's mapping rules (see module docs).

    Defaults to ``StrictUndefined``; any other ``Environment`` option can be passed through.
    """

    def __init__(self, **options: Any) -> None:
        options.setdefault("undefined", StrictUndefined)
        options.setdefault("finalize", _finalize)
        super().__init__(**options)

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


def expression_environment() -> TouchpointEnvironment:
    """The shared environment for expressions and inline text templates (no file loader)."""
    global _EXPRESSION_ENV
    if _EXPRESSION_ENV is None:
        _EXPRESSION_ENV = TouchpointEnvironment(autoescape=False)
    return _EXPRESSION_ENV
