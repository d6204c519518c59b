"""The account workflow's store steps: what it reads, the events it applies, the runs it projects."""

from __future__ import annotations

import uuid
from typing import Any

from sqlalchemy.orm import Session
from temporalio import activity

from activities.deps import Deps
from touchpoint.dsl.accounts import AccountDoc
from touchpoint.dsl.runtime import EffectInput, EventIn, StepRecord, initial_scorecard
from touchpoint.dsl.schema import Playbook
from touchpoint.dsl.workspace import Workspace
from touchpoint.namespace import has_search_attributes
from touchpoint.observability.metrics import email_outcome
from touchpoint.store import Event, repo, utcnow
from touchpoint.store.rollups import Line, RunOf, timeline
from workflows import enrolling, names
from workflows.messages import (
    DeployedIndex,
    FirstResult,
    FirstStep,
    LoadContextInput,
    Loaded,
    LoadedContext,
    PlannedStart,
    PrepareStarts,
    ProjectRuns,
    RunProjection,
    StoreResult,
    StoreStep,
    TriggerEntry,
)


def deploy_generation(s: Session) -> str:
    """A short hash of every current deployment: changes whenever anything is deployed."""
    return repo.deploy_generation(s)


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


class AccountActivities:
    """What account workflows read from and write into the store: their store steps."""

    def __init__(self, deps: Deps) -> None:
        self.deps = deps
        # Deploys are rare and versions immutable: parse each deployed index and playbook
        # version once per worker, not once per account workflow.
        self._indexes: dict[str, DeployedIndex] = {}
        self._loaded: dict[tuple[str, str, str | None], Loaded] = {}

    @activity.defn(name=names.LOAD_CONTEXT)
    async def load_context(self, input: LoadContextInput) -> LoadedContext:
        """The deployed index, the stored account and run programs, each only when asked."""

        def work(s: Session) -> LoadedContext:
            index = self._index(s, input.generation) if input.index else None
            account = None
            if input.account_id:
                found = repo.get_account(s, input.account_id)
                account = account_doc(*found) if found else None
            programs = [loaded for key in input.programs if (loaded := self._program(s, *key.split("@", 1))) is not None]
            return LoadedContext(index=index, account=account, programs=programs)

        context = await self.deps.read(work)
        if input.search_attributes:
            context.search_attributes = await has_search_attributes(self.deps.client)
        return context

    def _program(self, s: Session, playbook: str, version: str | None = None) -> Loaded | None:
        """A deployed playbook version (the current one without ``version``) with the current
        workspace. Versions are immutable: each pair is read and parsed once per worker, and an
        enrollment reads only the two current version ids."""
        if version is None:
            version, workspace = repo.current_with_workspace(s, playbook)
            if version is None:
                return None
        else:
            workspace = repo.current_version(s, "workspace", "workspace")
        key = (playbook, version, workspace)
        loaded = self._loaded.get(key)
        if loaded is None:
            found = repo.get_deployment(s, "playbook", playbook, version)
            if found is None:
                return None
            stored = repo.get_deployment(s, "workspace", "workspace", workspace) if workspace else None
            settings = Workspace.model_validate(stored.content) if stored else Workspace()
            loaded = Loaded(playbook=Playbook.model_validate(found.content["playbook"]), version=version, workspace=settings)
            if len(self._loaded) > 256:
                self._loaded.clear()
            self._loaded[key] = loaded
        return loaded

    def _start(self, s: Session, account_id: str, starts: list[PlannedStart], known: list[str], result: StoreResult) -> None:
        """Write each start's run row with its playbook's current version (`result.started`).

        The row is keyed by the planned run id, so a retried step writes the same row again.
        A playbook that is not deployed starts nothing.
        """
        for start in starts:
            loaded = self._program(s, start.playbook)
            if loaded is None:
                continue
            result.started[start.run_id] = loaded.version
            if loaded.key not in known and all(p.key != loaded.key for p in result.programs):
                result.programs.append(loaded)
            repo.add_run(
                s,
                id=start.run_id,
                workflow_id=start.workflow_id,
                playbook_id=start.playbook,
                version=loaded.version,
                account_id=account_id,
                status="running",
                started_at=start.started_at,
                vars={},
                scorecard=initial_scorecard(loaded.playbook),
            )

    @activity.defn(name=names.APPLY_EVENT)
    async def apply_event(self, input: StoreStep) -> StoreResult:
        """Record the event and what it derived, upsert the account, write the rows of the runs
        it starts and the projections of runs that moved: one transaction.

        A local activity's write commits even when the workflow task around it then times out;
        the retried task applies the same event again with the same ``token``. That is not a
        duplicate: it is accepted again with the events the first attempt derived (`earlier`),
        and starts nothing itself (the workflow plans its starts from those events again).

        Returns:
            ``accepted`` False when the event's id was stored by anything else (an old
            duplicate): nothing else is done.
        """
        return await self.deps.db(lambda s: self._apply(s, input))

    def _apply(self, s: Session, input: StoreStep) -> StoreResult:
        event = input.event
        account_id = event.account_id or (input.account.id if input.account else "")
        project_runs(s, input.projections)
        if event.id is not None and not repo.record_event(s, event.id, account_id, event.type, event.at or utcnow(), event.data, applied_by=input.token):
            stored = s.get(Event, event.id)
            if input.token is None or stored is None or stored.applied_by != input.token:
                return StoreResult(accepted=False)
            earlier = [EventIn(id=e.id, type=e.type, at=e.at, data=dict(e.data or {}), account_id=e.account_id) for e in repo.derived_events(s, event.id)]
            return StoreResult(accepted=True, earlier=earlier)
        if input.account is not None:
            doc = input.account.model_dump(mode="json")
            contacts = doc.pop("contacts")
            repo.upsert_account(s, doc, contacts)
        repo.record_events(
            s, [{"id": e.id, "account_id": e.account_id or account_id, "type": e.type, "at": e.at or utcnow(), "data": e.data} for e in input.derived if e.id is not None]
        )
        result = StoreResult(accepted=True)
        self._start(s, account_id, input.starts, input.known, result)
        return result

    @activity.defn(name=names.APPLY_FIRST)
    async def apply_first(self, input: FirstStep) -> FirstResult:
        """A fresh account workflow's first upsert in one store step: read the deployed index and
        the stored account, derive and plan as the workflow does (`workflows.enrolling`, with no
        run in flight and nothing started before), then apply as `apply_event` (one transaction).

        Run ids are a hash of the step's ``token`` and the playbook, so a retried workflow task
        writes the same rows; when this very step applied the event before, the plan is made
        again from the events it derived then (`StoreResult.earlier`).
        """
        found = await has_search_attributes(self.deps.client) if input.search_attributes else False
        envelope, account_id = input.envelope, input.account_id
        event = envelope.event

        def new_id(playbook: str, position: int) -> str:
            return str(uuid.uuid5(uuid.NAMESPACE_URL, f"touchpoint:{input.token}:{position}:{playbook}"))

        def work(s: Session) -> FirstResult:
            index = self._index(s, envelope.generation)
            stored = repo.get_account(s, account_id)
            previous = account_doc(*stored) if stored else None
            assert envelope.account is not None
            doc = enrolling.with_defaults(envelope.account, previous, index.workspace, input.now)
            derived = enrolling.derive_upsert(previous, doc, event, account_id, str(uuid.uuid4()))

            def plan_of(events: list[EventIn]) -> list[list[PlannedStart]]:
                return enrolling.plan(index, doc, events, now=input.now, taken=set(), last_started={}, workflow_id=input.workflow_id, new_id=new_id)

            plan = plan_of(derived)
            step = StoreStep(
                account=doc, event=event, derived=[d for d in derived if d is not event], token=input.token,
                starts=[start for starts in plan for start in starts],
            )
            result = self._apply(s, step)
            out = FirstResult(index=index, previous=previous, account=doc, plan=plan, store=result, search_attributes=found)
            if result.accepted and result.earlier is not None:
                # This step ran before (a retried task): the store already held the upsert.
                out.plan = plan_of(result.earlier)
                self._start(s, account_id, [start for starts in out.plan for start in starts], [], result)
            return out

        return await self.deps.db(work)

    def _index(self, s: Session, generation: str | None) -> DeployedIndex:
        """The deployed index at ``generation`` (parsed once per generation), else the current one."""
        index = self._indexes.get(generation or "")
        if index is None:
            index = deployed_index(s)
            if len(self._indexes) > 16:
                self._indexes.clear()
            self._indexes[index.generation] = index
        return index

    @activity.defn(name=names.PREPARE_STARTS)
    async def prepare_starts(self, input: PrepareStarts) -> StoreResult:
        """The rows of runs a request starts (and projections of runs that moved)."""

        def work(s: Session) -> StoreResult:
            project_runs(s, input.projections)
            result = StoreResult()
            self._start(s, input.account_id, input.starts, input.known, result)
            return result

        return await self.deps.db(work)

    @activity.defn(name=names.PROJECT_RUNS)
    async def project_runs(self, input: ProjectRuns) -> None:
        """Where runs stand, and their new timeline lines (idempotent)."""
        await self.deps.db(lambda s: project_runs(s, input.runs))


async def write_carried(deps: Deps, input: EffectInput) -> None:
    """The run projections an effect carries (`EffectInput.projections`), before its own work:
    an activation that starts an effect needs no store step of its own for the runs that moved."""
    if input.projections and not input.simulation:
        await deps.db(lambda s: project_runs(s, input.projections))


def project_runs(s: Session, projections: list[RunProjection]) -> None:
    """Write each projection unless the row already holds a newer one; timeline lines once each."""
    for p in projections:
        wrote = repo.project_run(
            s,
            id=p.run_id,
            position=p.position,
            workflow_id=p.workflow_id,
            playbook_id=p.playbook,
            version=p.version,
            account_id=p.account_id,
            status=p.status,
            step=p.step,
            outcome=p.outcome,
            started_at=p.started_at,
            ended_at=p.ended_at,
            vars=p.vars,
            scorecard=p.scorecard,
            paused_reason=p.paused_reason,
            waiting=p.waiting,
            held_out=p.held_out,
            enrolled_until=p.enrolled_until,
            variant=p.variant,
        )
        # The row now holds what the projection says (unless a newer one was there: read it then).
        run = RunOf(p.playbook, p.version, p.started_at) if wrote else None
        # The lines before these: none before a run's first line, else read once for all of them.
        prior: list[Line] | None = [] if p.records and p.records[0].seq == 1 else None
        for record in p.records:
            if prior is None:
                prior = timeline(s, p.run_id)
            added = repo.add_run_step(s, p.run_id, record.at, record.day, record.step, record.action, record.detail, seq=record.seq, run=run, prior=prior)
            if added and record.action == "email":
                _count_email_line(s, p.playbook, record)
        if p.events:
            repo.record_events(s, [{"id": e.id, "account_id": e.account_id, "type": e.type, "at": e.at, "data": e.data} for e in p.events])
        decided = [record.model_dump() for record in p.records if record.action == "approval"]
        closing = p.status == "ended" and p.asked_approval
        if decided or closing:
            repo.settle_from_timeline(s, p.run_id, closing, decided)


def _count_email_line(s: Session, playbook: str, record: StepRecord) -> None:
    """Emails only the run's timeline knows of (the email activity counts outcomes): a held one
    (it waited for a window, holiday or cap), and a step that had no recipient."""
    if record.detail.get("held"):
        email_outcome(playbook, record.step, "held", session=s)
    if record.detail.get("status") == "skipped":
        email_outcome(playbook, record.step, "skipped", session=s)
