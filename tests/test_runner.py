"""`touchpoint.runner`: the sandbox without per-payload context questions, only where nobody reads them."""

from __future__ import annotations

import dataclasses
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

from tests.conftest import Stack, write_folder
from tests.test_interpreter import ACCOUNT, WORKSPACE
from touchpoint.dsl.runtime import EventIn, RunInput, RunResult
from touchpoint.runner import context_free
from worker import build_worker


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
