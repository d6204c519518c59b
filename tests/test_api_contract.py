"""The OpenAPI document describes the API: schemathesis (all checks) finds no failure.

The production app (`touchpoint.api.ops.build_app`: routes, ops middleware, probes) runs under
uvicorn on 127.0.0.1 with a real worker, a time-skipping Temporal server of its own and a SQLite
store; schemathesis' own CLI tests it from its document, with a fixed seed and a bounded number of
examples per operation. One run configures the API as reachable from other machines with no
SendGrid key, so the middleware's refusal of unsigned webhook batches is fuzzed too.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import re
import socket
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import uvicorn
from fastapi import FastAPI

from tests.conftest import Stack, write_folder
from touchpoint.api.ops import build_app
from touchpoint.config import load_settings

TOKEN = "contract-test-token-0123456789abcdef"
PLAYBOOK = """\
playbook: welcome
trigger: manual
steps:
  - note: {text: "hello {{ account.name }}"}
"""


@pytest.fixture
async def stack(own_stack: Stack) -> Stack:
    """A server of its own: fuzzing starts account workflows with arbitrary ids."""
    write_folder(own_stack.root / "playbooks", {"welcome.yaml": PLAYBOOK, "templates/.keep": ""})
    own_stack.deploy(own_stack.root / "playbooks")
    return own_stack


LOOPBACK = "127.0.0.1:8000"
EXPOSED = "0.0.0.0:8000"
"""The bind the settings name (uvicorn binds 127.0.0.1 regardless): with it and no SendGrid key,
`OpsMiddleware` answers every `POST /webhooks/sendgrid` with 401."""


def contract_app(stack: Stack, *, token: str | None = TOKEN, bind: str = LOOPBACK) -> FastAPI:
    settings = load_settings(
        home=stack.settings.home,
        database_url=stack.settings.database_url,
        task_queue=stack.task_queue,
        api_token=token,
        api_bind=bind,
    )
    return build_app(settings, stack.client, stack.deps.sessions)


@contextlib.asynccontextmanager
async def serve(app: FastAPI) -> AsyncIterator[str]:
    """``app`` under uvicorn on a free 127.0.0.1 port, in this event loop (the Temporal client's)."""
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning", lifespan="off"))
    task = asyncio.create_task(server.serve(sockets=[sock]))
    try:
        while not server.started:
            if task.done():
                task.result()
            await asyncio.sleep(0.01)
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        await task
        sock.close()


async def run_schemathesis(
    url: str,
    report: Path,
    *,
    examples: int,
    seed: int,
    token: str | None = TOKEN,
    phases: str = "examples,coverage,fuzzing,stateful",
    extra: tuple[str, ...] = (),
) -> tuple[int, str]:
    """Run ``schemathesis run`` (every check, every phase) against ``url``; its exit code and output."""
    args = [
        sys.executable, "-m", "schemathesis.cli", "run", f"{url}/openapi.json",
        "--checks", "all", "--phases", phases, "--max-examples", str(examples), "--seed", str(seed), "--workers", "1",
        "--request-timeout", "30", "--report", "ndjson", "--report-ndjson-path", str(report), "--no-color",
    ]
    if token:
        args += ["--header", f"Authorization: Bearer {token}"]
    args += extra
    # In the report's folder: schemathesis keeps a Hypothesis example database in its working directory.
    process = await asyncio.create_subprocess_exec(*args, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT, cwd=report.parent)
    try:
        output, _ = await asyncio.wait_for(process.communicate(), timeout=600)
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()
    return int(process.returncode or 0), output.decode(errors="replace")


# The coverage phase is not bounded by `--max-examples`: on `PUT /accounts/{id}` it tries every
# time zone of the enum twice (about 1,200 requests, a minute here). `python -m bench.fuzz` runs
# every phase on every operation; the suite runs it on the others, with the API's settings saying
# it is reachable from other machines (the webhook's middleware refusal included).
RUNS = {
    "generated": ("examples,fuzzing,stateful", (), LOOPBACK),
    "coverage": ("coverage", ("--exclude-name", "PUT /accounts/{account_id}"), EXPOSED),
}


@pytest.mark.parametrize("run", sorted(RUNS))
async def test_api_contract_schemathesis_finds_no_failure(stack: Stack, tmp_path: Path, run: str) -> None:
    phases, extra, bind = RUNS[run]
    async with serve(contract_app(stack, bind=bind)) as url:
        code, output = await run_schemathesis(url, tmp_path / "events.ndjson", examples=10, seed=20261204, phases=phases, extra=extra)
    assert code == 0, output[-6000:]
    counted = re.search(r"(\d+) generated, (\d+) passed", output)
    assert counted is not None and counted.group(1) == counted.group(2) and int(counted.group(1)) >= 50, output[-3000:]


async def test_api_contract_document_lists_statuses_and_one_error_shape(stack: Stack) -> None:
    async with serve(contract_app(stack)) as url, httpx.AsyncClient(base_url=url) as http:
        doc = (await http.get("/openapi.json")).json()
        auth = {"Authorization": f"Bearer {TOKEN}"}
        assert "/unsubscribe/{token}" not in doc["paths"]
        body = doc["paths"]["/accounts/{account_id}"]["put"]["requestBody"]["content"]["application/json"]["schema"]
        assert body == {"$ref": "#/components/schemas/AccountBody"}
        error_body = doc["components"]["schemas"]["ErrorBody"]
        for path, methods in doc["paths"].items():
            for method, operation in methods.items():
                statuses = set(operation["responses"])
                assert "422" in statuses or path == "/webhooks/sendgrid", (path, method, statuses)
                for status, response in operation["responses"].items():
                    if status.startswith("4"):
                        # One shape: ErrorBody, or a model that adds fields to it (POST /runs'
                        # 409 names the run in flight) with `detail` and `errors` as they are.
                        ref = response["content"]["application/json"]["schema"]["$ref"]
                        schema = doc["components"]["schemas"][ref.rsplit("/", 1)[1]]
                        assert schema["required"][:1] == ["detail"], (path, method, status)
                        for name in ("detail", "errors"):
                            assert schema["properties"][name] == error_body["properties"][name], (path, method, status, name)

        shapes: list[Any] = []
        for response in (
            await http.post("/events", json={"type": "a.b", "account_id": "x", "at": 0}, headers=auth),
            await http.post("/events", json={"type": "a.b"}, headers=auth),
            await http.post("/events", content=b"{not json", headers={**auth, "content-type": "application/json"}),
            await http.post("/events", json={"type": "a.b", "account_id": "x"}),
            await http.get("/accounts/nobody", headers=auth),
            await http.get("/no/such/route", headers=auth),
            await http.delete("/events", headers=auth),
            await http.put("/accounts/a1", json={"id": "a2", "name": "Acme"}, headers=auth),
            await http.post("/runs", json={"playbook": "nope", "account_id": "a1"}, headers=auth),
            await http.post("/webhooks/sendgrid", content=b"[{}]"),
        ):
            shapes.append((response.status_code, sorted(response.json())))
        assert [status for status, _ in shapes] == [422, 422, 422, 401, 404, 404, 405, 409, 404, 400]
        assert all(keys == ["detail", "errors"] for _, keys in shapes), shapes

        refused = await http.post("/events", json={"type": "a.b", "account_id": "x", "at": 0}, headers=auth)
        assert refused.json()["errors"][0]["loc"] == ["body", "at"]
        assert "RFC 3339" in refused.json()["detail"]
        accepted = await http.post("/events", json={"type": "a.b", "account_id": "x", "at": "2026-03-01T09:30:00Z"}, headers=auth)
        assert accepted.status_code == 202 and accepted.json()["status"] == "accepted"
    # On loopback with no key an unsigned batch is taken: no 401 to document.
    assert "401" not in doc["paths"]["/webhooks/sendgrid"]["post"]["responses"]


async def test_api_contract_middleware_refusal_is_documented_in_the_error_shape(stack: Stack) -> None:
    async with serve(contract_app(stack, bind=EXPOSED)) as url, httpx.AsyncClient(base_url=url) as http:
        doc = (await http.get("/openapi.json")).json()
        refused = await http.post("/webhooks/sendgrid", json=[{"event": "open", "sg_event_id": "e1", "email": "a@b.example", "timestamp": 1}])
    assert refused.status_code == 401
    assert sorted(refused.json()) == ["detail", "errors"] and refused.json()["errors"] == []
    assert "TOUCHPOINT_SENDGRID_WEBHOOK_KEY" in refused.json()["detail"]
    documented = doc["paths"]["/webhooks/sendgrid"]["post"]["responses"]["401"]
    assert documented["content"]["application/json"]["schema"] == {"$ref": "#/components/schemas/ErrorBody"}
    assert "TOUCHPOINT_SENDGRID_WEBHOOK_KEY" in documented["description"]


async def test_api_contract_schema_describes_the_token_only_when_enforced(stack: Stack) -> None:
    async with serve(contract_app(stack, token=None)) as url, httpx.AsyncClient(base_url=url) as http:
        doc = (await http.get("/openapi.json")).json()
    assert "securitySchemes" not in json.dumps(doc)
    assert all("401" not in op["responses"] for methods in doc["paths"].values() for op in methods.values())
