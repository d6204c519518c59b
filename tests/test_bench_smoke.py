"""The bench at tiny N: every scenario runs and reports a baseline and a ratio (speed is not asserted)."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

from bench.markdown import render
from bench.run import SCENARIOS, parse_args

ROOT = Path(__file__).resolve().parent.parent
TINY = ["--quick", "--accounts", "10", "--events", "6", "--rate", "10", "--parked", "20", "--resume", "10", "--resume-wait", "2", "--playbooks", "5", "--migrate", "20",
        "--event-accounts", "5", "--quiet-events", "200", "--listened-events", "20", "--mixed-events", "100", "--bare-events", "20", "--forecast-accounts", "100"]


def test_bench_smoke_reports_every_scenario_with_baseline_and_ratio(tmp_path: Path) -> None:
    out = tmp_path / "results.json"
    env = {**os.environ, "PYTHONPATH": str(ROOT), "NO_PROXY": "127.0.0.1,localhost", "COLUMNS": "200"}
    result = subprocess.run(
        [sys.executable, "-m", "bench", *TINY, "--out", str(out)],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=240,
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    data = json.loads(out.read_text())
    assert set(data["scenarios"]) == set(SCENARIOS)
    assert data["machine"]["nproc"] >= 1
    for key, scenario in data["scenarios"].items():
        assert scenario["figures"], key
        assert isinstance(scenario["met"], bool), key
        for figure in scenario["figures"]:
            assert figure["baseline"] > 0, (key, figure)
            assert math.isfinite(figure["ratio"]) and figure["ratio"] > 0, (key, figure)
            assert figure["ratio"] == round(figure["touchpoint"] / figure["baseline"], 3), (key, figure)
    names = [f["name"] for f in data["scenarios"]["enrollment"]["figures"]]
    assert any("2 worker processes" in n for n in names)
    assert [n for n in names if n.startswith("CPU per enrollment")] == [
        "CPU per enrollment, new accounts: dev server",
        "CPU per enrollment, new accounts: worker process",
    ]
    assert [n for n in names if n.startswith("design ceiling")] == ["design ceiling, new accounts: bare account workflow, 2 local activities + 2 activities, 1 worker process"]
    ceiling = data["scenarios"]["enrollment"]["extra"]["design_ceiling"]
    assert ceiling["server_cpu_ms"] > 0 and ceiling["worker_cpu_ms"] > 0
    assert [f["name"][:3] for f in data["scenarios"]["latency"]["figures"]] == ["p50", "p95", "p99"]
    events = data["scenarios"]["events"]["extra"]["touchpoint"]
    assert (events["quiet"]["listened"], events["listened"]["listened"], events["mixed"]["listened"]) == (0, 20, 10)
    parked = data["scenarios"]["parked"]["extra"]
    assert parked["touchpoint"]["resumed"] == parked["baseline"]["resumed"] == 10
    assert parked["touchpoint"]["still_parked"] == parked["baseline"]["still_parked"] == 20
    forecast = data["scenarios"]["forecast"]["extra"]
    assert forecast["accounts"] == forecast["summary"]["accounts"] == 100
    assert forecast["summary"]["emails"] > 0 and forecast["summary"]["tasks"] > 0
    table = render(data)
    assert all(f"| {key} |" in table for key in SCENARIOS)
    assert "Touchpoint vs bare Temporal" in result.stdout


def test_bench_smoke_quick_shrinks_defaults() -> None:
    quick, full = parse_args(["--quick"]), parse_args([])
    assert (quick.accounts, quick.parked, quick.events) == (50, 200, 20)
    assert (full.accounts, full.parked, full.events, full.rate) == (2000, 20000, 300, 5.0)
    assert parse_args(["--quick", "--parked", "7"]).parked == 7
