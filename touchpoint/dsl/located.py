"""Pydantic's errors as problems at the offending key's own line: ``file:line``, the field and a
message a CS-ops writer can act on (unknown keys and values with a "did you mean", a step with
two actions, a trigger of no known kind, patterns in words)."""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ValidationError

from touchpoint.dsl.errors import Problem, hint
from touchpoint.dsl.schema import STEP_KINDS
from touchpoint.dsl.templates import rel as _rel
from touchpoint.dsl.yamlpos import Path as YPath
from touchpoint.dsl.yamlpos import Positions, format_path


def validate_model(model: type[BaseModel], data: Any, file: Path, positions: Positions, problems: list[Problem]) -> Any:
    """Validate ``data`` against ``model``, turning pydantic errors into positioned problems."""
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        for error in exc.errors(include_url=False):
            problems.append(pydantic_problem(error, file, positions, data))
        return None


_ALL_KEYS: set[str] = set()


def _known_keys() -> set[str]:
    if not _ALL_KEYS:
        from touchpoint.dsl import accounts, schema, workspace

        for module in (schema, workspace, accounts):
            for obj in vars(module).values():
                if isinstance(obj, type) and issubclass(obj, BaseModel):
                    for name, info in obj.model_fields.items():
                        _ALL_KEYS.add(info.alias or name)
    return _ALL_KEYS


_TYPE_TAG = re.compile(r"^[\w-]+\[.*\]$", re.DOTALL)


def _clean_loc(loc: Iterable[Any]) -> YPath:
    out: list[str | int] = []
    for part in loc:
        if isinstance(part, str) and part.startswith("step:"):
            continue
        if isinstance(part, str) and (_TYPE_TAG.match(part) or part.startswith("function-")):
            continue  # a tag pydantic adds for a union member or a validator, not a key of the file
        out.append(part)
    # A trigger union adds its tag after `trigger`: drop it when the next part repeats the key.
    if len(out) >= 2 and out[0] == "trigger" and isinstance(out[1], str) and out[1] in ("event", "date", "schedule", "manual"):
        if len(out) >= 3 or out[1] == "manual":
            out.pop(1)
    return tuple(out)


def pydantic_problem(error: Mapping[str, Any], file: Path, positions: Positions, data: Any = None) -> Problem:
    """One pydantic error as a `Problem` at the offending key's own line."""
    loc = _clean_loc(error["loc"])
    kind = error["type"]
    value = error.get("input")
    field_name = format_path(loc)
    message = str(error["msg"])
    ctx = error.get("ctx") or {}
    line = positions.line_of(loc)
    if kind == "extra_forbidden" and loc:
        key = str(loc[-1])
        parent = format_path(loc[:-1])
        message = f"unknown key `{key}`{hint(key, _known_keys())}"
        if key in ("id", "when", "on_error") and len(loc) >= 3:
            message = f"unknown key `{key}` inside `{loc[-2]}`: `{key}` belongs on the step, beside the action key (e.g. `- {loc[-2]}: {{...}}` then `  {key}: ...` on its own line)"
        elif key in STEP_KINDS or key in ("then", "else"):
            message += "; a step has exactly one action key"
        field_name = parent if loc[:-1] else key
    elif kind == "step_kind":
        message = _step_kind_message(value)
        line = _line_of_key(positions, loc, _step_kind_culprit(value), line)
    elif kind == "trigger_kind":
        message = f"expected exactly one of `event`, `date`, `schedule` or `manual`, found {_show(value)}"
        if isinstance(value, dict):
            kinds = [k for k in value if k in ("event", "date", "schedule", "manual")]
            others = [k for k in value if k not in ("event", "date", "schedule", "manual", "when")]
            culprit = kinds[1] if len(kinds) > 1 else others[0] if others and not kinds else None
            line = _line_of_key(positions, loc, culprit, line)
    elif kind == "missing":
        message = f"`{loc[-1]}` is required" if loc else "required"
    elif kind in ("value_error", "assertion_error"):
        err = ctx.get("error")
        message = str(err) if err is not None else message.removeprefix("Value error, ")
    elif kind == "literal_error":
        message = f"expected {ctx.get('expected', '')}, found {_show(value)}"
        message += hint(str(value), _literal_choices(str(ctx.get("expected", ""))))
    elif kind == "string_pattern_mismatch":
        message = f"{_show(value)} is not a valid {loc[-1] if loc else 'value'}: expected {_pattern_words(str(ctx.get('pattern', '')))}"
    else:
        message = f"{message[:1].lower()}{message[1:]}, found {_show(value)}"
    return Problem(_rel(file), line, field_name, message)


def _line_of_key(positions: Positions, loc: YPath, key: Any, default: int) -> int:
    """The line of ``key`` inside the mapping at ``loc``, when it was read from the file."""
    if key is None:
        return default
    return positions.keys.get(tuple(loc) + (key,), default)


def _step_kind_culprit(value: Any) -> Any:
    """The key an unknown step is reported at: its first unknown key (a step with two actions stays at its item)."""
    if not isinstance(value, dict) or any(k in STEP_KINDS for k in value):
        return None
    unknown = [k for k in value if k not in ("id", "when", "on_error", "then", "else")]
    return unknown[0] if unknown else None


def _show(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 80 else text[:77] + "..."


def _literal_choices(expected: str) -> list[str]:
    return [c.strip().strip("'") for c in expected.replace(" or ", ",").split(",") if c.strip()]


def _pattern_words(pattern: str) -> str:
    return {
        "^[a-z0-9][a-z0-9-]*$": "lowercase letters, digits and '-' (e.g. onboarding-scale)",
        "^[A-Za-z_][A-Za-z0-9_-]*$": "letters, digits, '_' and '-', starting with a letter",
        "^[a-z][a-z0-9_]*(\\.[a-z][a-z0-9_]*)*$": "a lowercase dotted event type (e.g. account.created)",
    }.get(pattern, f"a value matching {pattern}")


def _step_kind_message(value: Any) -> str:
    known = ", ".join(STEP_KINDS)
    if not isinstance(value, dict):
        return f"a step must be a mapping with one action key ({known}), found {_show(value)}"
    actions = [k for k in value if k in STEP_KINDS]
    if len(actions) > 1:
        return f"a step has exactly one action key, found {', '.join(f'`{a}`' for a in actions)}: split it into separate steps"
    unknown = [str(k) for k in value if k not in ("id", "when", "on_error", "then", "else")]
    if unknown:
        return f"unknown step `{unknown[0]}`{hint(unknown[0], STEP_KINDS)}; known steps: {known}"
    return f"a step needs an action key; known steps: {known}"
