"""`touchpoint.runner`: the sandbox without per-payload context questions, only where nobody reads them."""

from __future__ import annotations

import dataclasses
import importlib
import shutil
import sys
import uuid
from collections.abc import Sequence
from pathlib import Path

from temporalio.api.common.v1 import Payload
from temporalio.client import Client
from temporalio.contrib.pydantic import pydantic_data_converter
from temporalio.converter import (
    ActivitySerializationContext,
    PayloadCodec,
    SerializationContext,
    WithSerializationContext,
)
from temporalio.testing import WorkflowEnvironment
from temporalio.worker import Worker

from tests.conftest import Stack, write_folder
from tests.test_interpreter import ACCOUNT, WORKSPACE
from touchpoint.dsl.runtime import EventIn, RunInput, RunResult
from touchpoint.runner import cache_workflow_code, context_free
from worker import build_worker, sandbox_runner


class RecordingCodec(PayloadCodec, WithSerializationContext):
    """Passes payloads through and remembers the contexts the worker gave it."""

    def __init__(self, seen: list[SerializationContext], context: SerializationContext | None = None) -> None:
        self.seen, self.context = seen, context

    def with_context(self, context: SerializationContext) -> RecordingCodec:
        self.seen.append(context)
        return RecordingCodec(self.seen, context)

    async def encode(self, payloads: Sequence[Payload]) -> list[Payload]:
        return list(payloads)

    async def decode(self, payloads: Sequence[Payload]) -> list[Payload]:
        return list(payloads)


def test_runner_is_context_free_only_without_codec_or_external_storage() -> None:
    assert context_free(pydantic_data_converter)
    assert not context_free(dataclasses.replace(pydantic_data_converter, payload_codec=RecordingCodec([])))


async def test_runner_a_codec_still_gets_each_activity_context(stack: Stack, folder: Path) -> None:
    """With a codec the plain sandbox runner is used: the codec sees the activity's context."""
    seen: list[SerializationContext] = []
    converter = dataclasses.replace(pydantic_data_converter, payload_codec=RecordingCodec(seen))
    client = Client(**{**stack.client.config(), "data_converter": converter})
    write_folder(folder, {"workspace.yaml": WORKSPACE, "p.yaml": "playbook: p\ntrigger: manual\nsteps:\n  - note: {text: hello}\n"})
    project = stack.deploy(folder)
    loaded = project.playbooks["p"]
    run = RunInput(run_id=f"run-{uuid.uuid4().hex[:8]}", playbook=loaded.playbook, version=loaded.version, account=ACCOUNT, workspace=project.workspace, event=EventIn(type="manual"))
    queue = f"codec-{uuid.uuid4().hex[:6]}"
    async with build_worker(client, stack.deps, task_queue=queue, strict_imports=True, fail_fast=True):
        result = await client.execute_workflow("PlaybookRun", run, id=f"run/p/{run.run_id}", task_queue=queue, result_type=RunResult)
    assert result.outcome == "completed"
    activities = {c.activity_type for c in seen if isinstance(c, ActivitySerializationContext)}
    assert "add_note" in activities


FLOW = '''
from temporalio import workflow


@workflow.defn(name="{name}")
class Flow:
    @workflow.run
    async def run(self) -> str:
        return "{answer}"
'''


async def test_runner_sandboxed_instances_run_the_workflow_code_the_worker_started_with(time_env: WorkflowEnvironment, tmp_path: Path) -> None:
    """Each new instance executes the module again, from the code compiled at worker start."""
    package = f"cached_flows_{uuid.uuid4().hex[:8]}"
    name = f"Flow{uuid.uuid4().hex[:6]}"
    (tmp_path / package).mkdir()
    (tmp_path / package / "__init__.py").write_text("")
    module_file = tmp_path / package / "flow.py"
    module_file.write_text(FLOW.format(name=name, answer="compiled at start"))
    sys.path.insert(0, str(tmp_path))
    try:
        module = importlib.import_module(f"{package}.flow")
        cache_workflow_code([module.Flow])
        # An edit on disk while the worker runs: without the cache, the sandbox would import it.
        module_file.write_text(FLOW.format(name=name, answer="edited later"))
        shutil.rmtree(tmp_path / package / "__pycache__", ignore_errors=True)
        queue = f"cache-{uuid.uuid4().hex[:6]}"
        async with Worker(time_env.client, task_queue=queue, workflows=[module.Flow], workflow_runner=sandbox_runner()):
            answers = [
                await time_env.client.execute_workflow(name, id=f"flow-{uuid.uuid4().hex[:8]}", task_queue=queue, result_type=str)
                for _ in range(2)
            ]
    finally:
        sys.path.remove(str(tmp_path))
    assert answers == ["compiled at start", "compiled at start"]
