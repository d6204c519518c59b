"""Rendering inline templates (task titles, notes, webhook bodies) and secrets, in activities only."""

from __future__ import annotations

import os
import re
from typing import Any

from temporalio.exceptions import ApplicationError

from touchpoint.dsl import expressions as ex
from touchpoint.engine.effects import context_of
from workflows import names

__all__ = ["context_of", "render", "render_tree", "resolve_secrets"]

_SECRET = re.compile(r"\$\{([A-Z_][A-Z0-9_]*)\}")


def render(source: str, context: dict[str, Any]) -> str:
    """Render an inline template; a failure is permanent (retrying would fail the same way)."""
    try:
        return ex.render_text(source, context)
    except ex.ExpressionError as exc:
        raise ApplicationError(str(exc), type="Rejected", non_retryable=True) from None


def render_tree(value: Any, context: dict[str, Any]) -> Any:
    """Render every string in a JSON-like value."""
    if isinstance(value, str):
        return render(value, context)
    if isinstance(value, dict):
        return {k: render_tree(v, context) for k, v in value.items()}
    if isinstance(value, list):
        return [render_tree(v, context) for v in value]
    return value


def resolve_secrets(value: Any) -> Any:
    """Replace ``${ENV_NAME}`` with the environment's value, at send time only.

    Raises:
        ApplicationError: of type ConfigurationError (the run pauses) when a variable is unset.
    """
    if isinstance(value, str):

        def lookup(match: re.Match[str]) -> str:
            name = match.group(1)
            if name not in os.environ:
                raise ApplicationError(
                    f"the environment variable {name} is not set on the worker: set it and resume the run",
                    type=names.CONFIGURATION_ERROR,
                    non_retryable=True,
                )
            return os.environ[name]

        return _SECRET.sub(lookup, value)
    if isinstance(value, dict):
        return {k: resolve_secrets(v) for k, v in value.items()}
    if isinstance(value, list):
        return [resolve_secrets(v) for v in value]
    return value
