"""`bench/fuzz.py`'s own logic: it reads schemathesis' summary and it does find a half-applied request."""

from __future__ import annotations

import json
from pathlib import Path

from temporalio.testing import WorkflowEnvironment

from activities.deps import Deps
from bench.fuzz import Exchange, half_applied, summary
from touchpoint.config import load_settings
from touchpoint.store import repo

OUTPUT = """\
Failures:
  ❌ ST205 Allow header mismatch: 2
  ❌ ST103 Undocumented status code: 1

Test cases:
  365 generated, 362 passed, 3 found 3 unique failures, 8 skipped
"""


def test_bench_fuzz_reads_the_summary() -> None:
    assert summary(OUTPUT) == {"cases": 365, "passed": 362, "failures": {"ST205": 2, "ST103": 1}}
    assert summary("Test cases:\n  209 generated, 209 passed, 4 skipped\n") == {"cases": 209, "passed": 209, "failures": {}}


async def test_bench_fuzz_finds_half_applied_requests(time_env: WorkflowEnvironment, tmp_path: Path) -> None:
    deps = Deps.from_settings(load_settings(home=tmp_path / "home", database_url=f"sqlite:///{tmp_path}/store.db"))
    try:
        with deps.sessions.begin() as s:
            repo.upsert_account(s, {"id": "ghost", "name": "Ghost"}, [])
            repo.upsert_account(s, {"id": "acme", "name": "Acme"}, [])
        exchanges = [
            # Refused, yet the store has the account: half-applied.
            Exchange("PUT", "/accounts/ghost", json.dumps({"name": "Ghost"}).encode(), 422),
            # Accepted and stored: fine.
            Exchange("PUT", "/accounts/acme", json.dumps({"name": "Acme"}).encode(), 202),
            # Accepted but never stored: half-applied.
            Exchange("PUT", "/accounts/lost", json.dumps({"name": "Lost"}).encode(), 202),
            # Refused and nothing left: fine.
            Exchange("POST", "/events", json.dumps({"type": "a.b", "account_id": "nobody-here"}).encode(), 422),
        ]
        findings = await half_applied(exchanges, time_env.client, deps.sessions, settle=0.5)
    finally:
        await deps.close()
    assert len(findings) == 2, findings
    assert any("'lost' is not in the store" in f for f in findings), findings
    assert any("about 'ghost' left a stored account" in f for f in findings), findings
