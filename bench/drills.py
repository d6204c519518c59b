"""``python -m bench --drills [--quick] [--only-drills NAME ...]``: the failure drills.

Each drill breaks something on purpose and reports what was lost, what was doubled (goal: 0 and
0) and how long the system took to drain after the last disruption:

- ``worker-kills-sqlite``, ``worker-kills-postgresql``: 20 ``kill -9`` of worker processes
  during 500 enrollments (bench/drill_kills.py);
- ``stack-kills``: 3 ``kill -9`` of the whole `touchpoint dev` stack mid-run, restarted on the
  same folder;
- ``sendgrid-storm``: SendGrid answering 30% 429 (with Retry-After) and 5xx for a burst of 1,000
  sends (bench/drill_providers.py);
- ``webhook-flaky``: a webhook endpoint failing half of 200 calls;
- ``crm-rate-limit``: HubSpot rate-limiting every third call during a sync of 10,000 companies
  (bench/drill_crm.py).

``--quick`` runs the small versions that `tests/test_drills.py` runs in the suite. Results go to
``bench/results/drills-<timestamp>.json``; ``python -m bench.drills RESULTS.json`` prints them as
Markdown for bench/RESULTS.md and the README.
"""

from __future__ import annotations

import json
import logging
import math
import sys
import time
from collections.abc import Awaitable, Callable, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

from bench.common import machine
from bench.drill_support import DrillResult

DrillFn = Callable[..., Awaitable[DrillResult]]


def registry() -> dict[str, tuple[DrillFn, dict[str, Any], dict[str, Any]]]:
    """Every drill: its function, its full-size options and its quick (suite) options."""
    from bench.drill_crm import crm_rate_limit
    from bench.drill_kills import stack_kills, worker_kills
    from bench.drill_providers import sendgrid_storm, webhook_flaky

    return {
        "worker-kills-sqlite": (worker_kills, {"store": "sqlite", "enrollments": 500, "kills": 20, "interval": 2.0}, {"store": "sqlite", "enrollments": 24, "kills": 2, "interval": 0.5, "rate": 8.0}),
        "worker-kills-postgresql": (worker_kills, {"store": "postgresql", "enrollments": 500, "kills": 20, "interval": 2.0}, {"store": "postgresql", "enrollments": 24, "kills": 2, "interval": 0.5, "rate": 8.0}),
        "stack-kills": (stack_kills, {"enrollments": 200, "kills": 3, "interval": 5.0, "rate": 10.0}, {"enrollments": 16, "kills": 3, "interval": 0.5, "rate": 8.0}),
        "sendgrid-storm": (sendgrid_storm, {"sends": 1000, "rate": 0.3}, {"sends": 50, "rate": 0.3, "per_account": 25}),
        "webhook-flaky": (webhook_flaky, {"calls": 200, "rate": 0.5}, {"calls": 10, "rate": 0.5}),
        "crm-rate-limit": (crm_rate_limit, {"companies": 10_000, "every": 3}, {"companies": 300, "every": 3, "changed": 10, "new": 5}),
    }


def quiet_sdk_logs() -> None:
    """The SDK logs every failed activity attempt with its traceback: hundreds in a storm."""
    for name in ("temporalio.activity", "temporalio.worker._activity", "temporalio.worker._workflow_instance"):
        logging.getLogger(name).setLevel(logging.ERROR)


async def run_drills(names: Sequence[str], *, quick: bool, console: Console | None = None) -> list[DrillResult]:
    """Run the named drills one after the other (they would compete for the CPU otherwise).

    A drill that raises is reported with its error (and counted as failed), the others still run.
    """
    quiet_sdk_logs()
    drills = registry()
    results = []
    for name in names:
        fn, full, small = drills[name]
        if console:
            console.log(f"[bold]{name}[/bold] ...")
        begin = time.monotonic()
        try:
            result = await fn(**(small if quick else full))
        except Exception as exc:  # report it, run the next drill
            result = DrillResult(name, name, expected=0, error=f"{type(exc).__name__}: {exc}")
            result.total_seconds = round(time.monotonic() - begin, 1)
        if console:
            console.log(f"{name}: lost {result.lost}, doubled {result.doubled}, drain {result.drain_seconds} s{'' if result.error is None else ' - ' + result.error}")
        results.append(result)
    return results


def _seconds(value: float) -> str:
    return "-" if math.isnan(value) else f"{value:,.1f}"


def table(results: Sequence[DrillResult]) -> Table:
    """One row per drill."""
    out = Table(title="Failure drills (goal: 0 lost, 0 doubled)")
    for column in ("drill", "what", "expected", "delivered", "lost", "doubled", "drain s", "total s", "verdict"):
        out.add_column(column, justify="left" if column in ("drill", "what", "verdict") else "right")
    for r in results:
        verdict = "[green]ok[/green]" if r.ok else f"[red]{r.error or 'FAILED'}[/red]"
        out.add_row(r.key, r.title, f"{r.expected:,}", f"{r.delivered:,}", str(r.lost), str(r.doubled), _seconds(r.drain_seconds), _seconds(r.total_seconds), verdict)
    return out


def document(results: Sequence[DrillResult], *, quick: bool, started: datetime) -> dict[str, Any]:
    """The JSON document written to the results folder."""
    return {"started_at": started.isoformat(timespec="seconds"), "machine": machine(), "quick": quick, "drills": {r.key: r.as_json() for r in results}}


def markdown(data: dict[str, Any]) -> str:
    """The drills as a Markdown table (bench/RESULTS.md, README)."""
    m = data["machine"]
    lines = [
        f"Measured {data['started_at']} on {m['nproc']} x {m['cpu']} (Python {m['python']}){' (--quick)' if data.get('quick') else ''}.",
        "",
        "| drill | expected effects | delivered | lost | doubled | time to drain (s) | total (s) |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for d in data["drills"].values():
        drain = d["drain_seconds"]
        total = d["total_seconds"]
        title = d["title"] + ("" if d["error"] is None else f" (**{d['error']}**)")
        lines.append(
            f"| {title} | {d['expected']:,} | {d['delivered']:,} | {d['lost']} | {d['doubled']} | "
            f"{_seconds(float(drain)) if drain is not None else '-'} | {_seconds(float(total)) if total is not None else '-'} |"
        )
    return "\n".join(lines) + "\n"


def main(names: Sequence[str], *, quick: bool, out: Path | None, results_dir: Path) -> int:
    """Run the drills, print the table, write the JSON; 0 when every drill lost and doubled nothing."""
    import asyncio

    console = Console()
    started = datetime.now(UTC)
    results = asyncio.run(run_drills(names, quick=quick, console=console))
    console.print(table(results))
    for r in results:
        console.print(f"[dim]{r.key}:[/dim] {json.dumps(r.detail, default=str)}")
    path = out or results_dir / f"drills-{started.strftime('%Y%m%dT%H%M%SZ')}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(document(results, quick=quick, started=started), indent=2, default=str) + "\n")
    console.print(f"results: {path}")
    return 0 if all(r.ok for r in results) else 1


if __name__ == "__main__":
    print(markdown(json.loads(Path(sys.argv[1]).read_text())), end="")
