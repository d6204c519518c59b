"""`touchpoint setup`: prepare a Temporal namespace and the store, idempotently.

1. The namespace `TOUCHPOINT_TEMPORAL_NAMESPACE`: described, and registered when a self-hosted
   cluster does not have it (Temporal Cloud namespaces are created in Cloud; setup says so).
2. Search attributes Touchpoint uses (`touchpoint.temporal_server.SEARCH_ATTRIBUTES`): added when
   missing, left alone when present.
3. The store's schema: Alembic migrations to the latest revision.
4. With a playbooks folder: its Schedules (`touchpoint.schedules.sync_schedules`), the same as
   `touchpoint deploy` does after publishing.

Running it twice changes nothing the second time.
"""

from __future__ import annotations

import asyncio
import re
from datetime import timedelta
from pathlib import Path

from google.protobuf.duration_pb2 import Duration
from temporalio.api.enums.v1 import IndexedValueType
from temporalio.api.operatorservice.v1 import AddSearchAttributesRequest, ListSearchAttributesRequest
from temporalio.api.workflowservice.v1 import DescribeNamespaceRequest, RegisterNamespaceRequest
from temporalio.client import Client
from temporalio.service import RPCError, RPCStatusCode

from touchpoint.config import Settings, mask_url


async def prepare(config: Settings, folder: Path | None, *, retention_days: int = 30) -> list[str]:
    """Do every step; one line per step saying what it did.

    Raises:
        RuntimeError: Temporal is unreachable, the namespace cannot be created, or the folder
            has problems (each listed).
    """
    from touchpoint.connection import connect
    from touchpoint.store import make_engine, migrate

    lines: list[str] = []
    try:
        client = await connect(config)
    except RuntimeError as exc:
        raise RuntimeError(f"cannot reach Temporal at {config.temporal_address}: {exc}") from None
    lines.append(await ensure_namespace(client, config, retention_days))
    lines.append(await ensure_search_attributes(client, config))
    engine = make_engine(config.db_url)
    try:
        await asyncio.to_thread(migrate, engine)
    finally:
        engine.dispose()
    lines.append(f"store: schema up to date at {mask_url(config.db_url)}")
    if folder is not None:
        from touchpoint.dsl.validate import load_project
        from touchpoint.schedules import sync_schedules

        project = load_project(folder)
        if project.problems:
            raise RuntimeError(f"{folder} has problems; run `touchpoint validate {folder}`:\n" + "\n".join(str(p) for p in project.problems))
        changes = await sync_schedules(client, project, task_queue=config.task_queue, crm_backend=config.crm_backend)
        lines += [f"schedules: {line}" for line in changes] or ["schedules: none needed"]
    else:
        lines.append("schedules: skipped (give a playbooks folder, or run `touchpoint deploy FOLDER`)")
    return lines


async def ensure_namespace(client: Client, config: Settings, retention_days: int) -> str:
    """Describe the namespace; register it on a self-hosted cluster when it is missing."""
    name = config.temporal_namespace
    try:
        await client.workflow_service.describe_namespace(DescribeNamespaceRequest(namespace=name))
        return f"namespace {name!r}: exists"
    except RPCError as exc:
        if exc.status != RPCStatusCode.NOT_FOUND:
            raise RuntimeError(f"cannot describe namespace {name!r}: {exc}") from None
    if config.temporal_api_key is not None or config.temporal_address.endswith(".tmprl.cloud:7233"):
        raise RuntimeError(f"namespace {name!r} does not exist: create it in Temporal Cloud (tcld or the web UI), then run setup again")
    retention = Duration()
    retention.FromTimedelta(timedelta(days=retention_days))
    try:
        await client.workflow_service.register_namespace(
            RegisterNamespaceRequest(namespace=name, workflow_execution_retention_period=retention)
        )
    except RPCError as error:
        if error.status != RPCStatusCode.ALREADY_EXISTS:
            raise RuntimeError(f"cannot register namespace {name!r}: {error}") from None
        return f"namespace {name!r}: exists"
    # A new namespace takes a moment to be served by every frontend.
    for _ in range(50):
        try:
            await client.workflow_service.describe_namespace(DescribeNamespaceRequest(namespace=name))
            break
        except RPCError:
            await asyncio.sleep(0.2)
    return f"namespace {name!r}: registered (retention {retention_days} days)"


async def ensure_search_attributes(client: Client, config: Settings) -> str:
    """Add the search attributes Touchpoint declares (``Name=Type``) that the namespace lacks."""
    from touchpoint.temporal_server import SEARCH_ATTRIBUTES

    if not SEARCH_ATTRIBUTES:
        return "search attributes: none needed"
    wanted = {name: kind for name, _, kind in (item.partition("=") for item in SEARCH_ATTRIBUTES)}
    try:
        listed = await client.operator_service.list_search_attributes(ListSearchAttributesRequest(namespace=config.temporal_namespace))
    except RPCError as exc:
        raise RuntimeError(f"cannot list search attributes of {config.temporal_namespace!r}: {exc}") from None
    present = set(listed.custom_attributes)
    missing = {name: kind for name, kind in wanted.items() if name not in present}
    if not missing:
        return f"search attributes: {len(wanted)} present"
    request = AddSearchAttributesRequest(
        namespace=config.temporal_namespace,
        search_attributes={name: IndexedValueType.Value("INDEXED_VALUE_TYPE_" + re.sub(r"(?<=[a-z])(?=[A-Z])", "_", kind).upper()) for name, kind in missing.items()},
    )
    try:
        await client.operator_service.add_search_attributes(request)
    except RPCError as exc:
        raise RuntimeError(
            f"cannot add search attributes {sorted(missing)} to {config.temporal_namespace!r}: {exc}"
            " (on Temporal Cloud add them with tcld or the web UI)"
        ) from None
    return f"search attributes: added {', '.join(sorted(missing))}"
