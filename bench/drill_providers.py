"""Drills where a provider misbehaves: SendGrid refusing a share of a burst, a webhook endpoint
failing half the time, HubSpot rate-limiting every third call during a 10,000-company sync.

The stand-ins are the test suite's (tests/servers/), on 127.0.0.1; the worker is Touchpoint's
production worker, in this process, on a fresh dev server. Lost and doubled are counted on what
the stand-in accepted (SendGrid's accepted mails, the endpoint's accepted calls) and on the
store's account and event rows (CRM).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import random
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from sqlalchemy import func, select

from bench.common import fresh_server, write_project
from bench.drill_support import DrillResult, account_doc, api, drill_folder, fire, make_deps, tally, until
from bench.workers import deploy
from worker import build_worker

QUEUE = "drill"
SENDGRID_KEY = "SG.drill.key"
HUBSPOT_TOKEN = "pat-drill"
EVERYONE = """\
playbook: drill-burst
trigger: {event: account.created}
steps:
  - email: {template: hello}
    id: hello
"""
HOOK = """\
playbook: drill-hook
trigger: {event: account.created}
steps:
  - webhook: {url: "URL", json: {account: "{{ account.id }}"}}
    id: notify
"""


def _ended_runs(deps: Any, playbook: str) -> int:
    from touchpoint.store.models import Run

    with deps.sessions() as s:
        return int(s.scalar(select(func.count()).select_from(Run).where(Run.playbook_id == playbook, Run.status == "ended")) or 0)


async def sendgrid_storm(*, sends: int = 1000, rate: float = 0.3, per_account: int = 100, retry_after: str = "1", timeout: float = 600, seed: int = 1) -> DrillResult:
    """A burst of ``sends`` emails (accounts of ``per_account`` contacts, each run emailing every
    contact at once) while SendGrid refuses a share ``rate`` of requests: 429 with
    ``Retry-After`` and 500/502/503. The drain runs from the last account accepted by the API.
    """
    from tests.servers.sendgrid_server import run_sendgrid_server
    from touchpoint.email.sendgrid_backend import SendGridBackend

    accounts = max(1, -(-sends // per_account))
    result = DrillResult("sendgrid-storm", f"SendGrid answering {rate:.0%} 429 (Retry-After) and 5xx for a burst of {sends:,} sends", expected=sends)
    begin = time.monotonic()
    docs = []
    for a in range(accounts):
        doc = account_doc(f"acct-{a}", contacts=min(per_account, sends - a * per_account))
        docs.append(doc)
    expected = [c["email"] for doc in docs for c in doc["contacts"]]
    with drill_folder("sendgrid") as root, run_sendgrid_server(SENDGRID_KEY) as sendgrid:
        sendgrid.storm(rate, retry_after=retry_after, seed=seed)
        async with fresh_server() as server:
            deps = make_deps(root, f"sqlite:///{root / 'home' / 'touchpoint.db'}", email_backend=SendGridBackend(SENDGRID_KEY, host=sendgrid.url, timeout=10))
            try:
                deploy(deps, write_project(root / "playbooks", {"drill-burst": EVERYONE}))
                async with build_worker(server.env.client, deps, task_queue=QUEUE), api(deps, server.env.client, QUEUE) as http:

                    async def enroll(i: int) -> None:
                        (await http.put(f"/accounts/acct-{i}", json=docs[i])).raise_for_status()

                    await fire(accounts, 20, enroll)
                    burst = time.monotonic()

                    async def drained() -> bool:
                        seen = [r.lower() for mail in list(sendgrid.sent) for r in mail.recipients]
                        result.delivered, result.lost, result.doubled = tally(expected, seen)
                        return result.lost == 0 and await asyncio.to_thread(_ended_runs, deps, "drill-burst") >= accounts

                    if not await until(drained, timeout=timeout):
                        result.error = f"not drained {timeout:.0f} s after the burst"
                    result.drain_seconds = round(time.monotonic() - burst, 1)
                    await drained()
            finally:
                await deps.close()
        result.detail.update(requests=sendgrid.requests, refused=dict(sorted(sendgrid.storm_failures.items())), accounts=accounts)
    result.total_seconds = round(time.monotonic() - begin, 1)
    return result


class _FlakyHook(BaseHTTPRequestHandler):
    server: _HookServer

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers.get("content-length", 0)))
        status, headers = self.server.answer()
        if status < 300:
            with self.server.lock:
                self.server.accepted.append((self.headers.get("Idempotency-Key", ""), json.loads(body).get("account", "")))
        self.send_response(status)
        for key, value in headers.items():
            self.send_header(key, value)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, *args: Any) -> None:
        pass


class _HookServer(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, rate: float, seed: int) -> None:
        super().__init__(("127.0.0.1", 0), _FlakyHook)
        self.rate = rate
        self.rng = random.Random(seed)
        self.lock = threading.Lock()
        self.accepted: list[tuple[str, str]] = []
        self.failed: dict[int, int] = {}
        self.calls = 0

    def answer(self) -> tuple[int, dict[str, str]]:
        """200, or (a share ``rate`` of calls) 500, 502, 503 or 429 with ``Retry-After: 1``."""
        with self.lock:
            self.calls += 1
            if self.rng.random() >= self.rate:
                return 200, {}
            status = self.rng.choice((500, 502, 503, 429))
            self.failed[status] = self.failed.get(status, 0) + 1
        return status, ({"Retry-After": "1"} if status in (429, 503) else {})


@contextlib.contextmanager
def flaky_endpoint(rate: float, seed: int) -> Iterator[_HookServer]:
    """A webhook receiver on 127.0.0.1 that fails a share ``rate`` of calls."""
    server = _HookServer(rate, seed)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    try:
        yield server
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)


async def webhook_flaky(*, calls: int = 200, rate: float = 0.5, timeout: float = 900, seed: int = 2) -> DrillResult:
    """``calls`` enrollments whose playbook calls a webhook endpoint that fails half the time
    (500, 502, 503 and 429, the last two with ``Retry-After: 1``). Lost: accounts whose call was
    never accepted; doubled: accounts whose call was accepted more than once."""
    result = DrillResult("webhook-flaky", f"webhook endpoint failing {rate:.0%} of {calls:,} calls", expected=calls)
    begin = time.monotonic()
    expected = [f"acct-{i}" for i in range(calls)]
    with drill_folder("webhook") as root, flaky_endpoint(rate, seed) as endpoint:
        url = f"http://127.0.0.1:{endpoint.server_address[1]}/hook"
        async with fresh_server() as server:
            deps = make_deps(root, f"sqlite:///{root / 'home' / 'touchpoint.db'}")
            try:
                deploy(deps, write_project(root / "playbooks", {"drill-hook": HOOK.replace("URL", url)}))
                async with build_worker(server.env.client, deps, task_queue=QUEUE), api(deps, server.env.client, QUEUE) as http:

                    async def enroll(i: int) -> None:
                        (await http.put(f"/accounts/acct-{i}", json=account_doc(f"acct-{i}"))).raise_for_status()

                    await fire(calls, 50, enroll)
                    burst = time.monotonic()

                    async def drained() -> bool:
                        with endpoint.lock:
                            seen = [account for _, account in endpoint.accepted]
                        result.delivered, result.lost, result.doubled = tally(expected, seen)
                        return result.lost == 0 and await asyncio.to_thread(_ended_runs, deps, "drill-hook") >= calls

                    if not await until(drained, timeout=timeout):
                        result.error = f"not drained {timeout:.0f} s after the last enrollment"
                    result.drain_seconds = round(time.monotonic() - burst, 1)
                    await drained()
            finally:
                await deps.close()
        keys = {key for key, _ in endpoint.accepted}
        result.detail.update(requests=endpoint.calls, refused=dict(sorted(endpoint.failed.items())), distinct_idempotency_keys=len(keys))
    result.total_seconds = round(time.monotonic() - begin, 1)
    return result
