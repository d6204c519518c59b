"""The failure drills at small size (`python -m bench --drills --quick`): nothing lost, nothing doubled.

Real parts only: dev servers from the wheel, worker processes (`python worker.py`) and the whole
`touchpoint dev` stack killed with SIGKILL, SQLite and PostgreSQL stores, and the SendGrid,
HubSpot and webhook stand-ins on 127.0.0.1. A killed worker's activity in flight is retried when
its start-to-close timeout (60 s) runs out, so the kill drills take about a minute: they run side
by side in one test.
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from bench.drill_support import DrillResult, Reaper, python, tally
from bench.drills import quiet_sdk_logs, registry
from bench.run import DRILLS

ROOT = Path(__file__).resolve().parent.parent


def children() -> set[int]:
    """Live (non-zombie) processes whose parent is this test process."""
    found = set()
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            if int(fields[1]) == os.getpid() and fields[0] != "Z":
                found.add(int(entry.name))
    return found


def drill_processes() -> list[str]:
    """Command lines of processes running in a drill's folder (a stack's Temporal server)."""
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
            except OSError:
                continue
            if "touchpoint-drill-" in cmdline:
                found.append(cmdline)
    return found


async def quick(name: str) -> DrillResult:
    fn, _, small = registry()[name]
    return await fn(**small)


def assert_clean(result: DrillResult) -> None:
    assert result.error is None, (result.error, result.detail)
    assert (result.lost, result.doubled) == (0, 0), result.detail
    assert result.delivered == result.expected > 0


def test_drills_registry_matches_the_cli() -> None:
    assert tuple(registry()) == DRILLS


def test_drills_tally_counts_lost_doubled_and_unasked() -> None:
    assert tally(["a", "b", "c"], ["a", "a", "b", "x"]) == (2, 1, 2)
    assert tally(["a"], []) == (0, 1, 0)


def test_drills_reaper_kills_a_whole_group_even_when_the_drill_fails() -> None:
    grandchild = "import subprocess, sys, time; subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(120)']); print('up', flush=True); time.sleep(120)"
    before = children()
    with pytest.raises(RuntimeError, match="drill failed"), Reaper() as reaper:
        leader = reaper.spawn(python("-c", grandchild), env=os.environ, group=True)
        plain = reaper.spawn(python("-c", "import time; time.sleep(120)"), env=os.environ)
        for _ in range(200):
            if len([p for p in Path("/proc").iterdir() if p.name.isdigit() and _group(p) == leader.pid]) >= 2:
                break
            time.sleep(0.05)
        raise RuntimeError("drill failed")
    assert leader.returncode is not None and plain.returncode is not None
    # The grandchild is gone too (a zombie left for the suite's subreaper does not run).
    for _ in range(100):
        if not [p for p in Path("/proc").iterdir() if p.name.isdigit() and _group(p) == leader.pid and _state(p) != "Z"]:
            break
        time.sleep(0.05)
    else:
        raise AssertionError("a process of the drill's group is still running")
    assert children() == before


def _state(proc: Path) -> str:
    try:
        return (proc / "stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return "?"


def _group(proc: Path) -> int:
    try:
        return int((proc / "stat").read_text().rsplit(")", 1)[1].split()[2])
    except (OSError, IndexError, ValueError):
        return -1


async def test_drills_kill_9_of_workers_and_of_the_dev_stack_lose_and_double_nothing() -> None:
    quiet_sdk_logs()
    before, others = children(), set(drill_processes())
    results = await asyncio.gather(quick("worker-kills-sqlite"), quick("worker-kills-postgresql"), quick("stack-kills"))
    for result in results:
        assert_clean(result)
        kills = result.detail["kills"]
        assert kills == len(result.detail["emails_at_kill"]) >= 2
        # The kills came while the work was in flight, not after it.
        assert min(result.detail["emails_at_kill"]) < result.expected // 2, result.detail
        assert result.detail["runs_ended"] == result.expected // 2
    # A killed stack's Temporal server exits on its parent's death (PR_SET_PDEATHSIG), a moment
    # later; meanwhile the suite's subreaper is its parent. Nothing may outlive that moment.
    for _ in range(200):
        if children() == before and set(drill_processes()) <= others:
            break
        await asyncio.sleep(0.05)
    assert children() == before
    assert set(drill_processes()) <= others  # no stack's Temporal server outlived its drill


async def test_drills_sendgrid_storm_sends_every_email_once() -> None:
    quiet_sdk_logs()
    result = await quick("sendgrid-storm")
    assert_clean(result)
    refused = result.detail["refused"]
    assert sum(refused.values()) > 0 and result.detail["requests"] == result.expected + sum(refused.values())


async def test_drills_flaky_webhook_endpoint_gets_every_call_once() -> None:
    quiet_sdk_logs()
    result = await quick("webhook-flaky")
    assert_clean(result)
    assert sum(result.detail["refused"].values()) > 0
    assert result.detail["distinct_idempotency_keys"] == result.expected


async def test_drills_crm_rate_limited_every_third_call_loses_no_company_or_event() -> None:
    quiet_sdk_logs()
    result = await quick("crm-rate-limit")
    assert_clean(result)
    assert result.detail["backfill"]["rate_limited"] > 0 and result.detail["sync"]["rate_limited"] > 0
    assert result.detail["imported"]["delivered"] == result.detail["backfill"]["read"] == 300


def test_drills_cli_runs_a_drill_and_writes_its_results(tmp_path: Path) -> None:
    out = tmp_path / "drills.json"
    env = {**os.environ, "PYTHONPATH": str(ROOT), "NO_PROXY": "127.0.0.1,localhost", "COLUMNS": "200"}
    done = subprocess.run(
        [sys.executable, "-m", "bench", "--drills", "--quick", "--only-drills", "webhook-flaky", "--out", str(out)],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=240,
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    data = json.loads(out.read_text())
    assert list(data["drills"]) == ["webhook-flaky"] and data["quick"] is True
    drill = data["drills"]["webhook-flaky"]
    assert (drill["lost"], drill["doubled"], drill["ok"]) == (0, 0, True)
    assert "Failure drills" in done.stdout
