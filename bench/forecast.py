"""Scenario: `touchpoint forecast` of the scale onboarding over 10,000 accounts for 90 days.

Touchpoint: the `touchpoint forecast ... --accounts store --json` console script as a new
process (process start, reading 10,000 accounts from a SQLite store, the runs on every core,
the JSON out), and `touchpoint.forecast.forecast` in-process on one core, with and without
replays (accounts that would decide alike counted from a recorded run). Baseline: what the
naive way costs, `touchpoint.simulate.simulate` called once per account one after the other
(measured on a sample of accounts and scaled to the whole book: running it 10,000 times would
take the bench most of an hour).

Every generated account enrolls (a mid-market or scale segment, not yet onboarded), with two
contacts in its own zone and country, one of 25 CSMs, and seats and metrics spread at random:
a 90-day onboarding of welcome, reminders, three "aha" emails, a training invite, tasks and
checkpoints for each.
"""

from __future__ import annotations

import json
import os
import random
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from bench.common import Figure, Scenario

ROOT = Path(__file__).resolve().parent.parent
PLAYBOOK = ROOT / "playbooks" / "onboarding-scale.yaml"
ZONES = [("America/New_York", "US"), ("America/Chicago", "US"), ("America/Los_Angeles", "US"), ("Europe/Berlin", "DE"), ("Europe/London", "GB"), ("Asia/Tokyo", "JP")]
START = datetime(2026, 9, 7, 4, 0, tzinfo=UTC)
"""A Monday, midnight in New York (the shipped workspace's zone): exactly 90 days of window."""


def portfolio(count: int, *, seed: int = 7) -> list[dict[str, Any]]:
    """``count`` account documents the scale onboarding enrolls, spread at random (reproducibly)."""
    rng = random.Random(seed)
    accounts = []
    for i in range(count):
        tz, country = rng.choice(ZONES)
        licensed = rng.randint(20, 900)
        csm = rng.randrange(25)
        accounts.append(
            {
                "id": f"acct-{i:05d}",
                "name": f"Account {i}",
                "segment": "mid-market" if licensed >= 200 else "scale",
                "country": country,
                "timezone": tz,
                "arr": licensed * rng.choice([180, 240, 300]),
                "seats": {"licensed": licensed, "active": rng.randint(0, licensed)},
                "csm": {"name": f"CSM {csm}", "email": f"csm{csm}@example.com"},
                "contacts": [
                    {"email": f"champion@acct-{i}.example", "name": "Kim", "role": "champion", "timezone": tz, "country": country},
                    {"email": f"it@acct-{i}.example", "role": "admin"},
                ],
                "metrics": {"weekly_active_users": rng.randint(0, licensed), "integrations": rng.randint(0, 3)},
                "properties": {"industry": rng.choice(["software", "retail", "logistics"])},
            }
        )
    return accounts


def fill_store(url: str, accounts: list[dict[str, Any]]) -> None:
    """Write ``accounts`` into a fresh store at ``url`` (setup, not measured)."""
    from touchpoint.store import make_engine, migrate, session_factory
    from touchpoint.store.accounts import upsert_account

    engine = make_engine(url)
    migrate(engine)
    try:
        with session_factory(engine).begin() as s:
            for doc in accounts:
                upsert_account(s, {k: v for k, v in doc.items() if k != "contacts"}, doc["contacts"])
    finally:
        engine.dispose()


def baseline(accounts: list[dict[str, Any]], folder: Path, sample: int) -> float:
    """Seconds for `simulate` once per account, measured on ``sample`` accounts and scaled."""
    from touchpoint.simulate import simulate

    step = max(1, len(accounts) // sample)
    chosen = accounts[::step][:sample]
    files = []
    for doc in chosen:
        file = folder / f"{doc['id']}.json"
        file.write_text(json.dumps(doc))
        files.append(file)
    begin = time.monotonic()
    for file in files:
        simulate(PLAYBOOK, file, start=START, days=90)
    return (time.monotonic() - begin) / len(files) * len(accounts)


def run(count: int = 10_000, *, sample: int = 200) -> Scenario:
    """Forecast ``count`` accounts x 90 days; the goal is under 10 s for 10,000 on this machine."""
    from touchpoint.forecast import forecast

    accounts = portfolio(count)
    with tempfile.TemporaryDirectory(prefix="touchpoint-bench-forecast-") as tmp:
        folder = Path(tmp)
        url = f"sqlite:///{folder / 'store.db'}"
        fill_store(url, accounts)
        book = folder / "book.json"
        book.write_text(json.dumps(accounts))
        script = Path(sys.executable).with_name("touchpoint")
        cli = [str(script), "forecast", str(PLAYBOOK), "--accounts", "store", "--days", "90", "--start", START.isoformat(), "--json"]
        env = {**os.environ, "TOUCHPOINT_DATABASE_URL": url, "TOUCHPOINT_CACHE_DIR": str(folder / "cache")}
        walls = []
        for _ in range(3):
            begin = time.monotonic()
            done = subprocess.run(cli, check=True, capture_output=True, text=True, env=env)
            walls.append(time.monotonic() - begin)
        wall = sorted(walls)[1]
        summary = json.loads(done.stdout.splitlines()[-1])["summary"]
        begin = time.monotonic()
        one_core = forecast(PLAYBOOK, accounts=book, days=90, start=START, jobs=1)
        in_process = time.monotonic() - begin
        begin = time.monotonic()
        forecast(PLAYBOOK, accounts=book, days=90, start=START, jobs=1, replay=False)
        in_full = time.monotonic() - begin
        naive = baseline(accounts, folder, min(sample, count))
    scenario = Scenario(
        "forecast",
        f"Forecast of {PLAYBOOK.name} over {count:,} accounts x 90 days ({summary['accounts']:,} enrolled: {summary['emails']:,} emails, {summary['tasks']:,} tasks)",
        f"< 10 s wall time for 10,000 accounts x 90 days on {os.cpu_count()} cores, process start included",
    )
    scenario.figures.append(Figure(f"wall time, {count:,} accounts (CLI from the store, median of 3)", "s", round(wall, 3), round(naive, 3), "lower"))
    scenario.figures.append(Figure(f"wall time, {count:,} accounts (in-process, one core)", "s", round(in_process, 3), round(naive, 3), "lower"))
    scenario.figures.append(Figure(f"wall time, {count:,} accounts (in-process, one core, every account run in full)", "s", round(in_full, 3), round(naive, 3), "lower"))
    scenario.figures.append(Figure("per account (in-process, one core)", "ms", round(in_process / count * 1000, 3), round(naive / count * 1000, 3), "lower"))
    scenario.met = wall < 10 * count / 10_000
    scenario.extra = {
        "accounts": count,
        "summary": summary,
        "outcomes": dict(one_core.tally.outcomes),
        "replayed": one_core.tally.replayed,
        "cli_walls": [round(w, 3) for w in walls],
    }
    scenario.notes.append(
        f"{one_core.tally.replayed:,} of {count:,} accounts were counted by replaying a recorded run (same fingerprint, every account-reading "
        "expression with the same outcome; touchpoint/forecast_replay.py); the third figure runs every account in full."
    )
    scenario.notes.append(
        f"Baseline: `touchpoint.simulate.simulate` of the same playbook once per account, one after the other, in-process ({min(sample, count)} accounts measured, scaled to {count:,})."
    )
    return scenario


if __name__ == "__main__":
    n = int(sys.argv[1]) if len(sys.argv) > 1 else 10_000
    result = run(n)
    print(json.dumps(result.as_json(), indent=2))
