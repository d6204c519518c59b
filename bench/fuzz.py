"""``python -m bench.fuzz [--cases 10000] [--seed N]``: schemathesis against the real API, then a
look for anything half-applied.

The production API (`touchpoint.api.ops.build_app`: routes, ops middleware and probes; bearer
token on) runs under uvicorn on 127.0.0.1 with a worker, a fresh `temporal server start-dev` and a
SQLite store; schemathesis' CLI runs every check and every phase (examples, coverage, fuzzing, stateful) from the API's own OpenAPI document. Every request
and its status are recorded on the way in, and afterwards, once the worker has caught up:

- a refused request (4xx/5xx) about an account no accepted request named left nothing: no account
  workflow in Temporal, no account in the store;
- an accepted upsert (202) is in the store with the last accepted document's name;
- an accepted event (202) has its account workflow;
- a refused SendGrid batch recorded none of its event ids (unless an accepted batch carried them).

It prints the cases run, the failures by check, the server errors and the half-applied findings,
writes them to ``bench/results/fuzz-<time>.json`` and exits 1 if any is not zero.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import sys
import tempfile
import time
import uuid
from collections.abc import Awaitable, Callable, MutableMapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from bench.common import fresh_server, write_project
from bench.latency import serve

RESULTS = Path(__file__).resolve().parent / "results"
TOKEN = "bench-fuzz-token-0123456789abcdef0123"
OPERATIONS = 7
PLAYBOOK = """\
playbook: welcome
trigger: manual
steps:
  - note: {text: "hello {{ account.name }}"}
"""

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]


@dataclass
class Exchange:
    """One request the API answered."""

    method: str
    path: str
    body: bytes
    status: int = 0


@dataclass
class Recorder:
    """ASGI middleware: every HTTP request with its body and the status answered."""

    app: Callable[[Scope, Callable[[], Awaitable[Message]], Callable[[Message], Awaitable[None]]], Awaitable[None]]
    exchanges: list[Exchange] = field(default_factory=list)

    async def __call__(self, scope: Scope, receive: Callable[[], Awaitable[Message]], send: Callable[[Message], Awaitable[None]]) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        exchange = Exchange(scope["method"], scope["path"], b"")
        self.exchanges.append(exchange)

        async def receiving() -> Message:
            message = await receive()
            if message["type"] == "http.request":
                exchange.body += message.get("body", b"")
            return message

        async def sending(message: Message) -> None:
            if message["type"] == "http.response.start":
                exchange.status = int(message["status"])
            await send(message)

        await self.app(scope, receiving, sending)


def _json(body: bytes) -> Any:
    try:
        return json.loads(body)
    except ValueError:
        return None


def _account_of(exchange: Exchange) -> str | None:
    """The account id a request names, when it names one."""
    if exchange.method == "PUT" and exchange.path.startswith("/accounts/"):
        return exchange.path.removeprefix("/accounts/") or None
    data = _json(exchange.body)
    if exchange.method == "POST" and exchange.path in ("/events", "/runs") and isinstance(data, dict):
        value = data.get("account_id")
        return value if isinstance(value, str) and value else None
    return None


async def _schemathesis(url: str, *, examples: int, seed: int, cwd: Path) -> tuple[int, str]:
    args = [
        sys.executable, "-m", "schemathesis.cli", "run", f"{url}/openapi.json", "--checks", "all",
        "--max-examples", str(examples), "--seed", str(seed), "--workers", "1", "--request-timeout", "60",
        "--header", f"Authorization: Bearer {TOKEN}", "--no-color",
    ]
    # In a scratch folder: schemathesis keeps a Hypothesis example database in its working directory.
    process = await asyncio.create_subprocess_exec(*args, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT, cwd=cwd)
    output, _ = await process.communicate()
    return int(process.returncode or 0), output.decode(errors="replace")


def summary(output: str) -> dict[str, Any]:
    """Cases, passes and failures by check code, read from schemathesis' closing summary."""
    counted = re.search(r"(\d+) generated(?:, (\d+) passed)?(?:, (\d+) found (\d+) unique failures?)?", output)
    failures = {code: int(n) for code, n in re.findall(r"❌ (ST\d+) [^:\n]*: (\d+)", output)}
    return {
        "cases": int(counted.group(1)) if counted else 0,
        "passed": int(counted.group(2) or 0) if counted else 0,
        "failures": failures,
    }


async def half_applied(exchanges: Sequence[Exchange], client: Any, sessions: Any, *, settle: float) -> list[str]:
    """What a request left half done (see the module docs); waits up to ``settle`` s for the worker."""
    from temporalio.service import RPCError

    from touchpoint.store import repo
    from touchpoint.store.models import ProviderEvent

    accepted_accounts: dict[str, str | None] = {}
    evented: set[str] = set()
    refused: set[str] = set()
    for exchange in exchanges:
        account = _account_of(exchange)
        if account is None:
            continue
        if 200 <= exchange.status < 300:
            if exchange.method == "PUT":
                data = _json(exchange.body)
                accepted_accounts[account] = data.get("name") if isinstance(data, dict) else None
            else:
                evented.add(account)
        else:
            refused.add(account)
    findings: list[str] = []
    deadline = time.monotonic() + settle
    for account, name in accepted_accounts.items():
        while True:
            with sessions() as s:
                found = repo.get_account(s, account)
            if found is not None and found[0].get("name") == name:
                break
            if time.monotonic() > deadline:
                findings.append(f"accepted PUT /accounts/{account!r} is not in the store after {settle:.0f} s (found {found and found[0].get('name')!r})")
                break
            await asyncio.sleep(0.2)
    for account in sorted(evented - set(accepted_accounts)):
        try:
            await client.get_workflow_handle(f"account/{account}").describe()
        except RPCError:
            findings.append(f"an accepted request about {account!r} has no account workflow")
    for account in sorted(refused - set(accepted_accounts) - evented):
        with sessions() as s:
            stored = repo.get_account(s, account) is not None
        try:
            await client.get_workflow_handle(f"account/{account}").describe()
            started = True
        except RPCError:
            started = False
        if stored or started:
            findings.append(f"refused requests about {account!r} left {'a stored account' if stored else 'an account workflow'}")
    accepted_ids: set[str] = set()
    refused_ids: set[str] = set()
    for exchange in exchanges:
        if exchange.path != "/webhooks/sendgrid":
            continue
        batch = _json(exchange.body)
        ids = {str(e["sg_event_id"]) for e in batch if isinstance(e, dict) and isinstance(e.get("sg_event_id"), str)} if isinstance(batch, list) else set()
        (accepted_ids if exchange.status == 200 else refused_ids).update(ids)
    with sessions() as s:
        for sg_id in sorted(refused_ids - accepted_ids):
            if s.get(ProviderEvent, sg_id) is not None:
                findings.append(f"a refused SendGrid batch recorded event {sg_id!r}")
    return findings


async def run(cases: int, seed: int) -> dict[str, Any]:
    """One fuzzing run of about ``cases`` requests; the report as a dict."""
    from activities.deps import Deps
    from touchpoint.api.ops import build_app
    from touchpoint.config import load_settings
    from touchpoint.deploy import deploy_project
    from touchpoint.dsl.validate import load_project
    from worker import build_worker

    with tempfile.TemporaryDirectory(prefix="touchpoint-fuzz-") as tmp:
        root = Path(tmp)
        queue = f"fuzz-{uuid.uuid4().hex[:8]}"
        settings = load_settings(home=root / "home", database_url=f"sqlite:///{root}/store.db", task_queue=queue, api_token=TOKEN)
        folder = write_project(root / "playbooks", {"welcome": PLAYBOOK})
        async with fresh_server() as server:
            deps = Deps.from_settings(settings)
            project = load_project(folder)
            project.raise_for_problems()
            with deps.sessions.begin() as s:
                deploy_project(s, project)
            recorder = Recorder(build_app(settings, server.env.client, deps.sessions))
            worker = build_worker(server.env.client, deps, task_queue=queue)
            begin = time.monotonic()
            runs: list[dict[str, Any]] = []
            failing: list[str] = []
            code = 0
            async with worker, serve(recorder) as url:  # type: ignore[arg-type]
                # Operations with few possible inputs run out of new cases early: run again with
                # the next seed until `cases` were generated (at most five runs).
                while sum(r["cases"] for r in runs) < cases and len(runs) < 5:
                    remaining = cases - sum(r["cases"] for r in runs)
                    exit_code, output = await _schemathesis(url, examples=max(50, remaining // OPERATIONS), seed=seed + len(runs), cwd=root)
                    code = code or exit_code
                    runs.append(summary(output))
                    if exit_code:
                        failing.append(output[-4000:])
                fuzz_seconds = time.monotonic() - begin
                findings = await half_applied(recorder.exchanges, server.env.client, deps.sessions, settle=120.0)
            await deps.close()
    statuses: dict[str, int] = {}
    for exchange in recorder.exchanges:
        statuses[str(exchange.status)] = statuses.get(str(exchange.status), 0) + 1
    failures: dict[str, int] = {}
    for one in runs:
        for check, count in one["failures"].items():
            failures[check] = failures.get(check, 0) + count
    return {
        "cases": sum(r["cases"] for r in runs),
        "passed": sum(r["passed"] for r in runs),
        "failures": failures,
        "runs": len(runs),
        "requests": len(recorder.exchanges),
        "statuses": dict(sorted(statuses.items())),
        "server_errors": sum(n for status, n in statuses.items() if status.startswith("5")),
        "half_applied": findings,
        "schemathesis_exit": code,
        "seed": seed,
        "seconds": round(fuzz_seconds, 1),
        "tail": "\n".join(failing),
    }


def main(argv: Sequence[str] | None = None) -> None:
    """Run, print, write the JSON; exit 1 on any failure, server error or half-applied request."""
    parser = argparse.ArgumentParser(prog="python -m bench.fuzz", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--cases", type=int, default=10_000, help="about this many generated requests (default 10000)")
    parser.add_argument("--seed", type=int, default=20261204, help="schemathesis' seed (default 20261204)")
    parser.add_argument("--out", type=Path, help="the JSON file (default bench/results/fuzz-<time>.json)")
    args = parser.parse_args(argv)
    started = datetime.now(UTC)
    report = asyncio.run(run(args.cases, args.seed))
    bad = bool(report["failures"]) or report["server_errors"] > 0 or bool(report["half_applied"]) or report["schemathesis_exit"] != 0
    print(report["tail"] if bad else "")
    print(f"cases: {report['cases']} generated, {report['passed']} passed ({report['requests']} requests in {report['seconds']} s; {report['runs']} schemathesis runs from seed {report['seed']})")
    print(f"statuses: {report['statuses']}")
    print(f"failures: {report['failures'] or 'none'}")
    print(f"server errors: {report['server_errors']}")
    print(f"half-applied: {len(report['half_applied'])}" + "".join(f"\n  - {f}" for f in report["half_applied"][:20]))
    out = args.out or RESULTS / f"fuzz-{started.strftime('%Y%m%dT%H%M%SZ')}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"started_at": started.isoformat(timespec="seconds"), **report}, indent=2) + "\n")
    print(f"results: {out}")
    sys.stdout.flush()
    os._exit(1 if bad else 0)  # sdk-python #300: a worker's threads can abort the interpreter's teardown


if __name__ == "__main__":
    main()
