"""A run as people and API clients read it: what it waits for in the account's zone, its timeline.

Shared by `touchpoint status` (`touchpoint.cli.status_view`) and the API's `GET /runs`.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any


def waiting_words(entries: Sequence[dict[str, Any]], tz: str) -> str | None:
    """What a run waits for, in the account's zone: "held until Mon 09:00 Europe/Berlin: send_window"."""
    from zoneinfo import ZoneInfo

    words = []
    for entry in entries:
        until = entry.get("until")
        when = ""
        if until:
            moment = datetime.fromisoformat(str(until)).astimezone(ZoneInfo(tz))
            when = f" until {moment:%a %d %b %H:%M} {tz}"
        kind, detail = entry.get("kind"), entry.get("detail")
        if kind == "email":
            words.append(f"email held{when}" + (f": {detail}" if detail else ""))
        elif kind == "event":
            words.append(f"waiting for {detail or 'an event'}{when}")
        elif kind == "approval":
            words.append(f"waiting for {detail or 'an approval'}{when}")
        elif kind == "task":
            words.append(f"waiting for its task to be completed{when}")
        elif kind == "paused":
            words.append("paused" + (f": {detail}" if detail else ""))
        elif kind == "effect":
            words.append("calling a provider")
        else:
            words.append(f"{'scorecard ' if entry.get('step') == 'scorecard' else ''}waiting{when}")
    return "; ".join(words) or None


def record_json(record: Any) -> dict[str, Any]:
    """A history record (`StepRecord`-like: at, day, step, action, detail) as JSON-ready data."""
    at = record.at.astimezone(UTC).isoformat(timespec="seconds") if isinstance(record.at, datetime) else str(record.at)
    return {"at": at, "day": record.day, "step": record.step, "action": record.action, "detail": _plain(record.detail)}


def _plain(value: Any) -> Any:
    """JSON-ready: datetimes as ISO text, containers walked, anything else as ``str``."""
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if isinstance(value, datetime):
        return value.isoformat(timespec="seconds")
    if value is None or isinstance(value, (str, int, float, bool)):
        return value
    return str(value)
