"""Scenario 4: the longest shipped playbook simulated end to end, wall time.

Touchpoint: `touchpoint simulate --json` as a new process (process start included), which hosts
the run without a server; also `touchpoint.simulate.simulate` in-process, and the same run on
the time-skipping server (`simulate_on_server`). Bare Temporal: the time-skipping server's start,
a worker and one workflow doing as many activities as the simulation's timeline has side effects,
spread over as many simulated days.
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

from temporalio.worker import Worker

from bench.baseline import WORKFLOWS, BareActivities
from bench.common import Figure, Scenario
from touchpoint.dsl.validate import load_project
from touchpoint.dsl.walk import count_steps
from touchpoint.simulate import simulate, simulate_on_server
from touchpoint.temporal_server import start_time_skipping

ROOT = Path(__file__).resolve().parent.parent
EFFECTS = ("email", "task", "note", "update", "webhook")


def longest_playbook(folder: Path) -> tuple[Path, list[str]]:
    """The valid shipped playbook with the most lines, and why longer ones were skipped.

    Raises:
        FileNotFoundError: when no playbook in ``folder`` is valid.
    """
    files = [f for f in folder.glob("*.yaml") if f.name not in ("workspace.yaml", "health.yaml")]
    skipped: list[str] = []
    for file in sorted(files, key=lambda f: len(f.read_text().splitlines()), reverse=True):
        problems = load_project(file).problems
        if not problems:
            return file, skipped
        skipped.append(f"{file.name} skipped: {len(problems)} validation problem(s), first: {problems[0]}")
    raise FileNotFoundError(f"no valid playbook in {folder}: the simulation scenario needs one")


def sample_account(folder: Path, playbook: Path) -> Path:
    """The sample account that fits the playbook best: one named in its file name, else scale."""
    samples = sorted((folder / "samples").glob("*.yaml"))
    for sample in samples:
        if sample.stem in playbook.stem.split("-"):
            return sample
    fallback = folder / "samples" / "scale.yaml"
    if fallback.exists():
        return fallback
    if samples:
        return samples[0]
    raise FileNotFoundError(f"no sample accounts in {folder / 'samples'}")


async def bare_journey(activities: int, days: float) -> float:
    """Wall seconds for the baseline, including the test server's start and stop."""
    begin = time.monotonic()
    env = await start_time_skipping()
    try:
        queue = f"bare-{uuid.uuid4().hex[:8]}"
        with tempfile.TemporaryDirectory(prefix="touchpoint-bench-") as tmp:
            async with Worker(env.client, task_queue=queue, workflows=WORKFLOWS, activities=BareActivities(Path(tmp) / "bare.db").all()):
                await env.client.execute_workflow("BareJourney", args=[activities, days], id=queue, task_queue=queue)
    finally:
        await env.shutdown()
    return time.monotonic() - begin


async def run(folder: Path | None = None) -> Scenario:
    """Simulate the longest playbook in ``folder`` (default: the repository's playbooks/)."""
    folder = folder or ROOT / "playbooks"
    playbook, skipped = longest_playbook(folder)
    account = sample_account(folder, playbook)
    steps = sum(count_steps(lp.playbook) for lp in load_project(playbook).playbooks.values())
    begin = time.monotonic()
    result = simulate(playbook, account)
    in_process = time.monotonic() - begin
    # The `touchpoint` console script, as people run it, with a cache folder of its own: the
    # first run fills the CLI's cache (`touchpoint.cache`), the next ones are runs while writing.
    script = Path(sys.executable).with_name("touchpoint")
    cli = [str(script), "simulate", str(playbook), "--account", str(account), "--json"]
    with tempfile.TemporaryDirectory(prefix="touchpoint-bench-cache-") as cache_dir:
        env = {**os.environ, "TOUCHPOINT_CACHE_DIR": cache_dir}
        walls = []
        for _ in range(6):
            begin = time.monotonic()
            subprocess.run(cli, check=True, capture_output=True, env=env)
            walls.append(time.monotonic() - begin)
    cold, wall = walls[0], sorted(walls[1:])[2]
    begin = time.monotonic()
    await simulate_on_server(playbook, account)
    on_server = time.monotonic() - begin
    effects = [r for r in result.records if r.action in EFFECTS]
    days = max((r.day for r in result.records), default=0)
    bare = await bare_journey(len(effects), float(max(days, 1)))
    scenario = Scenario(
        "simulation",
        f"Simulation of {playbook.name} ({steps} steps, {len(result.records)} timeline entries, {days} days) for {account.name}",
        "< 0.5 s wall time for `touchpoint simulate`, process start included",
    )
    scenario.figures.append(Figure("wall time (CLI, median of 5 after the first)", "s", round(wall, 3), round(bare, 3), "lower"))
    scenario.figures.append(Figure("wall time (CLI, first run, empty cache)", "s", round(cold, 3), round(bare, 3), "lower"))
    scenario.figures.append(Figure("wall time (in-process)", "s", round(in_process, 3), round(bare, 3), "lower"))
    scenario.figures.append(Figure("wall time (time-skipping server)", "s", round(on_server, 3), round(bare, 3), "lower"))
    scenario.met = wall < 0.5
    scenario.extra = {"playbook": playbook.name, "account": account.name, "outcome": result.outcome, "side_effects": len(effects), "days": days}
    scenario.notes += skipped
    scenario.notes.append(f"Baseline: one bare workflow with {len(effects)} activities over {days} simulated days on the same time-skipping server.")
    return scenario
