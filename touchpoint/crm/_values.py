"""Reading CRM property values into account-document types, and writing dates out.

CRMs hand back numbers as strings (HubSpot) or floats (Salesforce), dates as ISO strings or
epoch milliseconds, and time zones in their own spellings; these helpers turn them into the
types of the account document and return None for anything they cannot read, so one odd
value never fails a whole sync.
"""

from __future__ import annotations

import re
from datetime import UTC, date, datetime
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

__all__ = [
    "as_text",
    "iso_utc",
    "parse_date",
    "parse_datetime",
    "parse_number",
    "parse_timezone",
    "require_aware",
]

_EPOCH_MS = re.compile(r"-?\d{10,}")


def as_text(value: object) -> str | None:
    """A non-empty, stripped string, or None."""
    if value is None or isinstance(value, dict | list):
        return None
    text = str(value).strip()
    return text or None


def parse_number(value: object) -> int | float | None:
    """``"400"``, ``400.0`` → 400; ``"1200.5"`` → 1200.5; anything else → None."""
    if isinstance(value, bool) or value is None:
        return None
    if isinstance(value, int | float):
        number = float(value)
    else:
        text = as_text(value)
        if text is None:
            return None
        try:
            number = float(text.replace(",", ""))
        except ValueError:
            return None
    if number != number or number in (float("inf"), float("-inf")):
        return None
    return int(number) if number.is_integer() else number


def parse_datetime(value: object) -> datetime | None:
    """ISO 8601 (``Z``, ``+00:00`` or ``+0000``) or epoch milliseconds → aware datetime."""
    text = as_text(value)
    if text is None:
        return None
    if _EPOCH_MS.fullmatch(text):
        return datetime.fromtimestamp(int(text) / 1000, tz=UTC)
    try:
        parsed = datetime.fromisoformat(text)
    except ValueError:
        return None
    # A bare date or a naive time from a CRM is UTC by every provider's convention.
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


def parse_date(value: object) -> date | None:
    """``"2027-01-05"``, an ISO datetime or epoch milliseconds (midnight UTC) → date."""
    text = as_text(value)
    if text is None:
        return None
    try:
        return date.fromisoformat(text)
    except ValueError:
        pass
    parsed = parse_datetime(text)
    return parsed.astimezone(UTC).date() if parsed else None


def parse_timezone(value: object) -> str | None:
    """An IANA time zone name, also from HubSpot's ``america_slash_new_york`` spelling."""
    text = as_text(value)
    if text is None:
        return None
    if "/" not in text and "_slash_" in text:
        text = text.replace("_slash_", "/").replace("_hyphen_", "-")
        text = "/".join("_".join(word[:1].upper() + word[1:] for word in part.split("_")) for part in text.split("/"))
    try:
        ZoneInfo(text)
    except (ZoneInfoNotFoundError, ValueError):
        return None
    return text


def require_aware(value: datetime, *, name: str) -> datetime:
    """Return ``value`` or raise ValueError if it has no time zone."""
    if value.tzinfo is None or value.utcoffset() is None:
        raise ValueError(
            f"{name}={value.isoformat()} has no time zone; pass an aware datetime (e.g. datetime.now(UTC))"
        )
    return value


def iso_utc(value: datetime) -> str:
    """``2026-11-23T07:00:00.000Z``: the ISO 8601 UTC form both CRMs accept."""
    return value.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")
