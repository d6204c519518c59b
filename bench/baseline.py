"""Bare Temporal: the minimal workflows Touchpoint is measured against.

Each does the same number of activities as the Touchpoint path it stands beside, and each
activity writes one row to a SQLite file, so "the email exists in the store" means the same
thing on both sides. Workflow code imports only the standard library and temporalio.
"""

from __future__ import annotations

import asyncio
import sqlite3
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

from temporalio import activity, workflow

OPTIONS: dict[str, Any] = {"start_to_close_timeout": timedelta(seconds=30)}


@workflow.defn(name="BareEnroll")
class BareEnroll:
    """Two activities, like a playbook sending one email and creating one task."""

    @workflow.run
    async def run(self, key: str) -> None:
        await workflow.execute_activity("bare_effect", args=[key, "email"], **OPTIONS)
        await workflow.execute_activity("bare_effect", args=[key, "task"], **OPTIONS)


@workflow.defn(name="BareAccount")
class BareAccount:
    """Touchpoint's shape with nothing of Touchpoint in it: one workflow per account,
    signalled-with-start by each event, doing per event what the account workflow does for a new
    account's enrollment: one store step as a local activity (read the context and record the
    event, as `apply_first`), the two side effects as activities, and one more local activity (the
    run's final projection). It never ends (an account workflow waits for the next event)."""

    def __init__(self) -> None:
        self.pending: list[str] = []

    @workflow.signal(name="ingest")
    def ingest(self, key: str) -> None:
        self.pending.append(key)

    @workflow.run
    async def run(self) -> None:
        while True:
            await workflow.wait_condition(lambda: bool(self.pending))
            key = self.pending.pop(0)
            started = workflow.now().isoformat()
            await workflow.execute_local_activity("bare_event", key, **OPTIONS)
            await workflow.execute_activity("bare_effect", args=[key, "email"], **OPTIONS)
            await workflow.execute_activity("bare_effect", args=[key, "task"], **OPTIONS)
            await workflow.execute_local_activity("bare_mark", args=[key, "ended", started, workflow.now().isoformat()], **OPTIONS)


@workflow.defn(name="BareEvents")
class BareEvents:
    """An account's workflow at its thinnest: each event a signal (signal-with-start), recorded by
    one local activity; the least an event that reaches a workflow can cost."""

    def __init__(self) -> None:
        self.pending: list[str] = []

    @workflow.signal(name="ingest")
    def ingest(self, key: str) -> None:
        self.pending.append(key)

    @workflow.run
    async def run(self) -> None:
        while True:
            await workflow.wait_condition(lambda: bool(self.pending))
            await workflow.execute_local_activity("bare_event", self.pending.pop(0), **OPTIONS)


@workflow.defn(name="BarePark")
class BarePark:
    """Records its start, sleeps, records its end (a run parked in a `wait`). Its `move` update
    (the migration bench's baseline) notes a new version and answers, as an account workflow's
    `migrate` does for one run."""

    def __init__(self) -> None:
        self.version = "v1"

    @workflow.update(name="move")
    async def move(self, version: str) -> str:
        before, self.version = self.version, version
        return before

    @workflow.run
    async def run(self, key: str, wait_seconds: float) -> None:
        started = workflow.now()
        # A local activity, as Touchpoint projects a run's status with one.
        await workflow.execute_local_activity("bare_mark", args=[key, "running", started.isoformat(), None], **OPTIONS)
        await workflow.sleep(timedelta(seconds=wait_seconds))
        ended = workflow.now()
        await workflow.execute_local_activity("bare_mark", args=[key, "ended", started.isoformat(), ended.isoformat()], **OPTIONS)


@workflow.defn(name="BareJourney")
class BareJourney:
    """``activities`` activities spread evenly over ``days`` (a simulated journey)."""

    @workflow.run
    async def run(self, activities: int, days: float) -> int:
        gap = timedelta(days=days / max(activities, 1))
        for index in range(activities):
            await workflow.execute_activity("bare_noop", index, **OPTIONS)
            await workflow.sleep(gap)
        return activities


class BareActivities:
    """Writes one row per activity to ``database`` (created on first use, WAL mode)."""

    def __init__(self, database: Path) -> None:
        self.database = database
        with self._connect() as conn:
            conn.execute("PRAGMA journal_mode=wal")
            conn.execute("CREATE TABLE IF NOT EXISTS effects (key TEXT, kind TEXT, PRIMARY KEY (key, kind))")
            conn.execute("CREATE TABLE IF NOT EXISTS runs (key TEXT PRIMARY KEY, status TEXT, started_at TEXT, ended_at TEXT)")
            conn.execute("CREATE TABLE IF NOT EXISTS events (key TEXT PRIMARY KEY)")

    def _connect(self) -> sqlite3.Connection:
        return sqlite3.connect(self.database, timeout=30, isolation_level=None)

    def _write(self, sql: str, values: tuple[Any, ...]) -> None:
        conn = self._connect()
        try:
            conn.execute("PRAGMA synchronous=normal")
            conn.execute(sql, values)
        finally:
            conn.close()

    @activity.defn(name="bare_effect")
    async def bare_effect(self, key: str, kind: str) -> None:
        """One side effect, idempotent on (key, kind)."""
        await asyncio.to_thread(self._write, "INSERT OR IGNORE INTO effects VALUES (?, ?)", (key, kind))

    @activity.defn(name="bare_mark")
    async def bare_mark(self, key: str, status: str, started_at: str, ended_at: str | None) -> None:
        """Upsert a run's status row."""
        await asyncio.to_thread(
            self._write, "INSERT OR REPLACE INTO runs VALUES (?, ?, ?, ?)", (key, status, started_at, ended_at)
        )

    @activity.defn(name="bare_event")
    async def bare_event(self, key: str) -> None:
        """Record an account's event."""
        await asyncio.to_thread(self._write, "INSERT OR IGNORE INTO events VALUES (?)", (key,))

    @activity.defn(name="bare_noop")
    async def bare_noop(self, index: int) -> int:
        """Nothing: the journey baseline measures Temporal alone."""
        return index

    def all(self) -> list[Any]:
        """Every activity, for a worker."""
        return [self.bare_effect, self.bare_mark, self.bare_event, self.bare_noop]


WORKFLOWS: list[type] = [BareEnroll, BareAccount, BareEvents, BarePark, BareJourney]


def lag_seconds(started_at: str, ended_at: str, wait: float) -> float:
    """How late a run woke up: its end minus its start minus the wait."""
    return (datetime.fromisoformat(ended_at) - datetime.fromisoformat(started_at)).total_seconds() - wait
