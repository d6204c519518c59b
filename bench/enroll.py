"""Scenario 1: enrollment throughput, one and two worker processes.

Touchpoint, two ways, each to a playbook that sends one email (outbox) and creates one task; the
clock stops when every email and task row is in the store:

- new accounts: N account upserts (`touchpoint.ingest.put_account`, 100 in flight), each
  creating the account and its workflow, the playbook triggered by `account.created`;
- existing accounts: N accounts are created first (not timed), then each receives one event
  (`touchpoint.ingest.send_event`, 100 in flight) whose type triggers the playbook. Their account
  workflows already exist, half of them evicted from the worker's cache at the default N.

Bare Temporal: N new workflows doing two activities that each write a row; the clock stops when
all rows exist. Both Touchpoint figures are compared with that one baseline.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

from temporalio.api.enums.v1 import EventType
from temporalio.client import Client

from bench.common import (
    CpuMeter,
    Figure,
    Scenario,
    Server,
    account_doc,
    fresh_server,
    server_pid,
    wait_for_count,
    write_project,
)
from bench.workers import baseline_worker, deploy, store_file, touchpoint_deps, touchpoint_worker
from touchpoint.dsl.accounts import AccountDoc
from touchpoint.dsl.runtime import EventIn
from touchpoint.ingest import put_account, send_event

QUEUE = "bench"
IN_FLIGHT = 100
ENROLL = """\
playbook: bench-enroll
trigger: {event: account.created}
audience: [champion]
steps:
  - email: {template: hello}
    id: hello
  - task: {title: "Call {{ account.name }}", owner: csm, due: 2d}
    id: call
"""
ROOT = Path(__file__).resolve().parent.parent
SIGNUP = "trial.started"
ENROLL_ON_EVENT = ENROLL.replace("playbook: bench-enroll\ntrigger: {event: account.created}", f"playbook: bench-enroll\ntrigger: {{event: {SIGNUP}}}")


@contextlib.asynccontextmanager
async def second_worker(kind: str, server: Server, path: Path) -> AsyncIterator[int]:
    """Another OS process polling the same task queue (stopped with SIGTERM); yields its pid."""
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = subprocess.Popen(
        [sys.executable, "-m", "bench.worker_proc", kind, server.address, QUEUE, str(path)],
        stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True, env=env, cwd=ROOT,
    )
    try:
        assert proc.stdout is not None
        line = await asyncio.to_thread(proc.stdout.readline)
        if line.strip() != "ready":
            raise RuntimeError(f"the second {kind} worker did not start (exit code {proc.poll()})")
        yield proc.pid
    finally:
        proc.terminate()
        try:
            await asyncio.to_thread(proc.wait, 20)
        except subprocess.TimeoutExpired:
            proc.kill()


async def _fire(n: int, start: Callable[[int], Awaitable[Any]]) -> None:
    sem = asyncio.Semaphore(IN_FLIGHT)

    async def one(i: int) -> None:
        async with sem:
            await start(i)

    await asyncio.gather(*(one(i) for i in range(n)))


async def _count_activities(client: Client, workflow_ids: list[str]) -> int:
    """Activities and local activities recorded in these workflows' histories."""
    total = 0
    for workflow_id in workflow_ids:
        history = await client.get_workflow_handle(workflow_id).fetch_history()
        total += sum(
            1
            for e in history.events
            if e.event_type == EventType.EVENT_TYPE_ACTIVITY_TASK_SCHEDULED
            or (e.event_type == EventType.EVENT_TYPE_MARKER_RECORDED and e.marker_recorded_event_attributes.marker_name == "core_local_activity")
        )
    return total


async def touchpoint_rate(n: int, workers: int, *, existing: bool = False) -> tuple[float, dict[str, Any]]:
    """Enrollments per second through the account workflow, until every email and task is stored.

    ``existing``: the accounts are created first, untimed; the timed part is one triggering event each.
    """
    async with fresh_server() as server:
        home = server.root / "touchpoint"
        deps = touchpoint_deps(home)
        try:
            deploy(deps, write_project(server.root / "playbooks", {"bench-enroll": ENROLL_ON_EVENT if existing else ENROLL}))
            client = server.env.client
            second = second_worker("touchpoint", server, home) if workers == 2 else contextlib.nullcontext()
            async with second as second_pid, touchpoint_worker(client, deps, QUEUE):
                meter = CpuMeter(server_pid(server), [second_pid] if second_pid else [])

                def upsert(i: int) -> Awaitable[str]:
                    return put_account(client, QUEUE, deps.sessions, AccountDoc.model_validate(account_doc(f"acct-{i}")))

                if existing:
                    await _fire(n, upsert)
                    await wait_for_count(store_file(home), "SELECT count(*) FROM events WHERE type = 'account.created'", n, timeout=120 + n)
                    ids = [f"acct-{i}" for i in range(n)]
                    events = [EventIn(type=SIGNUP, data={"plan": "team"}) for _ in ids]
                    meter.start()
                    begin = time.monotonic()
                    await _fire(n, lambda i: send_event(client, QUEUE, deps.sessions, ids[i], events[i]))
                else:
                    meter.start()
                    begin = time.monotonic()
                    await _fire(n, upsert)
                accepted = time.monotonic()
                sql = "SELECT (SELECT count(*) FROM messages WHERE status = 'sent') + (SELECT count(*) FROM tasks)"
                done = await wait_for_count(store_file(home), sql, 2 * n, timeout=120 + n)
                cpu = meter.per_item_ms(n)
                activities = await _count_activities(client, ["account/acct-0"])
        finally:
            await deps.close()
    return n / (done - begin), {
        "accept_seconds": round(accepted - begin, 2),
        "total_seconds": round(done - begin, 2),
        "activities_per_enrollment": activities,
        **cpu,
    }


async def baseline_rate(n: int, workers: int) -> tuple[float, dict[str, Any]]:
    """Bare workflows (two activities) per second, until both rows of each exist."""
    async with fresh_server() as server:
        database = server.root / "bare.db"
        client = server.env.client
        second = second_worker("baseline", server, database) if workers == 2 else contextlib.nullcontext()
        async with baseline_worker(client, database, QUEUE), second as second_pid:
            meter = CpuMeter(server_pid(server), [second_pid] if second_pid else [])
            meter.start()
            begin = time.monotonic()
            await _fire(n, lambda i: client.start_workflow("BareEnroll", f"acct-{i}", id=f"bare/acct-{i}", task_queue=QUEUE))
            accepted = time.monotonic()
            done = await wait_for_count(database, "SELECT count(*) FROM effects", 2 * n, timeout=120 + n)
            cpu = meter.per_item_ms(n)
    return n / (done - begin), {
        "accept_seconds": round(accepted - begin, 2),
        "total_seconds": round(done - begin, 2),
        "activities_per_enrollment": 2,
        **cpu,
    }


async def design_ceiling_rate(n: int) -> tuple[float, dict[str, Any]]:
    """Bare Temporal in Touchpoint's shape: per enrollment a `BareAccount` signalled-with-start,
    with Touchpoint's two store steps (local activities) and two effects; until both effect rows exist."""
    async with fresh_server() as server:
        database = server.root / "bare.db"
        client = server.env.client
        async with baseline_worker(client, database, QUEUE):
            meter = CpuMeter(server_pid(server), [])
            meter.start()
            begin = time.monotonic()
            await _fire(
                n,
                lambda i: client.start_workflow(
                    "BareAccount", id=f"bare-account/acct-{i}", task_queue=QUEUE, start_signal="ingest", start_signal_args=[f"acct-{i}"]
                ),
            )
            done = await wait_for_count(database, "SELECT count(*) FROM effects", 2 * n, timeout=120 + n)
            cpu = meter.per_item_ms(n)
    return n / (done - begin), {"total_seconds": round(done - begin, 2), **cpu}


async def run(n: int, *, two_workers: bool = True, rounds: int = 2) -> Scenario:
    """Measure both sides with one worker process, then with two; then events to existing accounts.

    The one-worker figures are the mean of ``rounds`` rounds, each measuring new accounts, events
    to existing accounts and the baseline, in the reverse order every other round (the machine's
    speed drifts over minutes; a round run forwards then backwards cancels a steady drift).
    """
    scenario = Scenario(
        "enrollment",
        f"Enrollment throughput ({n} accounts, {IN_FLIGHT} in flight)",
        "Touchpoint >= 0.7x the bare-Temporal rate",
    )
    new: list[tuple[float, dict[str, Any]]] = []
    existing: list[tuple[float, dict[str, Any]]] = []
    bare: list[tuple[float, dict[str, Any]]] = []
    for round_ in range(rounds):
        steps = ["new", "existing", "bare"]
        for step in steps if round_ % 2 == 0 else steps[::-1]:
            if step == "new":
                new.append(await touchpoint_rate(n, 1))
            elif step == "existing":
                existing.append(await touchpoint_rate(n, 1, existing=True))
            else:
                bare.append(await baseline_rate(n, 1))
    tp_one, tp_detail = _mean(new)
    bare_one, bare_detail = _mean(bare)
    figure = Figure("enrollments/s, new accounts, 1 worker process", "/s", round(tp_one, 2), round(bare_one, 2), "higher")
    scenario.figures.append(figure)
    scenario.met = figure.ratio >= 0.7
    for key, what in (("server_cpu_ms", "dev server"), ("worker_cpu_ms", "worker process")):
        scenario.figures.append(Figure(f"CPU per enrollment, new accounts: {what}", "ms", tp_detail[key], bare_detail[key], "lower"))
    scenario.extra["workers_1"] = {"touchpoint": tp_detail, "baseline": bare_detail}
    scenario.extra["rounds"] = [
        {"new": round(a[0], 2), "existing": round(b[0], 2), "baseline": round(c[0], 2)} for a, b, c in zip(new, existing, bare, strict=True)
    ]
    scenario.notes.append(
        f"New accounts: Touchpoint runs {tp_detail['activities_per_enrollment']} activities and local activities per enrollment "
        f"in one account workflow; the baseline one workflow and 2 activities. One-worker figures: the mean of {rounds} "
        "round(s) of new accounts, existing accounts and the baseline, every other round in reverse order "
        "(per-round rates in `extra.rounds`)."
    )
    if two_workers:
        tp, tp_two = await touchpoint_rate(n, 2)
        bare_two, bare_two_detail = await baseline_rate(n, 2)
        scenario.figures.append(Figure("enrollments/s, new accounts, 2 worker processes", "/s", round(tp, 2), round(bare_two, 2), "higher"))
        scenario.extra["workers_2"] = {"touchpoint": tp_two, "baseline": bare_two_detail}
    tp, tp_detail = _mean(existing)
    figure = Figure("enrollments/s, event to existing accounts, 1 worker process", "/s", round(tp, 2), round(bare_one, 2), "higher")
    scenario.figures.append(figure)
    scenario.extra["existing_accounts"] = {"touchpoint": tp_detail}
    scenario.met = scenario.met and figure.ratio >= 0.7
    scenario.notes.append(
        f"Existing accounts: {n} accounts created first (not timed), then one `{SIGNUP}` event each; compared with the same "
        f"baseline (a new bare workflow per enrollment). {tp_detail['activities_per_enrollment']} activities and local activities per enrollment."
    )
    ceiling, ceiling_detail = await design_ceiling_rate(n)
    scenario.figures.append(
        Figure("design ceiling, new accounts: bare account workflow, 2 local activities + 2 activities, 1 worker process", "/s", round(ceiling, 2), round(bare_one, 2), "higher")
    )
    scenario.extra["design_ceiling"] = ceiling_detail
    scenario.notes.append(
        "Design ceiling (not Touchpoint: bare Temporal in its shape): per enrollment a bare account workflow is "
        "signalled-with-start and runs what Touchpoint's account workflow runs for a new account: one local activity "
        "(read the context and record the event, as `apply_first`), the two effect activities, one local activity (the final projection) "
        f"(`BareAccount`). CPU per enrollment: dev server {ceiling_detail['server_cpu_ms']} ms, worker {ceiling_detail['worker_cpu_ms']} ms. "
        f"Touchpoint's new-account rate is {tp_one / ceiling:.2f}x of this ceiling."
    )
    scenario.notes.append(
        "CPU per enrollment: user + system CPU of the dev server process and of the worker processes over the timed part, "
        "divided by N. The worker side includes the bench's own client calls (Touchpoint: the ingest call, which reads the deploys it "
        "knows from its cache, and a signal-with-start, as the API would make; bare: start_workflow). Server and workers share the machine's cores, "
        "so on a machine the two saturate, the rate ratio follows the ratio of their sums."
    )
    return scenario


def _mean(measured: list[tuple[float, dict[str, Any]]]) -> tuple[float, dict[str, Any]]:
    """The mean rate of several measurements of one side, with the mean of each numeric detail."""
    rate = sum(r for r, _ in measured) / len(measured)
    detail: dict[str, Any] = {}
    for key, value in measured[0][1].items():
        values = [d[key] for _, d in measured]
        detail[key] = round(sum(values) / len(values), 2) if all(isinstance(v, (int, float)) for v in values) else value
    return rate, detail
