"""The workflow sandbox, without asking it for serialization contexts nobody reads.

For every payload sequence of every activation, temporalio (1.35) asks the workflow instance for
a serialization context and an external-storage context, three times on the way in and three
times on the way out. With the sandbox, each question is a trip into it (`exec` of a small
snippet under the sandbox's importer): ~0.4 ms each, about a fifth of the worker's event-loop
time on the enrollment path (measured with py-spy, bench/RESULTS.md).

The answers are only used by a payload codec and by external payload storage, outside the
sandbox. Touchpoint's data converter has neither (pydantic JSON), so `ContextFreeRunner` answers
those two questions itself and leaves everything else, activations above all, to the sandboxed
instance: workflow code still runs in the sandbox with the same restrictions.
`worker.build_worker` uses it only when the client's converter has no codec and no external
storage; otherwise the plain sandbox runner is used.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import temporalio.workflow
from temporalio.bridge.proto.workflow_activation import WorkflowActivation
from temporalio.bridge.proto.workflow_completion import WorkflowActivationCompletion
from temporalio.converter import (
    DataConverter,
    SerializationContext,
    StorageDriverStoreContext,
    StorageDriverWorkflowInfo,
)
from temporalio.worker import WorkflowInstance, WorkflowInstanceDetails, WorkflowRunner


def context_free(converter: DataConverter) -> bool:
    """Whether payloads leave the worker without a codec or external storage (contexts unused)."""
    return converter.payload_codec is None and converter.external_storage is None


class ContextFreeRunner(WorkflowRunner):
    """Wraps a runner (the sandbox); its instances answer context questions without entering it."""

    def __init__(self, inner: WorkflowRunner) -> None:
        self.inner = inner

    def prepare_workflow(self, defn: temporalio.workflow._Definition) -> None:
        self.inner.prepare_workflow(defn)

    def create_instance(self, det: WorkflowInstanceDetails) -> WorkflowInstance:
        return _ContextFreeInstance(self.inner.create_instance(det))

    def set_worker_level_failure_exception_types(self, types: Sequence[type[BaseException]]) -> None:
        self.inner.set_worker_level_failure_exception_types(types)


class _ContextFreeInstance(WorkflowInstance):
    def __init__(self, inner: WorkflowInstance) -> None:
        self.inner = inner
        info = inner.get_info()
        self.store_context = StorageDriverStoreContext(
            target=StorageDriverWorkflowInfo(namespace=info.namespace, id=info.workflow_id, run_id=info.run_id, type=info.workflow_type)
        )

    def activate(self, act: WorkflowActivation) -> WorkflowActivationCompletion:
        return self.inner.activate(act)

    def get_serialization_context(self, command_info: Any) -> SerializationContext | None:
        return None  # the context-free converter: no codec would read a context

    def get_external_store_context(self, command_info: Any) -> StorageDriverStoreContext:
        return self.store_context  # no external storage would read it

    def get_info(self) -> temporalio.workflow.Info:
        return self.inner.get_info()

    def get_thread_id(self) -> int | None:
        return self.inner.get_thread_id()
