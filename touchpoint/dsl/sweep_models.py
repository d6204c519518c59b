"""Date triggers: when a trigger's moment is, and the messages of the hourly date sweep.

`trigger: {date: account.renewal_date, offset: -120d}` fires for an account at 06:00 on the wall
clock of the account's time zone (else the workspace's), on the day given by the date value plus
the offset: :func:`trigger_moment`. The offset is wall-clock arithmetic, so `-120d` is 06:00 local
120 calendar days earlier whatever DST changes lie in between, and `-12h` is 18:00 the day before.

The `DateSweep` workflow (`workflows/sweep.py`) passes these models to the `sweep_date_triggers`
activity (`activities/sweep.py`), which documents the sweep window, `catch_up` and paging. They
live in `touchpoint.dsl` because the workflow sandbox passes that package through.
"""

from __future__ import annotations

from datetime import UTC, date, datetime, time, timedelta

from pydantic import Field

from touchpoint.dsl.runtime import Data
from touchpoint.dsl.timing import zone

TRIGGER_TIME = time(6, 0)
"""Date triggers fire at this wall-clock time in the account's zone."""
MIN_CATCH_UP = timedelta(days=1)
"""`catch_up` reaches back at least this far, whatever the offset."""
MAX_UTC_OFFSET = timedelta(hours=14)
"""No zone is further than this from UTC (Pacific/Kiritimati is +14, the -12 zones are closer)."""


def trigger_moment(day: date, offset: timedelta, tz: str) -> datetime:
    """The moment a date trigger fires for a date value, in UTC.

    Args:
        day: The value of the trigger's `date` expression for the account.
        offset: The trigger's offset; whole days move the calendar day, the rest the clock.
        tz: The account's IANA time zone.

    Returns:
        06:00 local on ``day + offset`` (DST-correct: the wall clock says 06:00), as aware UTC.
    """
    wall = datetime.combine(day, TRIGGER_TIME) + offset  # naive: wall-clock arithmetic
    # A wall time that does not exist (a spring-forward gap) resolves with fold=0, i.e. the
    # offset before the change: a consistent instant, an hour later on the new clock.
    return wall.replace(tzinfo=zone(tz)).astimezone(UTC)


def catch_up_reach(offset: timedelta) -> timedelta:
    """How long after its moment a `catch_up: true` trigger may still fire: max(|offset|, 1 day).

    For `offset: -120d` that is until the date itself (a renewal starts its 120-day playbook as
    long as the renewal is still ahead); for a positive offset, as long again after the moment;
    for no offset, one day.
    """
    return max(abs(offset), MIN_CATCH_UP)


def candidate_dates(since: datetime, until: datetime, offset: timedelta) -> tuple[date, date]:
    """The date values whose moment may lie in ``(since, until]`` in some time zone.

    Local wall clocks are within :data:`MAX_UTC_OFFSET` of UTC, so a date value ``d`` fires at
    ``d 00:00 + 06:00 + offset`` local, i.e. within ±14 h of that wall time read as UTC. The
    range is inclusive and a little wide; callers check each account's exact moment.
    """
    lo = since.astimezone(UTC).replace(tzinfo=None)
    hi = until.astimezone(UTC).replace(tzinfo=None)
    shift = timedelta(hours=TRIGGER_TIME.hour, minutes=TRIGGER_TIME.minute) + offset
    return (lo - MAX_UTC_OFFSET - shift).date(), (hi + MAX_UTC_OFFSET - shift).date()


def sweep_cursor_name(playbook: str) -> str:
    """The store cursor holding how far the date sweep got for a playbook."""
    return f"date-sweep/{playbook}"


class SweepPage(Data):
    """Where the next page of a sweep starts: a playbook and, within it, a keyset position."""

    playbook: str
    after_date: date | None = None
    """Renewal-date path: the last (renewal_date, account id) scanned."""
    after_id: str | None = None


class SweepInput(Data):
    """One page of the `sweep_date_triggers` activity."""

    now: datetime
    """The sweep's clock: moments up to this one are due (passed in: activities never read the clock)."""
    playbook: str | None = None
    """Sweep only this playbook; None sweeps every deployed date-triggered playbook in turn."""
    page: SweepPage | None = None
    """None for the first page; then the previous result's `next`."""
    limit: int = Field(default=1000, ge=1, le=10_000)
    """Accounts read per page (bounds the activity's memory and each store transaction)."""


class SweepPageResult(Data):
    """What one page did."""

    playbook: str | None = None
    """The playbook this page swept (None: no date-triggered playbook is deployed)."""
    scanned: int = 0
    """Candidate accounts read from the store."""
    due: int = 0
    """Candidates whose moment lies in the window and that had not fired for that date value."""
    fired: int = 0
    """Accounts signalled to start the playbook (and recorded as fired)."""
    skipped: int = 0
    """Due accounts not started: `when` false, or an expression or time zone that failed."""
    window_start: datetime | None = None
    """The window's exclusive start (the cursor, or the first deploy; earlier with catch_up)."""
    done: bool = False
    """True on the playbook's last page: its cursor has moved to `now`."""
    next: SweepPage | None = None
    """The next page to sweep, None when the whole sweep is done."""


class DateSweepInput(Data):
    """Input of the `DateSweep` workflow (what the hourly Temporal Schedule starts it with)."""

    now: datetime | None = None
    """Sweep as of this moment; default: the Schedule's scheduled time, else `workflow.now()`."""
    playbook: str | None = None
    """Sweep one playbook only (None: every deployed date-triggered playbook)."""
    limit: int = Field(default=1000, ge=1, le=10_000)


class PlaybookSweep(Data):
    """The totals of one playbook in one sweep."""

    scanned: int = 0
    due: int = 0
    fired: int = 0
    skipped: int = 0
    pages: int = 0
    window_start: datetime | None = None


class DateSweepResult(Data):
    """What a `DateSweep` did, per playbook."""

    now: datetime
    playbooks: dict[str, PlaybookSweep] = Field(default_factory=dict)

    @property
    def fired(self) -> int:
        """Accounts started across all playbooks."""
        return sum(p.fired for p in self.playbooks.values())

    @property
    def scanned(self) -> int:
        """Candidate accounts read across all playbooks."""
        return sum(p.scanned for p in self.playbooks.values())
