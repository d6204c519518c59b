"""Traces, logs and settings as an operator sees them.

- One trace from `POST /events` through the account workflow and the email activity to the
  SendGrid call (in-memory span exporter; the real app, worker, dev server and a SendGrid
  stand-in).
- JSON log lines carry the account, playbook, run and step, and no secret.
- After real runs (a `touchpoint worker` process, the API, a SendGrid stand-in), `/metrics`
  holds the right values: provider calls by status and their latency count, emails sent,
  failed, held and skipped, run outcomes, a Schedule's tick lag; the worker logs JSON lines
  whose email lines name their account, playbook, run and step.
- `touchpoint config` masks every secret and names a bad variable; worker and API processes
  refuse unsafe settings; one-shot commands need no secret key.
"""

from __future__ import annotations

import asyncio
import io
import json
import logging
import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from temporalio.client import Client
from temporalio.contrib.opentelemetry import TracingInterceptor

from activities.deps import Deps
from tests.conftest import write_folder
from tests.servers.sendgrid_server import run_sendgrid_server
from touchpoint.api.ops import build_app
from touchpoint.config import load_settings
from touchpoint.converter import DATA_CONVERTER
from touchpoint.deploy import deploy_project
from touchpoint.dsl.validate import load_project
from touchpoint.observability.context import ContextInterceptor
from touchpoint.observability.logs import JsonFormatter, Redactor, secret_values
from touchpoint.observability.tracing import setup_tracing
from touchpoint.store import repo
from touchpoint.temporal_server import DevServerEnvironment, free_port, start_dev_server
from worker import build_worker

ROOT = Path(__file__).resolve().parent.parent
KEY = "SG.trace.secret-key-value"
FOLDER = {
    "workspace.yaml": 'timezone: UTC\nsender: {email: cs@example.com, name: CS}\nsend_window: {days: [mon, tue, wed, thu, fri, sat, sun], hours: "00:00-24:00"}\n',
    "welcome.yaml": "playbook: welcome\ntrigger: {event: trial.started}\naudience: [champion]\nsteps:\n  - email: {template: hi}\n    id: hello\n",
    "templates/hi.subject.j2": "Hi {{ account.name }}",
    "templates/hi.html.j2": "<p>Hello {{ contact.name }}, the body text</p>",
}
EXPORTER = InMemorySpanExporter()


@pytest.fixture(scope="module")
def spans() -> InMemorySpanExporter:
    """The process's tracer provider, exporting to memory (installed once per session)."""
    setup_tracing(load_settings(), "touchpoint-test", span_processor=SimpleSpanProcessor(EXPORTER))
    return EXPORTER


@pytest.fixture
async def server() -> AsyncIterator[DevServerEnvironment]:
    env = await start_dev_server()
    yield env
    await env.shutdown()


def _chain(span: ReadableSpan, by_id: dict[int, ReadableSpan]) -> list[str]:
    names = [span.name]
    while span.parent is not None and span.parent.span_id in by_id:
        span = by_id[span.parent.span_id]
        names.append(span.name)
    return names


async def test_one_trace_from_post_events_to_the_provider_call(
    spans: InMemorySpanExporter, server: DevServerEnvironment, tmp_path: Path
) -> None:
    queue = f"trace-{uuid.uuid4().hex[:8]}"
    logs = io.StringIO()
    with run_sendgrid_server(KEY, verified_senders=["cs@example.com"]) as sendgrid:
        settings = load_settings(
            home=tmp_path / "home",
            database_url=f"sqlite:///{tmp_path}/store.db",
            task_queue=queue,
            email_backend="sendgrid",
            sendgrid_api_key=KEY,
            sendgrid_url=sendgrid.url,
        )
        handler = logging.StreamHandler(logs)
        handler.setFormatter(JsonFormatter(Redactor(secret_values(settings))))
        logging.getLogger().addHandler(handler)
        client = await Client.connect(
            server.client.service_client.config.target_host,
            data_converter=DATA_CONVERTER,
            interceptors=[TracingInterceptor(), ContextInterceptor()],
        )
        deps = Deps.from_settings(settings)
        try:
            with deps.sessions.begin() as s:
                deploy_project(s, load_project(write_folder(tmp_path / "playbooks", FOLDER)))
                # The account is in the store before any event: its first workflow task belongs to the event's trace.
                repo.upsert_account(s, {"id": "acme", "name": "Acme", "timezone": "UTC"}, [{"email": "kim@acme.example", "name": "Kim", "role": "champion"}])
            app = build_app(settings, client, deps.sessions)
            async with build_worker(client, deps, task_queue=queue):
                async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://api") as http:
                    response = await http.post("/events", json={"type": "trial.started", "account_id": "acme", "id": "evt-1"})
                    assert response.status_code == 202, response.text
                deadline = time.monotonic() + 60
                while not any(s.name == "sendgrid call" for s in spans.get_finished_spans()):
                    assert time.monotonic() < deadline, [s.name for s in spans.get_finished_spans()]
                    await _sleep(0.1)
        finally:
            logging.getLogger().removeHandler(handler)
            await deps.close()
    assert len(sendgrid.sent) == 1
    finished = spans.get_finished_spans()
    by_id = {s.context.span_id: s for s in finished}
    (provider,) = [s for s in finished if s.name == "sendgrid call"]
    (request,) = [s for s in finished if s.name == "POST /events" and s.parent is None]
    assert provider.context.trace_id == request.context.trace_id
    chain = _chain(provider, by_id)
    assert chain[-1] == "POST /events", chain
    # client (signal-with-start) -> workflow code (schedules activities) -> activity -> provider
    assert chain[-2].startswith(("SignalWithStartWorkflow:", "StartWorkflow:", "SignalWorkflow:", "StartUpdateWithStartWorkflow:")), chain
    assert any(name.startswith("StartActivity:") for name in chain), chain
    assert chain[1].startswith("RunActivity:"), chain
    assert any(s.name.startswith("RunWorkflow:") and s.context.trace_id == request.context.trace_id for s in finished)
    assert provider.attributes is not None and provider.attributes["touchpoint.provider.status"] == "202"

    # The email activity's log lines say what they are about and hold no secret or body.
    lines = [json.loads(line) for line in logs.getvalue().splitlines() if line.strip()]
    assert KEY not in logs.getvalue() and "the body text" not in logs.getvalue()
    assert all({"ts", "level", "logger", "msg"} <= set(line) for line in lines)


async def _sleep(seconds: float) -> None:
    import asyncio

    await asyncio.sleep(seconds)


def test_json_lines_carry_the_work_in_progress_and_never_a_secret() -> None:
    from touchpoint.observability.logs import LOG_CONTEXT

    settings = load_settings(sendgrid_api_key="SG.very-secret-value", database_url="postgresql+psycopg://u:db-password-1@h/db")
    formatter = JsonFormatter(Redactor(secret_values(settings, environ={"MY_WEBHOOK_TOKEN": "hook-secret-9"})))
    token = LOG_CONTEXT.set({"account": "acme", "playbook": "welcome", "run": "run-1", "step": "hello"})
    try:
        record = logging.LogRecord("touchpoint.x", logging.WARNING, __file__, 1, "calling with SG.very-secret-value and hook-secret-9 and db-password-1", None, None)
        line = json.loads(formatter.format(record))
    finally:
        LOG_CONTEXT.reset(token)
    assert line["account"] == "acme" and line["playbook"] == "welcome" and line["run"] == "run-1" and line["step"] == "hello"
    assert line["msg"] == "calling with ****** and ****** and ******"
    assert line["level"] == "warning"


def _cli(*args: str, env: dict[str, str] | None = None, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    base = {k: v for k, v in os.environ.items() if not k.startswith("TOUCHPOINT_")}
    return subprocess.run(
        [sys.executable, "-m", "touchpoint.cli.main", *args],
        cwd=ROOT,
        env={**base, "PYTHONPATH": str(ROOT), "COLUMNS": "200", **(env or {})},
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def test_touchpoint_config_masks_every_secret(tmp_path: Path) -> None:
    cert, key = tmp_path / "client.pem", tmp_path / "client.key"
    cert.write_text("-----BEGIN CERTIFICATE-----\n")
    key.write_text("-----BEGIN PRIVATE KEY-----\n")
    secrets = {
        "TOUCHPOINT_SECRET_KEY": "s3cret-key-" + "x" * 30,
        "TOUCHPOINT_API_TOKEN": "api-token-value-123",
        "SENDGRID_API_KEY": "SG.sendgrid-key-value",
        "TOUCHPOINT_SMTP_URL": "smtp://user:smtp-password-42@mail:587",
        "HUBSPOT_TOKEN": "pat-hubspot-token-value",
        "SALESFORCE_ACCESS_TOKEN": "00Dsalesforce-token-value",
        "TOUCHPOINT_TEMPORAL_API_KEY": "temporal-cloud-api-key",
        "TOUCHPOINT_AI_KEY": "sk-openai-compatible-key",
        "ANTHROPIC_API_KEY": "sk-ant-anthropic-key",
    }
    env = {
        **secrets,
        "TOUCHPOINT_DATABASE_URL": "postgresql+psycopg://touchpoint:db-password-77@db:5432/touchpoint",
        "TOUCHPOINT_TEMPORAL_TLS_CERT": str(cert),
        "TOUCHPOINT_TEMPORAL_TLS_KEY": str(key),
    }
    result = _cli("config", env=env)
    assert result.returncode == 0, result.stderr
    out = result.stdout + result.stderr
    for value in [*secrets.values(), "db-password-77", "smtp-password-42"]:
        assert value not in out
    rows = dict(line.split(None, 1) for line in result.stdout.splitlines() if line.strip())
    for name in secrets:
        assert rows[name] == "****** (set)", (name, rows[name])
    assert rows["TOUCHPOINT_DATABASE_URL"] == "postgresql+psycopg://touchpoint:******@db:5432/touchpoint"
    assert rows["TOUCHPOINT_TEMPORAL_TLS_CERT"] == str(cert)

    bad = _cli("config", env={"TOUCHPOINT_API_BIND": "nowhere", "TOUCHPOINT_TEMPORAL_TLS_CA": str(tmp_path / "missing.pem")})
    assert bad.returncode == 2
    assert "TOUCHPOINT_API_BIND: expected host:port" in bad.stderr
    assert "TOUCHPOINT_TEMPORAL_TLS_CA: no such file" in bad.stderr
    half = _cli("config", env={"TOUCHPOINT_TEMPORAL_TLS_CERT": str(cert)})
    assert half.returncode == 2 and "TOUCHPOINT_TEMPORAL_TLS_KEY: mTLS needs both" in half.stderr


def test_worker_and_api_refuse_unsafe_settings() -> None:
    no_key = _cli("worker", env={"TOUCHPOINT_TEMPORAL_ADDRESS": "127.0.0.1:1"})
    assert no_key.returncode == 2 and "TOUCHPOINT_SECRET_KEY is not set" in no_key.stderr
    short = _cli("api", env={"TOUCHPOINT_SECRET_KEY": "short"})
    assert short.returncode == 2 and "TOUCHPOINT_SECRET_KEY has 5 characters" in short.stderr
    exposed = _cli("api", "--bind", "0.0.0.0:8000", env={"TOUCHPOINT_SECRET_KEY": "k" * 32})
    assert exposed.returncode == 2 and "TOUCHPOINT_API_TOKEN is not set" in exposed.stderr
    worker_py = subprocess.run([sys.executable, "worker.py"], cwd=ROOT, env={k: v for k, v in os.environ.items() if not k.startswith("TOUCHPOINT_")}, capture_output=True, text=True, timeout=60)
    assert worker_py.returncode == 2 and "TOUCHPOINT_SECRET_KEY is not set" in worker_py.stderr


def test_one_shot_commands_need_no_secret_key() -> None:
    result = _cli("validate", str(ROOT / "playbooks"))
    assert result.returncode == 0, result.stdout + result.stderr


def test_api_insecure_flag_allows_an_open_bind_and_refuses_unsigned_sendgrid(tmp_path: Path) -> None:
    port = free_port()
    process = subprocess.Popen(
        [sys.executable, "-m", "touchpoint.cli.main", "api", "--bind", f"0.0.0.0:{port}", "--insecure"],
        cwd=tmp_path,
        env={**{k: v for k, v in os.environ.items() if not k.startswith("TOUCHPOINT_")}, "PYTHONPATH": str(ROOT), "TOUCHPOINT_SECRET_KEY": "k" * 40, "TOUCHPOINT_TEMPORAL_ADDRESS": "127.0.0.1:1"},
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    try:
        deadline = time.monotonic() + 60
        while True:
            assert process.poll() is None, process.stdout.read().decode() if process.stdout else ""
            try:
                health = httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=1)
                break
            except httpx.HTTPError:
                assert time.monotonic() < deadline
                time.sleep(0.1)
        assert health.json() == {"status": "ok"}
        ready = httpx.get(f"http://127.0.0.1:{port}/readyz", timeout=10)
        assert ready.status_code == 503 and ready.json()["temporal"].startswith("unreachable")
        refused = httpx.post(f"http://127.0.0.1:{port}/webhooks/sendgrid", json=[{"event": "open", "sg_event_id": "e1"}], timeout=10)
        assert refused.status_code == 401 and "TOUCHPOINT_SENDGRID_WEBHOOK_KEY" in refused.text
        assert "/healthz" not in httpx.get(f"http://127.0.0.1:{port}/openapi.json", timeout=10).text
    finally:
        process.terminate()
        assert process.wait(timeout=20) == 0
        if process.stdout:
            process.stdout.close()


METERED = {
    "workspace.yaml": (
        "timezone: UTC\nsender: {email: cs@example.com, name: CS}\n"
        'send_window: {days: [mon, tue, wed, thu, fri, sat, sun], hours: "00:00-24:00"}\n'
        # One email per contact per 3 s: the second email of a run waits for the cap (held).
        "frequency_cap: {emails: 1, per: PT3S}\n"
    ),
    "metered.yaml": (
        "playbook: metered\ntrigger: {event: trial.started}\naudience: [champion]\nsteps:\n"
        "  - email: {template: hi}\n    id: hello\n"
        "  - email: {template: hi, to: [csm]}\n    id: nobody\n"  # no CSM on these accounts: skipped
        "  - email: {template: hi}\n    id: again\n    on_error: stop\n"
    ),
    "ticker.yaml": 'playbook: ticker\ntrigger: {schedule: "0 8 * * mon"}\nsteps:\n  - set: {seen: "accounts | length"}\n    id: count\n',
    "templates/hi.subject.j2": "Hi {{ account.name }}",
    "templates/hi.html.j2": "<p>Hello {{ contact.name }}, the body text</p>",
}


def _samples(text: str, name: str, **labels: str) -> float:
    """Sum of the samples of ``name`` in a Prometheus exposition whose labels include ``labels``."""
    from prometheus_client.parser import text_string_to_metric_families

    return sum(
        sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
        if sample.name == name and all(sample.labels.get(k) == v for k, v in labels.items())
    )


def _worker_env(tmp_path: Path, **extra: str) -> dict[str, str]:
    base = {k: v for k, v in os.environ.items() if not k.startswith("TOUCHPOINT_")}
    return {**base, "PYTHONPATH": str(ROOT), "TOUCHPOINT_SECRET_KEY": "k" * 40, "TOUCHPOINT_HOME": str(tmp_path / "home"), **extra}


@pytest.mark.timeout(180)
async def test_worker_and_api_metrics_count_what_real_runs_did(server: DevServerEnvironment, tmp_path: Path) -> None:
    """Provider calls by status and their latency count, emails sent/failed/held/skipped, run
    outcomes, a Schedule's tick lag: the values after real runs (a `touchpoint worker` process,
    the API in this process, a SendGrid stand-in that throttles once and rejects one address).
    The worker's log is JSON lines, and the email activity's line says which account, playbook,
    run and step it is about."""
    from touchpoint.schedules import prefix, sync_schedules

    queue = f"metered-{uuid.uuid4().hex[:8]}"
    database = f"sqlite:///{tmp_path}/store.db"
    metrics_port = free_port()
    worker_metrics = f"http://127.0.0.1:{metrics_port}"
    with run_sendgrid_server(KEY, verified_senders=["cs@example.com"], rejected_addresses=["bounce@bad.example"]) as sendgrid:
        sendgrid.fail_next(429, headers={"Retry-After": "1"}, times=1)
        env = _worker_env(
            tmp_path,
            TOUCHPOINT_TEMPORAL_ADDRESS=server.client.service_client.config.target_host,
            TOUCHPOINT_DATABASE_URL=database,
            TOUCHPOINT_TASK_QUEUE=queue,
            TOUCHPOINT_METRICS_BIND=f"127.0.0.1:{metrics_port}",
            TOUCHPOINT_EMAIL_BACKEND="sendgrid",
            SENDGRID_API_KEY=KEY,
            TOUCHPOINT_SENDGRID_URL=sendgrid.url,
        )
        settings = load_settings(home=tmp_path / "home", database_url=database, task_queue=queue, temporal_address=env["TOUCHPOINT_TEMPORAL_ADDRESS"])
        deps = Deps.from_settings(settings)
        project = load_project(write_folder(tmp_path / "playbooks", METERED))
        with deps.sessions.begin() as s:
            deploy_project(s, project)
        with open(tmp_path / "worker.log", "wb") as log:
            worker = subprocess.Popen([sys.executable, "-m", "touchpoint.cli.main", "worker"], cwd=tmp_path, env=env, stdout=log, stderr=subprocess.STDOUT)
        try:
            deadline = time.monotonic() + 60
            while _get(f"{worker_metrics}/readyz") != 200:
                assert worker.poll() is None and time.monotonic() < deadline, (tmp_path / "worker.log").read_text()
                await _sleep(0.2)
            await sync_schedules(server.client, project, task_queue=queue)
            app = build_app(settings, server.client, deps.sessions)
            async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://api") as http:
                for account, email in (("good", "kim@good.example"), ("bad", "bounce@bad.example")):
                    doc = {"name": account.title(), "timezone": "UTC", "contacts": [{"email": email, "name": "Kim", "role": "champion"}]}
                    assert (await http.put(f"/accounts/{account}", json=doc)).status_code == 202
                    assert (await http.post("/events", json={"type": "trial.started", "account_id": account, "id": f"start-{account}"})).status_code == 202
                await server.client.get_schedule_handle(f"{prefix(queue)}playbook/ticker").trigger()

                def ended() -> list[tuple[str, str | None]]:
                    with deps.sessions() as s:
                        return sorted((r.playbook_id, r.outcome) for r in repo.list_runs(s) if r.status == "ended")

                deadline = time.monotonic() + 90
                while len(ended()) < 3:
                    assert worker.poll() is None and time.monotonic() < deadline, (ended(), (tmp_path / "worker.log").read_text()[-3000:])
                    await _sleep(0.2)
                assert ended() == [("metered", "completed"), ("metered", "failed"), ("ticker", "completed")]
                api_text = (await http.get("/metrics")).text
            worker_text = httpx.get(f"{worker_metrics}/metrics", timeout=5).text
            worker.send_signal(signal.SIGTERM)
            assert await asyncio.to_thread(worker.wait, 30) == 0
        finally:
            if worker.poll() is None:
                worker.kill()
                worker.wait()
            await deps.close()
    assert len(sendgrid.sent) == 2

    def emails(step: str, status: str) -> float:
        return _samples(worker_text, "touchpoint_emails_total", playbook="metered", step=step, status=status)

    # The stand-in answered 429 once (retried after its Retry-After), 202 twice, 400 twice.
    calls = {status: _samples(worker_text, "touchpoint_provider_calls_total", provider="sendgrid", status=status) for status in ("202", "400", "429")}
    assert calls == {"202": 2, "400": 2, "429": 1}, calls
    assert _samples(worker_text, "touchpoint_provider_calls_total") == 5
    assert _samples(worker_text, "touchpoint_provider_call_seconds_count", provider="sendgrid") == 5
    assert (emails("hello", "sent"), emails("hello", "failed"), emails("again", "sent"), emails("again", "failed")) == (1, 1, 1, 1)
    assert emails("hello", "held") == 0 and emails("again", "held") == 2  # the cap held each second email
    assert emails("nobody", "skipped") == 2
    assert _samples(worker_text, "touchpoint_emails_total", playbook="metered") == 8
    assert _samples(worker_text, "touchpoint_schedule_tick_lag_count") == 1
    assert _samples(worker_text, "touchpoint_schedule_tick_lag_sum") >= 0
    assert _samples(api_text, "touchpoint_run_outcomes_total", playbook="metered", outcome="completed") == 1
    assert _samples(api_text, "touchpoint_run_outcomes_total", playbook="metered", outcome="failed") == 1
    assert _samples(api_text, "touchpoint_enrollments_total", playbook="metered") == 2
    assert _samples(api_text, "touchpoint_events_accepted_total", type="trial.started", path="/events") >= 2

    # `touchpoint worker` logs JSON lines only; the email activity's lines carry the work's context.
    text = (tmp_path / "worker.log").read_text()
    lines = [json.loads(line) for line in text.splitlines() if line.strip()]
    assert KEY not in text and "the body text" not in text and "kim@good.example" not in text
    sent = [line for line in lines if line["logger"] == "activities.email" and line["msg"].startswith("email sent")]
    assert len(sent) == 2, lines
    assert {(line["account"], line["playbook"], line["step"]) for line in sent} == {("good", "metered", "hello"), ("good", "metered", "again")}
    assert all(line["run"] for line in sent)


def _get(url: str) -> int:
    try:
        return httpx.get(url, timeout=2).status_code
    except httpx.HTTPError:
        return 0
