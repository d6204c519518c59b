"""How the console words and draws things: the template environment, times, timeline lines.

The page templates are our own files, rendered in Jinja2's sandbox with autoescaping on for
every template and `StrictUndefined`, so a typo in a template is an error in the tests, never an
empty cell, and no value reaches a page unescaped.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from jinja2 import FileSystemLoader, StrictUndefined
from jinja2.sandbox import SandboxedEnvironment
from markupsafe import Markup, escape

from touchpoint.cli.status_view import waiting_words

HERE = Path(__file__).resolve().parent
TEMPLATES = HERE / "templates"
STATIC = HERE / "static"


def zone(name: str | None) -> ZoneInfo:
    """The time zone of that name, UTC for none or an unknown one."""
    try:
        return ZoneInfo(name or "UTC")
    except (ZoneInfoNotFoundError, ValueError):
        return ZoneInfo("UTC")


def when(value: Any, tz: str | None = None) -> str:
    """A moment as people read it, in the zone given (UTC by default): ``Tue 05 Jan 2027 14:03``."""
    if value is None or value == "":
        return ""
    if isinstance(value, str):
        try:
            value = dt.datetime.fromisoformat(value)
        except ValueError:
            return str(value)
    if not isinstance(value, dt.datetime):
        return str(value)
    if value.tzinfo is None:
        value = value.replace(tzinfo=dt.UTC)
    local = value.astimezone(zone(tz))
    return f"{local:%a %d %b %Y %H:%M} {local.tzname()}"


def ago(value: dt.datetime | None, now: dt.datetime | None = None) -> str:
    """How long ago (or how far ahead) a moment is, roughly: ``3 d ago``, ``in 5 h``."""
    if value is None:
        return ""
    now = now or dt.datetime.now(dt.UTC)
    seconds = (now - value).total_seconds()
    future, seconds = seconds < 0, abs(seconds)
    for unit, size in (("d", 86400), ("h", 3600), ("min", 60)):
        if seconds >= size:
            amount = f"{int(seconds // size)} {unit}"
            return f"in {amount}" if future else f"{amount} ago"
    return "now"


def waiting(entries: Sequence[Mapping[str, Any]] | None, tz: str | None) -> str:
    """What a run waits for, in words, in the account's zone."""
    return waiting_words([dict(e) for e in entries or []], tz or "UTC") or ""


def line_words(action: str, detail: Mapping[str, Any], tz: str | None) -> str:
    """One timeline line's detail in words: who got which email, the branch taken, until when."""
    d = dict(detail)
    status = f" ({d['status']})" if d.get("status") and d.get("status") not in ("sent", "done") else ""
    if action == "email":
        to = d.get("to")
        to = ", ".join(to) if isinstance(to, list) else (to or "")
        subject = f" “{d['subject']}”" if d.get("subject") else ""
        held = d.get("held")
        held_words = f", held for {held.get('reason')}" if isinstance(held, Mapping) and held.get("reason") else ""
        reason = f": {d['reason']}" if d.get("reason") else ""
        return f"to {to}{subject}{held_words}{status}{reason}".strip()
    if action == "task":
        due = f", due {when(d.get('due'), tz)}" if d.get("due") else ""
        return f"“{d.get('title', '')}” for {d.get('owner', '')}{due}{status}"
    if action in ("wait", "wait_until"):
        return (f"until {when(d.get('until'), tz)}" if d.get("until") else "") + status + (f": {d['reason']}" if d.get("reason") else "")
    if action == "wait_for":
        return "timed out" if d.get("timeout") else f"{d.get('event', 'the event')} arrived"
    if action == "if":
        return f"took {d.get('branch')}"
    if action == "split":
        return f"variant {d.get('variant')}"
    if action == "milestone":
        return f"{d.get('milestone')} done"
    if action == "exit":
        return f"outcome {d.get('outcome')}"
    if action == "set":
        values = d.get("vars") or {}
        return ", ".join(f"{k} = {v}" for k, v in values.items()) if isinstance(values, Mapping) else str(values)
    if action == "approval":
        if d.get("status") == "requested":
            to = d.get("to")
            count = f" ({len(to)} recipient{'s' if len(to) != 1 else ''})" if isinstance(to, list) else ""
            return f"requested of {d.get('by', '')}{count}"
        edited = [part for part in ("subject", "html") if d.get(part) is not None]
        words = f"{str(d.get('status', '')).replace('_', ' ')} by {d.get('by', '')}"
        return words + (f", edited {' and '.join(edited)}" if edited else "") + (f": {d['reason']}" if d.get("reason") else "")
    if action == "draft":
        return f"{d.get('into')} ({d.get('words', '?')} words, {d.get('backend', '?')})"
    return ", ".join(f"{k}: {v}" for k, v in d.items() if v not in (None, "", [], {}))


def number(value: Any) -> str:
    """A number as people write it: ``80`` for 80.0, ``20.83`` as it is, nothing for None."""
    if value is None:
        return ""
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value)


def sparkline(scores: Sequence[int], *, width: int = 320, height: int = 64) -> Markup:
    """Health scores (0-100) over time as a small SVG line, with the tier bands behind it."""
    if not scores:
        return Markup("")
    step = width / max(len(scores) - 1, 1)
    points = " ".join(f"{i * step:.1f},{height - height * max(0, min(100, s)) / 100:.1f}" for i, s in enumerate(scores))
    if len(scores) == 1:
        points += f" {width},{height - height * max(0, min(100, scores[0])) / 100:.1f}"
    label = escape(f"health score over time: {', '.join(str(s) for s in scores[-12:])}")
    return Markup(
        f'<svg class="spark" width="{width}" height="{height}" viewBox="0 0 {width} {height}" role="img" aria-label="{label}">'
        f'<rect class="band green" x="0" y="0" width="{width}" height="{height * 0.3:.1f}"/>'
        f'<rect class="band yellow" x="0" y="{height * 0.3:.1f}" width="{width}" height="{height * 0.3:.1f}"/>'
        f'<rect class="band red" x="0" y="{height * 0.6:.1f}" width="{width}" height="{height * 0.4:.1f}"/>'
        f'<polyline class="line" points="{points}"/></svg>'
    )


def environment() -> SandboxedEnvironment:
    """The sandboxed, autoescaping environment of the console's page templates."""
    env = SandboxedEnvironment(
        loader=FileSystemLoader(TEMPLATES),
        autoescape=True,
        undefined=StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
    )
    env.filters["when"] = when
    env.filters["ago"] = ago
    env.filters["short"] = lambda value: str(value or "")[:10]
    env.filters["num"] = number
    env.globals.update(waiting=waiting, line_words=line_words, sparkline=sparkline)
    return env
