"""The README's main job: `touchpoint demo` on the embedded default stack, as a user runs it."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

from touchpoint.temporal_server import free_port

ROOT = Path(__file__).resolve().parent.parent


def test_demo_starts_the_stack_and_shows_touchpoints(tmp_path: Path) -> None:
    shutil.copytree(ROOT / "playbooks", tmp_path / "playbooks")
    env = {
        **os.environ,
        "TOUCHPOINT_TEMPORAL_ADDRESS": f"127.0.0.1:{free_port()}",
        "TOUCHPOINT_API_BIND": f"127.0.0.1:{free_port()}",
        "PYTHONPATH": str(ROOT),
        "COLUMNS": "200",
    }
    result = subprocess.run(
        [sys.executable, "-m", "touchpoint.cli.main", "demo", "--timeout", "60"],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=180,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    out = result.stdout
    assert "added     onboarding-scale" in out
    assert "Runs started (2)" in out
    assert "Willkommen bei Example, Rheinwerk GmbH!" in out
    assert "Admin setup call with Northwind Traders" in out
    assert len(list((tmp_path / ".touchpoint" / "outbox").glob("*.eml"))) >= 2
