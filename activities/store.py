"""The store's projection of runs: status, step, vars, scorecard, outcome and recent steps."""

from __future__ import annotations

import asyncio
import contextlib
import time
from dataclasses import dataclass, field
from functools import partial
from typing import Any

from sqlalchemy.orm import Session
from temporalio import activity
from temporalio.client import WorkflowExecutionStatus
from temporalio.common import WorkflowIDReusePolicy
from temporalio.exceptions import WorkflowAlreadyStartedError
from temporalio.service import RPCError, RPCStatusCode

from activities.deps import Deps
from touchpoint.dsl.runtime import (
    ApplyEventInput,
    ApplyResult,
    DeployedIndex,
    EventIn,
    LoadContextInput,
    LoadedContext,
    LoadedPlaybookVersion,
    LoadPlaybookInput,
    PlannedStart,
    PrepareStartsInput,
    ProjectRunInput,
    RunInput,
    TriggerEntry,
    initial_scorecard,
)
from touchpoint.dsl.schema import AccountDoc, Playbook, Workspace
from touchpoint.store import Event, repo, utcnow
from workflows import names

CLOSING_WAIT = 5.0
"""Seconds a start waits for an earlier run that has projected its end to close."""
DESCRIBE_EVERY = 300.0
"""Seconds between two checks of the same blocked run's workflow (`_unblock`): a trigger that
fires on every event while a long run is active costs one describe call per run per interval."""


class StoreActivities:
    """Keeps `runs` and `run_steps` current for `touchpoint status` and `GET /runs`."""

    def __init__(self, deps: Deps) -> None:
        self.deps = deps

    @activity.defn(name=names.PROJECT_RUN)
    async def project_run(self, input: ProjectRunInput) -> None:
        """Upsert the run's row (idempotent: the same input twice leaves the same row)."""

        def work(s: Session) -> None:
            repo.upsert_run(
                s,
                id=input.run_id,
                workflow_id=input.workflow_id,
                playbook_id=input.playbook,
                version=input.version,
                account_id=input.account_id,
                status=input.status,
                step=input.step,
                outcome=input.outcome,
                started_at=input.started_at,
                ended_at=input.ended_at,
                vars=input.vars,
                scorecard=input.scorecard,
                paused_reason=input.paused_reason,
            )
            if input.records and not repo.run_steps(s, input.run_id):
                for record in input.records:
                    repo.add_run_step(s, input.run_id, record.at, record.day, record.step, record.action, record.detail)

        await self.deps.db(work)
        if input.notify and input.status == "ended":
            # The account workflow lets the playbook start again (its handler ignores a repeat).
            try:
                await self.deps.client.get_workflow_handle(input.notify).signal(
                    "run_ended", {"playbook": input.playbook, "run_id": input.run_id, "outcome": input.outcome}
                )
            except RPCError as error:
                if error.status != RPCStatusCode.NOT_FOUND:
                    raise


def _not_started(s: Session, *, run_id: str) -> None:
    repo.upsert_run(s, id=run_id, status="ended", outcome="not_started", ended_at=utcnow())


def deploy_generation(s: Session) -> str:
    """A short hash of every current deployment: changes whenever anything is deployed."""
    import hashlib

    rows = sorted(f"{d.kind}/{d.name}/{d.version}" for d in repo.current_deployments(s))
    return hashlib.sha256("\n".join(rows).encode()).hexdigest()[:12]


def deployed_index(s: Session) -> DeployedIndex:
    """The triggers of every deployed playbook and the deployed workspace."""
    triggers = []
    for d in repo.current_deployments(s, "playbook"):
        playbook = Playbook.model_validate(d.content["playbook"])
        trigger = playbook.trigger
        triggers.append(
            TriggerEntry(
                playbook=d.name,
                version=d.version,
                kind=playbook.trigger_kind,
                event=getattr(trigger, "event", None),
                when=getattr(trigger, "when", None),
                reenroll=playbook.reenroll,
            )
        )
    return DeployedIndex(generation=deploy_generation(s), triggers=triggers, workspace=current_workspace(s))


def current_workspace(s: Session) -> Workspace:
    """The deployed workspace, or the defaults."""
    found = repo.get_deployment(s, "workspace", "workspace")
    return Workspace.model_validate(found.content) if found else Workspace()


def account_doc(doc: dict[str, Any], contacts: list[dict[str, Any]]) -> AccountDoc:
    """An account document from the store's row."""
    return AccountDoc.model_validate({**doc, "contacts": contacts})


@dataclass
class Projected:
    """What `_project_starts` found: versions of the runs to start, and runs already ended."""

    loaded: dict[str, LoadedPlaybookVersion] = field(default_factory=dict)
    ended: dict[str, str] = field(default_factory=dict)
    """Run id -> version, for a retried step whose run has since ended: nothing to start."""
    blocked: list[str] = field(default_factory=list)
    """Planned run ids whose `PlannedStart.after_run` has not ended: nothing written or started."""


class AccountActivities:
    """What account workflows read from and project into the store."""

    def __init__(self, deps: Deps) -> None:
        self.deps = deps
        # Deploys are rare and versions immutable: parse each deployed index and playbook
        # version once per worker, not once per account workflow.
        self._indexes: dict[str, DeployedIndex] = {}
        self._playbooks: dict[tuple[str, str], Playbook] = {}
        self._described: dict[str, float] = {}
        """Run id -> when `_unblock` last found its workflow running (monotonic seconds)."""

    @activity.defn(name=names.LOAD_INDEX)
    async def load_index(self, known: str | None = None) -> DeployedIndex:
        """The deployed triggers and workspace (``known``: the generation the caller wants)."""
        if known and known in self._indexes:
            return self._indexes[known]
        index = await self.deps.read(deployed_index)
        if len(self._indexes) > 16:
            self._indexes.clear()
        self._indexes[index.generation] = index
        return index

    @activity.defn(name=names.LOAD_ACCOUNT)
    async def load_account(self, account_id: str) -> AccountDoc | None:
        """An account document from the store (e.g. synced from a CRM), or None."""

        def work(s: Session) -> AccountDoc | None:
            found = repo.get_account(s, account_id)
            return account_doc(*found) if found else None

        return await self.deps.read(work)

    @activity.defn(name=names.LOAD_CONTEXT)
    async def load_context(self, input: LoadContextInput) -> LoadedContext:
        """`load_index` and `load_account` in one local activity (either part only when asked)."""
        index = await self.load_index(input.generation) if input.index else None
        account = await self.load_account(input.account_id) if input.account_id else None
        return LoadedContext(index=index, account=account)

    def _version(self, s: Session, playbook: str, version: str | None = None) -> LoadedPlaybookVersion | None:
        found = repo.get_deployment(s, "playbook", playbook, version)
        if found is None:
            return None
        key = (playbook, found.version)
        if key not in self._playbooks:
            if len(self._playbooks) > 256:
                self._playbooks.clear()
            self._playbooks[key] = Playbook.model_validate(found.content["playbook"])
        return LoadedPlaybookVersion(playbook=self._playbooks[key], version=found.version, workspace=current_workspace(s))

    def _project_starts(self, s: Session, account_id: str, starts: list[PlannedStart], ended_runs: set[str]) -> Projected:
        """Each start's current playbook version, with the run's row written as running.

        The row is keyed by the planned run id, so a retried step writes the same row again;
        a row that has ended since is left alone (`Projected.ended`). A start after an earlier
        run (`PlannedStart.after_run`) that is not in ``ended_runs`` is blocked: one run of a
        playbook per account at a time.
        """
        loaded: dict[str, LoadedPlaybookVersion] = {}
        ended: dict[str, str] = {}
        blocked: list[str] = []
        for start in starts:
            if start.after_run and start.after_run not in ended_runs:
                blocked.append(start.run_id)
                continue
            earlier = repo.get_run(s, start.run_id)
            if earlier is not None and earlier.status == "ended":
                # A retried step whose run has already started and ended (or never started):
                # leave its row as it is and start nothing (`_start_runs` skips ended rows).
                if earlier.outcome != "not_started":
                    ended[start.run_id] = earlier.version
                continue
            version = self._version(s, start.playbook)
            if version is None:
                continue
            loaded[start.playbook] = version
            repo.upsert_run(
                s,
                id=start.run_id,
                workflow_id=start.workflow_id,
                playbook_id=start.playbook,
                version=version.version,
                account_id=account_id,
                status="running",
                started_at=start.started_at,
                vars={},
                scorecard=initial_scorecard(version.playbook),
            )
        return Projected(loaded=loaded, ended=ended, blocked=blocked)

    @activity.defn(name=names.LOAD_PLAYBOOK)
    async def load_playbook(self, input: LoadPlaybookInput) -> LoadedPlaybookVersion | None:
        """A deployed playbook version (the current one by default) with the workspace."""
        return await self.deps.read(lambda s: self._version(s, input.playbook, input.version))

    async def _start_runs(self, account: AccountDoc, starts: list[PlannedStart], projected: Projected) -> dict[str, str]:
        """Start the planned runs whose rows were written (after the commit); returns their versions.

        Each `PlaybookRun` is started by the client, not as a child: the account workflow's
        history then holds neither the frozen playbook nor a child-start round trip. A retried
        step starts nothing twice: the run's id is in the workflow's memo, and a running workflow
        with the same workflow id and run id is this step's own earlier start.
        """
        started: dict[str, str] = {}
        for start in starts:
            if start.run_id in projected.ended:
                started[start.playbook] = projected.ended[start.run_id]
                continue
            version = projected.loaded.get(start.playbook)
            if version is None:
                continue
            run = RunInput(
                run_id=start.run_id, playbook=version.playbook, version=version.version, account=account, workspace=version.workspace,
                event=start.event, account_workflow_id=start.account_workflow_id, projected=True, report_end=start.report_end,
            )
            if await self._start_run(run, start):
                started[start.playbook] = version.version
            else:
                # An earlier run of this playbook still runs: this one never starts.
                await self.deps.db(partial(_not_started, run_id=start.run_id))
        return started

    async def _start_run(self, run: RunInput, start: PlannedStart) -> bool:
        """Start one run (eagerly: its first workflow task comes back with the start, to this
        worker); False if another run of the playbook holds the workflow id.

        An earlier run that the store already holds as ended (``after_run``) is only finishing
        its last workflow task: wait for it to close, then start.
        """
        client = self.deps.client
        for attempt in range(2):
            try:
                await client.start_workflow(
                    names.PLAYBOOK_RUN, run, id=start.workflow_id, task_queue=activity.info().task_queue,
                    id_reuse_policy=WorkflowIDReusePolicy.ALLOW_DUPLICATE, memo={"run_id": start.run_id},
                    request_eager_start=True,
                )
                return True
            except WorkflowAlreadyStartedError:
                running = await client.get_workflow_handle(start.workflow_id).describe()
                holder = await running.memo_value("run_id", None)
                if holder == start.run_id:
                    return True  # this step's own earlier start (a retried step)
                # The earlier run the store holds as ended is only closing (a run started as a
                # child, before the memo, has none): wait for it once, then start.
                if attempt or start.after_run is None or holder not in (start.after_run, None):
                    return False
                with contextlib.suppress(Exception):
                    await asyncio.wait_for(client.get_workflow_handle(start.workflow_id, run_id=running.run_id).result(), CLOSING_WAIT)
        return False

    @activity.defn(name=names.PREPARE_STARTS)
    async def prepare_starts(self, input: PrepareStartsInput) -> dict[str, str]:
        """Write each start's run row with its playbook's current version, then start the run.

        Returns:
            The version each run started with, by playbook id (none for a playbook that is not
            deployed or whose earlier run still runs).
        """
        projected = await self.deps.db(lambda s: self._project_starts(s, input.account_id, input.starts, set()))
        return await self._start_runs(input.account, input.starts, projected)

    @activity.defn(name=names.PREPARE_STARTS_V2)
    async def prepare_starts_v2(self, input: PrepareStartsInput) -> ApplyResult:
        """`prepare_starts` for `AccountWorkflowV2`: also which earlier runs (``after_run``) have
        ended, and which starts are blocked because theirs still runs."""
        after = [start.after_run for start in input.starts if start.after_run]

        def work(s: Session) -> tuple[Projected, set[str]]:
            ended = repo.ended_run_ids(s, after) if after else set()
            return self._project_starts(s, input.account_id, input.starts, ended), ended

        projected, ended = await self.deps.db(work)
        ended.update(await self._unblock(input.account_id, input.starts, projected))
        started = await self._start_runs(input.account, input.starts, projected)
        return ApplyResult(accepted=True, started=started, ended=sorted(ended), blocked=projected.blocked)

    async def _unblock(self, account_id: str, starts: list[PlannedStart], projected: Projected) -> set[str]:
        """Blocked starts whose earlier run's workflow has closed without projecting its end
        (terminated, or timed out, from outside Touchpoint): that run's row is ended with outcome
        ``terminated`` and the start goes ahead (its row is written, ``projected`` updated).

        Returns:
            The earlier runs found closed.
        """
        gone: set[str] = set()
        now = time.monotonic()
        for start in starts:
            if start.run_id not in projected.blocked or start.after_run is None:
                continue
            if now - self._described.get(start.after_run, -DESCRIBE_EVERY) < DESCRIBE_EVERY:
                continue
            try:
                described = await self.deps.client.get_workflow_handle(start.workflow_id).describe()
            except RPCError as error:
                if error.status != RPCStatusCode.NOT_FOUND:
                    raise
                gone.add(start.after_run)  # closed, and past the namespace's retention
                continue
            # The latest execution of the run's workflow id: if it is closed, so is every
            # earlier one, whatever run it was (runs started as children carry no memo).
            if described.status == WorkflowExecutionStatus.RUNNING:
                if len(self._described) > 10_000:
                    self._described.clear()
                self._described[start.after_run] = now
            else:
                gone.add(start.after_run)
        if not gone:
            return gone
        retry = [start for start in starts if start.run_id in projected.blocked and start.after_run in gone]

        def work(s: Session) -> Projected:
            for run_id in gone:
                row = repo.get_run(s, run_id)
                if row is not None and row.status != "ended":
                    repo.upsert_run(s, id=run_id, status="ended", outcome="terminated", ended_at=utcnow())
            return self._project_starts(s, account_id, retry, gone)

        more = await self.deps.db(work)
        projected.loaded.update(more.loaded)
        projected.ended.update(more.ended)
        projected.blocked = [run_id for run_id in projected.blocked if run_id not in {start.run_id for start in retry}]
        return gone

    @activity.defn(name=names.APPLY_EVENT)
    async def apply_event(self, input: ApplyEventInput) -> bool:
        """Version 1, for histories recorded before `apply_event_v2`: True unless a duplicate."""
        return (await self.apply_event_v2(input)).accepted

    @activity.defn(name=names.APPLY_EVENT_V2)
    async def apply_event_v2(self, input: ApplyEventInput) -> ApplyResult:
        """Record the event and what it derived, and upsert the account, in one transaction.

        A local activity's write commits even when the workflow task around it then times out;
        the retried task applies the same event again with the same ``token``. That is not a
        duplicate: it is accepted again, with the events the first attempt derived (the retry
        compares the upsert with a store that already holds it, and would derive nothing).

        Returns:
            ``accepted`` False when the event's id was stored by anything else (an old
            duplicate): nothing else is done.
        """

        return await self.deps.db(lambda s: self._apply(s, input))

    @activity.defn(name=names.APPLY_EVENT_V3)
    async def apply_event_v3(self, input: ApplyEventInput) -> ApplyResult:
        """`apply_event_v2`, and in the same transaction the runs it starts: their playbook
        versions are loaded and their rows written (`ApplyEventInput.starts`); once committed,
        the runs are started (`_start_runs`).

        A retried step (``earlier`` set) projects no runs: the workflow plans its starts again
        from the earlier events and prepares them with `prepare_starts` (`prepare_starts_v2`).
        With ``active``, it also says which of those runs have ended (`ApplyResult.ended`) and
        which starts wait for an earlier run that still runs (`ApplyResult.blocked`).
        """

        projected = Projected()

        def work(s: Session) -> ApplyResult:
            nonlocal projected
            result = self._apply(s, input)
            if not result.accepted:
                return result
            ended = repo.ended_run_ids(s, input.active) if input.active else set()
            result.ended = sorted(ended)
            if result.earlier is None and input.starts:
                projected = self._project_starts(s, self._account_id(input), input.starts, ended)
                result.blocked = projected.blocked
            return result

        result = await self.deps.db(work)
        if projected.blocked:
            result.ended = sorted({*result.ended, *await self._unblock(self._account_id(input), input.starts, projected)})
            result.blocked = projected.blocked
        if (projected.loaded or projected.ended) and input.account is not None:
            result.started = await self._start_runs(input.account, input.starts, projected)
        return result

    @staticmethod
    def _account_id(input: ApplyEventInput) -> str:
        return input.event.account_id or (input.account.id if input.account else "")

    def _apply(self, s: Session, input: ApplyEventInput) -> ApplyResult:
        event = input.event
        account_id = self._account_id(input)
        if event.id is not None and not repo.record_event(
            s, event.id, account_id, event.type, event.at or utcnow(), event.data, applied_by=input.token
        ):
            stored = s.get(Event, event.id)
            if input.token is None or stored is None or stored.applied_by != input.token:
                return ApplyResult(accepted=False)
            earlier = [
                EventIn(id=e.id, type=e.type, at=e.at, data=dict(e.data or {}), account_id=e.account_id)
                for e in repo.derived_events(s, event.id)
            ]
            return ApplyResult(accepted=True, earlier=earlier)
        if input.account is not None:
            doc = input.account.model_dump(mode="json")
            contacts = doc.pop("contacts")
            repo.upsert_account(s, doc, contacts)
        for item in input.derived:
            if item.id is not None:
                repo.record_event(s, item.id, item.account_id or account_id, item.type, item.at or utcnow(), item.data)
        return ApplyResult(accepted=True)
