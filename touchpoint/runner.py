"""The workflow sandbox, made cheaper per workflow instance and per activation.

`ContextFreeRunner` stops asking the sandbox for serialization contexts nobody reads;
`cache_workflow_code` compiles the workflow modules once for all sandboxed instances.

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

import importlib.abc
import importlib.machinery
import importlib.util
import os
import sys
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


class WorkflowCodeCache(importlib.abc.MetaPathFinder):
    """Serves the workflow modules' compiled code from memory to every sandboxed import.

    The sandbox executes a workflow's module again for each new workflow instance (its own
    module objects, so no state leaks between runs). Through the ordinary import system that
    means searching `sys.path` for the module and its package, reading and unmarshalling the
    `.pyc`, for every instance: a third of the cost of a new instance, and a private copy of
    every code object of the module in each cached workflow (measured in `bench/`). This
    finder, first on `sys.meta_path`, answers for the named modules only, with a loader that
    compiled each once; modules are still executed afresh, inside the sandbox, per instance.

    A side effect worth having: a worker runs the workflow code it started with, even if the
    files change under it (as pass-through modules already do).
    """

    def __init__(self) -> None:
        self._specs: dict[str, tuple[str, bool]] = {}  # module name -> (file, is package)
        self._code: dict[str, Any] = {}

    def add_module(self, name: str) -> None:
        """Serve ``name`` (an imported module) and its parent packages from this cache."""
        while name:
            module = sys.modules.get(name)
            path = getattr(module, "__file__", None)
            if module is None or not path or not path.endswith(".py") or name == "__main__":
                return
            if name not in self._specs:
                self._specs[name] = (path, hasattr(module, "__path__"))
                _CachedSourceLoader(name, path, self._code).get_code(name)  # compiled now, once
            name = name.rpartition(".")[0]

    def find_spec(self, fullname: str, path: Any = None, target: Any = None) -> importlib.machinery.ModuleSpec | None:
        entry = self._specs.get(fullname)
        if entry is None:
            return None
        file, package = entry
        loader = _CachedSourceLoader(fullname, file, self._code)
        locations = [os.path.dirname(file)] if package else None
        return importlib.util.spec_from_file_location(fullname, file, loader=loader, submodule_search_locations=locations)


class _CachedSourceLoader(importlib.machinery.SourceFileLoader):
    def __init__(self, fullname: str, path: str, cache: dict[str, Any]) -> None:
        super().__init__(fullname, path)
        self._cache = cache

    def get_code(self, fullname: str) -> Any:
        code = self._cache.get(fullname)
        if code is None:
            code = self._cache[fullname] = super().get_code(fullname)
        return code


_CODE_CACHE = WorkflowCodeCache()


def cache_workflow_code(workflows: Sequence[type]) -> None:
    """Serve the modules of ``workflows`` (and their packages) from `WorkflowCodeCache`."""
    for cls in workflows:
        _CODE_CACHE.add_module(cls.__module__)
    if _CODE_CACHE not in sys.meta_path:
        sys.meta_path.insert(0, _CODE_CACHE)
