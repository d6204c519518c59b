"""Pure time functions shared by workflows and activities: send windows, holidays, run days.

Workflows call these with the run's clock, so they must stay deterministic: no I/O, no "now".
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from datetime import date, datetime, time, timedelta
from functools import lru_cache
from zoneinfo import ZoneInfo

from touchpoint.dsl.schema import WEEKDAYS, SendWindow

DAY = timedelta(days=1)


@lru_cache(maxsize=512)
def zone(name: str) -> ZoneInfo:
    """A cached ZoneInfo."""
    return ZoneInfo(name)


def as_date(value: object, tz: str) -> date | None:
    """A date trigger's value as a calendar date in ``tz`` (None when it is no date): what the
    date sweep and the forecast both read."""
    if isinstance(value, datetime):
        return value.astimezone(zone(tz)).date() if value.tzinfo else value.date()
    if isinstance(value, date):
        return date(value.year, value.month, value.day)
    if isinstance(value, str):
        try:
            return date.fromisoformat(value[:10])
        except ValueError:
            return None
    return None


#: Where a command keeps holiday calendars between runs (`touchpoint.cache.enable` sets it); None
#: in workers, the API and workflow code, which compute them in memory.
calendar_store: Callable[[str, int, Callable[[], frozenset[date]]], frozenset[date]] | None = None


@lru_cache(maxsize=256)
def _holiday_calendar(country: str, year: int) -> frozenset[date]:
    def compute() -> frozenset[date]:
        import holidays as holidays_pkg  # passed through the workflow sandbox by the worker

        return frozenset(holidays_pkg.country_holidays(country, years=year).keys())

    return compute() if calendar_store is None else calendar_store(country, year, compute)


def is_holiday(day: date, country: str | None, listed: tuple[str, ...]) -> bool:
    """True when ``day`` is a public holiday of ``country`` and the workspace lists that country."""
    if not country or country.upper() not in listed:
        return False
    return day in _holiday_calendar(country.upper(), day.year)


def next_opening(at: datetime, tz: str, window: SendWindow, *, country: str | None = None, holidays: tuple[str, ...] = ()) -> datetime:
    """The first moment at or after ``at`` inside the send window, in zone ``tz``.

    Weekends (days not in the window), public holidays of the recipient's country (when the
    workspace lists it) and DST changes are honoured: 09:00 local is 09:00 on the wall clock.
    """
    local = at.astimezone(zone(tz))
    start_min, end_min = window.bounds()
    allowed = {WEEKDAYS.index(d) for d in window.days}
    day = local.date()
    for _ in range(400):
        if day.weekday() in allowed and not is_holiday(day, country, holidays):
            opens = _at_minutes(day, start_min, tz)
            closes = _at_minutes(day, end_min, tz)
            if local < opens:
                return opens.astimezone(at.tzinfo)
            if opens <= local < closes:
                return at
        day += DAY
    raise ValueError(f"send window {window.days} {window.hours} never opens")


def _at_minutes(day: date, minutes: int, tz: str) -> datetime:
    if minutes >= 24 * 60:
        return datetime.combine(day + DAY, time(0), tzinfo=zone(tz))
    return datetime.combine(day, time(minutes // 60, minutes % 60), tzinfo=zone(tz))


def local_midnight(day: date, tz: str) -> datetime:
    """00:00 of ``day`` in zone ``tz`` (aware)."""
    return datetime.combine(day, time(0), tzinfo=zone(tz))


def run_day(started_at: datetime, now: datetime) -> int:
    """Whole 24-hour periods since the run started."""
    return max(0, int((now - started_at).total_seconds() // 86400))


def earliest_free_slot(
    slots: Sequence[datetime], desired_at: datetime, cap: int, period: timedelta
) -> datetime:
    """The earliest time ``t >= desired_at`` that keeps every rolling window within the cap.

    A window is ``(w - period, w]``; two slots share one when they are less than ``period``
    apart. Adding ``t`` is allowed when no ``cap`` existing slots fit in one window together
    with ``t``, which checks the windows after ``t`` too (already-reserved future slots keep
    their guarantee).

    Args:
        slots: The contact's reserved slots (any order; those before ``desired_at - period``
            do not matter).
        desired_at: The earliest acceptable time.
        cap: The number of slots allowed per window (at least 1).
        period: The window length.
    """
    if cap < 1:
        raise ValueError(f"a frequency cap must allow at least 1 send per period, got {cap}")
    if period <= timedelta(0):
        raise ValueError(f"a frequency cap period must be positive, got {period}")
    ordered = sorted(slots)
    # Each run of `cap` consecutive slots spanning less than `period` forbids the open
    # interval of times that would land in one window with all of them.
    blocked = [
        (ordered[i + cap - 1] - period, ordered[i] + period)
        for i in range(len(ordered) - cap + 1)
        if ordered[i + cap - 1] - ordered[i] < period
    ]
    t = desired_at
    moved = True
    while moved:
        moved = False
        for start, end in blocked:
            if start < t < end:
                t, moved = end, True
    return t
