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
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
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



class TouchpointEnvironment(ImmutableSandboxedEnvironment):
    """Sandboxed Jinja2 environment with Touchpoint's mapping rules (see module docs).

    Defaults to ``StrictUndefined``; any other ``Environment`` option can be passed through.
    """

    def __init__(self, **options: Any) -> None:
        options.setdefault("undefined", StrictUndefined)
        options.setdefault("finalize", _finalize)
        super().__init__(**options)
        self.filters["rollup"] = rollup

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
