"""The analytics rollups: counts kept current as runs move, emails go out and engagement comes in.

`touchpoint analytics`, `GET /playbooks/{id}/analytics` and the console's playbook page read
these small tables instead of scanning `runs`, `run_steps` and `messages` (300,000 runs and
2,000,000 messages answer in milliseconds). Every count is keyed by the run's enrollment day
(UTC), so `--since DATE` is a sum over a range of days. `touchpoint/store/rollups.py` writes
them, in the transaction of the row that changes a count (migration 0009 creates and fills them).
"""

from __future__ import annotations

import datetime as dt

from sqlalchemy import Boolean, Integer, String
from sqlalchemy.orm import Mapped, mapped_column

from .models import Base


class RunRollup(Base):
    """How many runs are in each state: a run counts once, under the key of its current row."""

    __tablename__ = "analytics_runs"

    playbook_id: Mapped[str] = mapped_column(String, primary_key=True)
    version: Mapped[str] = mapped_column(String, primary_key=True)
    day: Mapped[dt.date] = mapped_column(primary_key=True)
    """The run's enrollment day (UTC)."""
    variant: Mapped[str] = mapped_column(String, primary_key=True)
    """`Run.variant`, or '' before or without a `split`."""
    held_out: Mapped[bool] = mapped_column(Boolean, primary_key=True)
    status: Mapped[str] = mapped_column(String, primary_key=True)
    outcome: Mapped[str] = mapped_column(String, primary_key=True)
    """'' while the run is in flight."""
    window: Mapped[str] = mapped_column(String, primary_key=True)
    """'none' without a holdout window; else 'reached' (converted by `enrolled_until`) or 'missed'."""
    runs: Mapped[int] = mapped_column(Integer, default=0)


class StepRollup(Base):
    """Per step: runs that entered, passed, skipped or failed it, and its emails by what became of them."""

    __tablename__ = "analytics_steps"

    playbook_id: Mapped[str] = mapped_column(String, primary_key=True)
    version: Mapped[str] = mapped_column(String, primary_key=True)
    day: Mapped[dt.date] = mapped_column(primary_key=True)
    step: Mapped[str] = mapped_column(String, primary_key=True)
    metric: Mapped[str] = mapped_column(String, primary_key=True)
    """A reach (`entered`, `passed`, `skipped`, `failed`: runs) or an email count (`held`, `email:<status>`,
    `delivered`, `opened`, `clicked`, `bounced`, `unsubscribed`: emails)."""
    count: Mapped[int] = mapped_column(Integer, default=0)


class GapRollup(Base):
    """A histogram of the time from a run's previous step (or its start) to its entering this one."""

    __tablename__ = "analytics_gaps"

    playbook_id: Mapped[str] = mapped_column(String, primary_key=True)
    version: Mapped[str] = mapped_column(String, primary_key=True)
    day: Mapped[dt.date] = mapped_column(primary_key=True)
    step: Mapped[str] = mapped_column(String, primary_key=True)
    bucket: Mapped[int] = mapped_column(Integer, primary_key=True)
    """Quarter-octaves of seconds: floor(4 × log2(seconds)), 0 for a second or less."""
    count: Mapped[int] = mapped_column(Integer, default=0)


class EngagementMark(Base):
    """A message already counted for an engagement metric: a second open of one email, or a
    provider's retry, counts once."""

    __tablename__ = "analytics_marks"

    message_id: Mapped[str] = mapped_column(String, primary_key=True)
    metric: Mapped[str] = mapped_column(String, primary_key=True)
