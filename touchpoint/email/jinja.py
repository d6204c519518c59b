"""The Jinja2 environment shared by email templates and playbook expressions.

It lives in :mod:`touchpoint.dsl.sandbox` (the DSL package imports nothing else of ours, so
workflows can use it for conditions); this module re-exports it for the email package.
"""

from __future__ import annotations

from touchpoint.dsl.sandbox import FreeMap, TouchpointEnvironment

__all__ = ["FreeMap", "TouchpointEnvironment"]
