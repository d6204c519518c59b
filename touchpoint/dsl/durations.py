"""Durations as CS ops write them: ``90m``, ``12h``, ``3d``, ``2w`` or ISO 8601 (``P3D``)."""

from __future__ import annotations

import re
from datetime import timedelta
from typing import Annotated, Any

from pydantic import BeforeValidator, PlainSerializer

_SHORT = re.compile(r"^\s*(-?\d+)\s*([mhdw])\s*$")
_ISO = re.compile(
    r"^(?P<sign>-)?P(?:(?P<w>\d+)W)?(?:(?P<d>\d+)D)?"
    r"(?:T(?:(?P<h>\d+)H)?(?:(?P<m>\d+)M)?(?:(?P<s>\d+(?:\.\d+)?)S)?)?$"
)
_UNITS = {"m": timedelta(minutes=1), "h": timedelta(hours=1), "d": timedelta(days=1), "w": timedelta(weeks=1)}


def parse_duration(value: Any) -> timedelta:
    """Parse ``3d`` / ``12h`` / ``90m`` / ``2w`` or an ISO 8601 duration (``P3D``, ``PT12H``).

    ``Nd`` is exactly N x 24 hours, also across DST changes.

    Raises:
        ValueError: with the value found and the forms expected (or the longest one allowed).
    """
    try:
        return _parse(value)
    except OverflowError:
        raise ValueError(f"the duration {value!r} is too long: at most 999999999 days") from None


def _parse(value: Any) -> timedelta:
    if isinstance(value, timedelta):
        return value
    if isinstance(value, bool) or not isinstance(value, (str, int, float)):
        raise ValueError(f"expected a duration like 3d, 12h, 90m, 2w or P3D, found {value!r}")
    if isinstance(value, (int, float)):
        # Seconds: what pydantic's JSON form of a timedelta may become after a round trip.
        return timedelta(seconds=value)
    text = value.strip()
    short = _SHORT.match(text)
    if short:
        return int(short.group(1)) * _UNITS[short.group(2)]
    iso = _ISO.match(text.upper())
    if iso and text.upper() not in ("P", "PT", "-P") and any(iso.group(k) for k in "wdhms"):
        total = timedelta(
            weeks=int(iso.group("w") or 0),
            days=int(iso.group("d") or 0),
            hours=int(iso.group("h") or 0),
            minutes=int(iso.group("m") or 0),
            seconds=float(iso.group("s") or 0),
        )
        return -total if iso.group("sign") else total
    raise ValueError(f"expected a duration like 3d, 12h, 90m, 2w or P3D, found {value!r}")


def format_duration(value: timedelta) -> str:
    """The shortest form of a duration in the contract's units (``3d``, ``90m``...)."""
    seconds = int(value.total_seconds())
    sign = "-" if seconds < 0 else ""
    seconds = abs(seconds)
    for unit, size in (("w", 604800), ("d", 86400), ("h", 3600), ("m", 60)):
        if seconds and seconds % size == 0:
            return f"{sign}{seconds // size}{unit}"
    return f"{sign}PT{seconds}S"


Duration = Annotated[
    timedelta,
    BeforeValidator(parse_duration),
    PlainSerializer(format_duration, return_type=str),
]
"""A pydantic field type that accepts the contract's durations and serialises them back."""


def _nonneg(value: timedelta) -> timedelta:
    if value < timedelta(0):
        raise ValueError(f"expected a positive duration, found {format_duration(value)}")
    return value


PositiveDuration = Annotated[Duration, BeforeValidator(lambda v: _nonneg(parse_duration(v)))]
