"""Scenario 6: the hourly date sweep over 100,000 accounts (issue #9).

Touchpoint: the `sweep_date_triggers` activity, page by page, against a SQLite store holding N
accounts with renewal dates spread over a year in seven time zones and one playbook
`{date: account.renewal_date, offset: -120d}`. Measured: candidate selection and the fire
decision (`when`, once per date value, the fired rows and the cursor), for one hourly sweep and
for a sweep after a day of downtime (~1/365 of the accounts fire). Starting the runs is Temporal's
cost (one signal-with-start per fired account, 32 in flight): the bench counts them instead.

The baseline is the naive sweep without the index: read every account and compute its moment in
Python (the floor of any design that keeps no per-account timer and no date index).
"""

from __future__ import annotations

import asyncio
import random
import tempfile
import time
import tracemalloc
from collections.abc import Awaitable, Callable
from datetime import UTC, date, datetime, timedelta
from functools import partial
from pathlib import Path
from typing import Any, TypeVar

from sqlalchemy import delete, insert, select

from activities.deps import Deps
from activities.sweep import SweepActivities
from bench.common import WORKSPACE, Figure, Scenario, rss_kb, write_project
from touchpoint.config import load_settings
from touchpoint.deploy import deploy_project
from touchpoint.dsl.runtime import StartRequest
from touchpoint.dsl.sweep_models import SweepInput, SweepPageResult, sweep_cursor_name, trigger_moment
from touchpoint.dsl.validate import load_project
from touchpoint.store import Account, DateTriggerFired, repo

T = TypeVar("T")
PLAYBOOK = """\
playbook: renewal
trigger: {date: account.renewal_date, offset: -120d, when: "account.plan != 'churned'"}
steps:
  - note: {text: "renewal in 120 days"}
"""
ZONES = ("UTC", "America/Los_Angeles", "America/New_York", "Europe/Berlin", "Asia/Kolkata", "Asia/Tokyo", "Pacific/Auckland")
OFFSET = timedelta(days=-120)
BATCH = 5000


def seed(deps: Deps, count: int, today: date) -> list[tuple[str, date, str]]:
    """``count`` accounts, renewal dates uniform over the coming year; returns (id, date, zone)."""
    rng = random.Random(365)
    accounts = [(f"acct-{i:07d}", today + timedelta(days=rng.randrange(365)), rng.choice(ZONES)) for i in range(count)]
    for begin in range(0, count, BATCH):
        rows = [
            {
                "id": key,
                "name": key,
                "timezone": tz,
                "renewal_date": day,
                "doc": {"id": key, "name": f"Bench {key}", "timezone": tz, "renewal_date": day.isoformat(), "plan": "business"},
            }
            for key, day, tz in accounts[begin : begin + BATCH]
        ]
        with deps.sessions.begin() as s:
            s.execute(insert(Account), rows)
    return accounts


class Counter:
    """Stands in for the signal-with-start: counts the accounts the sweep decided to start."""

    def __init__(self) -> None:
        self.started: list[str] = []

    async def __call__(self, account_id: str, request: StartRequest) -> None:
        self.started.append(account_id)


async def sweep(deps: Deps, now: datetime) -> tuple[SweepPageResult, int]:
    """Every page of one sweep; the totals and the accounts started."""
    counter = Counter()
    activities = SweepActivities(deps, starter=counter)
    total, page = SweepPageResult(), None
    while True:
        result = await activities.sweep_date_triggers(SweepInput(now=now, page=page, limit=1000))
        total.scanned += result.scanned
        total.due += result.due
        total.fired += result.fired
        if result.next is None:
            return total, len(counter.started)
        page = result.next


def full_scan(deps: Deps, since: datetime, now: datetime) -> int:
    """The baseline: every account read, every moment computed (no index, no fired check)."""
    due = 0
    with deps.sessions() as s:
        query = select(Account.doc).execution_options(yield_per=1000)
        for (doc,) in s.execute(query):
            moment = trigger_moment(date.fromisoformat(doc["renewal_date"]), OFFSET, doc.get("timezone") or "UTC")
            due += since < moment <= now
    return due


async def measure(work: Callable[[], Awaitable[T]], reset: Callable[[], None]) -> tuple[T, float, float]:
    """(result, wall seconds, peak Python heap MB): timed untraced, then ``reset`` and traced."""
    reset()
    begin = time.monotonic()
    result = await work()
    wall = time.monotonic() - begin
    reset()  # tracemalloc slows allocation-heavy code several-fold: trace a second, identical run
    tracemalloc.start()
    try:
        await work()
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    return result, wall, peak / 2**20


def rewind(deps: Deps, since: datetime) -> None:
    """The store as the previous sweep left it: swept until ``since``, nothing fired after it."""
    with deps.sessions.begin() as s:
        s.execute(delete(DateTriggerFired))
        repo.set_cursor(s, sweep_cursor_name("renewal"), at=since)


async def run(count: int = 100_000) -> Scenario:
    """Seed ``count`` accounts, then time an hourly sweep and a one-day catch-up sweep."""
    with tempfile.TemporaryDirectory(prefix="touchpoint-bench-") as tmp:
        root = Path(tmp)
        settings = load_settings(home=root / "home", database_url=f"sqlite:///{root}/store.db")
        deps = Deps.from_settings(settings)
        try:
            folder = write_project(root / "playbooks", {"renewal": PLAYBOOK})
            (folder / "workspace.yaml").write_text(WORKSPACE)
            with deps.sessions.begin() as s:
                deploy_project(s, load_project(folder))
            today = datetime.now(UTC).date()
            begin = time.monotonic()
            await asyncio.to_thread(seed, deps, count, today + timedelta(days=120))
            seeded = time.monotonic() - begin
            # A month ahead; the hourly sweep's hour holds 06:00 UTC, when the UTC accounts fire.
            at = datetime.combine(today + timedelta(days=30), datetime.min.time(), tzinfo=UTC) + timedelta(hours=6, minutes=30)
            figures: dict[str, Any] = {}
            # The previous sweep ran an hour before (the hourly case) or a day before (a missed day).
            windows = {"hourly": (at - timedelta(hours=1), at), "daily": (at + timedelta(days=1), at + timedelta(days=2))}
            for label, (since, now) in windows.items():
                reset = partial(rewind, deps, since)
                (total, started), wall, peak = await measure(partial(sweep, deps, now), reset)
                expected, bare_wall, bare_peak = await measure(partial(asyncio.to_thread, full_scan, deps, since, now), reset)
                if started != expected or total.fired != expected:
                    raise RuntimeError(f"{label}: the sweep started {started} accounts, the full scan finds {expected} due")
                figures[label] = {"wall": wall, "peak": peak, "bare_wall": bare_wall, "bare_peak": bare_peak, "scanned": total.scanned, "fired": total.fired}
        finally:
            await deps.close()
    hourly, daily = figures["hourly"], figures["daily"]
    scenario = Scenario("sweep", f"Date sweep over {count:,} accounts (renewal -120d, 7 zones)", "hourly sweep < 1 s and < 50 MB for 100k accounts")
    scenario.figures += [
        Figure("hourly sweep wall time", "s", round(hourly["wall"], 4), round(hourly["bare_wall"], 4), "lower"),
        Figure("hourly sweep peak Python heap", "MB", round(hourly["peak"], 2), round(hourly["bare_peak"], 2), "lower"),
        Figure("1-day catch-up sweep wall time", "s", round(daily["wall"], 4), round(daily["bare_wall"], 4), "lower"),
        Figure("1-day catch-up sweep peak Python heap", "MB", round(daily["peak"], 2), round(daily["bare_peak"], 2), "lower"),
    ]
    scenario.met = hourly["wall"] < 1.0 and hourly["peak"] < 50
    scenario.notes += [
        f"Hourly: {hourly['scanned']:,} accounts read, {hourly['fired']} started; 1-day window: {daily['scanned']:,} read, "
        f"{daily['fired']} started (~1/365 of {count:,}). Seeding took {seeded:.1f} s.",
        "Baseline: reading every account and computing its moment in Python (no index), the same windows.",
        "Starting runs is not timed: one signal-with-start per started account, 32 in flight.",
        f"Peak heap by tracemalloc on a second identical run; bench process peak RSS {rss_kb()[1] / 1024:.0f} MB (store seeding included).",
    ]
    scenario.extra.update({"hourly": hourly, "daily": daily, "accounts": count})
    return scenario
