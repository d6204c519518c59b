"""`Account`: one workflow per account, the entry point of every event about it.

Events for one account are applied in order; a repeated event id is a no-op; upserts emit
`account.created`/`account.updated`/`seats.changed`; matching event triggers start `PlaybookRun`s
(`run/<playbook>/<account>`, at most one at a time, honouring `reenroll`); every event reaches the
account's active runs. The store is kept as a projection by local activities: since the patch
`one-store-step`, one per event, which also writes the rows of the runs the event starts and then
starts them with the client (before it, runs were abandoned children of this workflow).
"""

from datetime import timedelta
from typing import Any

from temporalio import workflow
from temporalio.common import RetryPolicy, WorkflowIDReusePolicy
from temporalio.exceptions import WorkflowAlreadyStartedError
from temporalio.workflow import ParentClosePolicy

with workflow.unsafe.imports_passed_through():
    from touchpoint.dsl import expressions as ex
    from touchpoint.dsl.durations import parse_duration
    from touchpoint.dsl.runtime import (
        AccountState,
        ActiveRun,
        ApplyEventInput,
        ApplyResult,
        DeployedIndex,
        Envelope,
        EventIn,
        LoadContextInput,
        LoadedContext,
        LoadedPlaybookVersion,
        LoadPlaybookInput,
        PlannedStart,
        PrepareStartsInput,
        RunInput,
        StartRequest,
        build_context,
        segment_of,
    )
    from touchpoint.dsl.schema import AccountDoc, Health
    from workflows import names

SEEN_IDS = 500
CONTINUE_AS_V2 = "continue-as-v2"
"""Patch: a run of the first type continues as the second (`AccountWorkflowV2`)."""
FOLDED = frozenset(
    {"start-request-ids", CONTINUE_AS_V2, "one-store-step", "upsert-loads-stored-account", "health-changed-updates-account", "apply-event-v2", "upsert-keeps-health"}
)
"""The patches `AccountWorkflowV2` has built in: they are never asked of `workflow.patched` there."""
ONE_STORE_STEP = "one-store-step"
"""Patch: one local activity reads what a fresh workflow needs; one applies an event, writes the
rows of the runs it starts and starts them with the client (were: load_index, load_account,
apply_event_v2 and load_playbook each, a child-workflow start, and a projection by the run)."""
STORE_OPTIONS: dict[str, Any] = {
    "start_to_close_timeout": timedelta(seconds=30),
    "retry_policy": RetryPolicy(maximum_interval=timedelta(minutes=1)),
}
"""Store reads and projections are local activities: short, idempotent, and each one a server
round trip cheaper than a regular activity (the enrollment path's latency is mostly these)."""
ACCOUNT_FIELDS = ("name", "segment", "region", "country", "timezone", "locale", "plan", "arr", "created_at", "renewal_date", "seats", "csm", "owner", "health", "metrics", "properties", "contacts")


def health_of(event: EventIn, account: AccountDoc) -> Health:
    """`account.health` after a `health.changed` event (contract section 8)."""
    data = event.data
    return Health(
        score=data.get("score"),
        tier=data.get("tier"),
        previous_score=data.get("previous_score", account.health.score),
        previous_tier=data.get("previous_tier", account.health.tier),
        updated_at=event.at,
    )


def account_workflow_id(account_id: str) -> str:
    """The id of an account's workflow."""
    return f"account/{account_id}"


def run_workflow_id(playbook: str, account_id: str) -> str:
    """The id of an account's run of a playbook (one at a time)."""
    return f"run/{playbook}/{account_id}"


@workflow.defn(name=names.ACCOUNT)
class AccountWorkflow:
    """Serialises everything that happens to one account (the first type: its histories hold
    `workflow.patched` markers; a run of it continues as `AccountWorkflowV2`)."""

    LEGACY = True
    """Runs of this type take the branches their `workflow.patched` markers recorded."""

    @workflow.init
    def __init__(self, state: AccountState) -> None:
        self.state = state

    @workflow.signal(name="ingest")
    def ingest(self, envelope: Envelope) -> None:
        """An event or an account upsert from the API, the CLI or a sync."""
        self.state.pending.append(envelope)

    @workflow.signal(name="start_playbook")
    def start_playbook(self, request: StartRequest) -> None:
        """Start a playbook now (manual start or a `start` step)."""
        self.state.starts.append(request)

    @workflow.signal(name="run_ended")
    def run_ended(self, info: dict[str, Any]) -> None:
        """A run reports its end."""
        active = self.state.active.get(str(info.get("playbook")))
        if active and active.run_id == info.get("run_id"):
            del self.state.active[str(info["playbook"])]
        elif info.get("run_id"):
            self.state.ended_early.append(str(info["run_id"]))
            del self.state.ended_early[:-50]

    @workflow.query(name="state")
    def query_state(self) -> AccountState:
        return self.state

    @workflow.run
    async def run(self, state: AccountState) -> None:
        while True:
            await workflow.wait_condition(
                lambda: bool(self.state.pending or self.state.starts) or workflow.info().is_continue_as_new_suggested()
            )
            while self.state.pending or self.state.starts:
                if self.state.pending:
                    await self._apply(self.state.pending.pop(0))
                else:
                    request = self.state.starts.pop(0)
                    if request.id and self._patched("start-request-ids"):
                        if request.id in self.state.seen_ids:
                            continue
                        self._remember(request.id)
                    await self._start(request, manual=True)
            if workflow.info().is_continue_as_new_suggested():
                await workflow.wait_condition(workflow.all_handlers_finished)
                if not (self.state.pending or self.state.starts):
                    if self._patched(CONTINUE_AS_V2):
                        workflow.continue_as_new(workflow=names.ACCOUNT_V2, args=[self.state])
                    workflow.continue_as_new(self.state)

    def _patched(self, patch: str) -> bool:
        """`workflow.patched` for the first type; the second type has the patches in `FOLDED`
        built in, unmarked. A later patch is a real `workflow.patched` call in both types."""
        if not self.LEGACY and patch in FOLDED:
            return True
        return workflow.patched(patch)

    # ------------------------------------------------------------------ events

    async def _apply(self, envelope: Envelope) -> None:
        event = envelope.event
        if event.id:
            if event.id in self.state.seen_ids:
                return
            self._remember(event.id)
        if event.at is None:
            event.at = workflow.now()
        one_step = self._patched(ONE_STORE_STEP)
        need_index = self.state.index is None or bool(envelope.generation and envelope.generation != self.state.index.generation)
        # A fresh workflow compares an upsert with what the store holds: an account imported
        # without a workflow (a CRM backfill) then derives account.updated/seats.changed, not
        # account.created.
        need_account = self.state.account is None and (envelope.account is None or self._patched("upsert-loads-stored-account"))
        if one_step and (need_index or need_account):
            context = await workflow.execute_local_activity(
                names.LOAD_CONTEXT,
                LoadContextInput(generation=envelope.generation, index=need_index, account_id=self.state.account_id if need_account else None),
                result_type=LoadedContext,
                **STORE_OPTIONS,
            )
            if need_index:
                self.state.index = context.index
            if need_account:
                self.state.account = context.account
        else:
            if need_index:
                self.state.index = await workflow.execute_local_activity(
                    names.LOAD_INDEX, envelope.generation, result_type=DeployedIndex, **STORE_OPTIONS
                )
            if need_account:
                self.state.account = await workflow.execute_local_activity(
                    names.LOAD_ACCOUNT, self.state.account_id, result_type=AccountDoc | None, **STORE_OPTIONS  # type: ignore[arg-type]
                )
        derived: list[EventIn] = []
        health_update = (
            event.type == "health.changed" and self.state.account is not None and self._patched("health-changed-updates-account")
        )
        if envelope.account is not None:
            derived = self._upsert(envelope.account, event)
        elif event.type == "usage.reported" and self.state.account is not None:
            metrics = event.data.get("metrics") or {}
            merged = {**self.state.account.metrics, **{k: float(v) for k, v in metrics.items() if isinstance(v, (int, float))}}
            self.state.account = self.state.account.model_copy(update={"metrics": merged})
            derived = [event]
        elif health_update and self.state.account is not None:
            self.state.account = self.state.account.model_copy(update={"health": health_of(event, self.state.account)})
            derived = [event]
        else:
            derived = [event]
        for item in derived:
            if item is not event:
                # Derived events get their own ids (a replayed upsert derives the same ones).
                item.id = f"{event.id or workflow.uuid4()}:{item.type}"
                item.account_id = self.state.account_id
        apply = ApplyEventInput(account=self.state.account, event=event, derived=[d for d in derived if d is not event])
        # With one store step, the runs this event starts are planned first; the local activity
        # that applies the event writes their rows and then starts them.
        plan = self._plan(derived) if one_step else []
        apply.starts = [start for starts in plan for start in starts]
        if not self.LEGACY:
            apply.active = [active.run_id for active in self.state.active.values()]
        started: dict[str, str] = {}
        blocked: list[str] = []
        if self._patched("apply-event-v2"):
            # The token is the same when this task is retried after its local activity committed.
            self.state.applied += 1
            apply.token = f"{workflow.info().run_id}:{self.state.applied}"
            result = await workflow.execute_local_activity(
                names.APPLY_EVENT_V3 if one_step else names.APPLY_EVENT_V2, apply, result_type=ApplyResult, **STORE_OPTIONS
            )
            if not result.accepted:  # an old duplicate id, already in the store
                return
            started, blocked = result.started, result.blocked
            self._forget(result.ended)
            if result.earlier is not None and envelope.account is not None:
                # A retried task: the upsert was compared with the store it had already written.
                derived = result.earlier
                plan = self._plan(derived) if one_step else []
        else:
            accepted = await workflow.execute_local_activity(names.APPLY_EVENT, apply, result_type=bool, **STORE_OPTIONS)
            if not accepted:  # an old duplicate id, already in the store
                return
        if envelope.account is not None or event.type == "usage.reported" or health_update:
            for active in self.state.active.values():
                await self._signal(active, "account", self.state.account)
        for position, item in enumerate(derived):
            for active in list(self.state.active.values()):
                await self._signal(active, "event", item)
            if one_step:
                for start in plan[position]:
                    if start.run_id in blocked:
                        continue  # its earlier run still runs
                    await self._start(StartRequest(playbook=start.playbook, event=item), manual=False, planned=start, started=started.get(start.playbook))
            else:
                await self._trigger(item)

    def _remember(self, id: str) -> None:
        self.state.seen_ids.append(id)
        del self.state.seen_ids[:-SEEN_IDS]

    def _upsert(self, doc: AccountDoc, event: EventIn) -> list[EventIn]:
        previous = self.state.account
        workspace = self.state.index.workspace if self.state.index else None
        if doc.segment is None and workspace and workspace.segments:
            doc = doc.model_copy(update={"segment": segment_of(doc, workspace, workflow.now())})
        if doc.timezone is None and workspace:
            doc = doc.model_copy(update={"timezone": workspace.timezone})
        if previous is not None and doc.health.score is None and doc.health.tier is None and self._patched("upsert-keeps-health"):
            # Health is computed here, not sent in: an upsert without it keeps the current score.
            doc = doc.model_copy(update={"health": previous.health})
        self.state.account = doc
        at = event.at
        if previous is None:
            return [EventIn(id=event.id, type="account.created", at=at, data={"changed": list(ACCOUNT_FIELDS)})]
        old, new = previous.model_dump(mode="json"), doc.model_dump(mode="json")
        changed = [f for f in ACCOUNT_FIELDS if old.get(f) != new.get(f)]
        events: list[EventIn] = []
        if changed:
            events.append(EventIn(id=event.id, type="account.updated", at=at, data={"changed": changed}))
        if previous.seats != doc.seats:
            delta = doc.seats.licensed - previous.seats.licensed
            pct = round(delta / previous.seats.licensed * 100, 1) if previous.seats.licensed else None
            events.append(
                EventIn(
                    type="seats.changed",
                    at=at,
                    data={
                        "licensed": doc.seats.licensed,
                        "previous_licensed": previous.seats.licensed,
                        "active": doc.seats.active,
                        "previous_active": previous.seats.active,
                        "delta": delta,
                        "delta_pct": pct,
                    },
                )
            )
        return events

    # ------------------------------------------------------------------ enrollments

    def _triggered(self, event: EventIn) -> list[str]:
        """The playbooks whose event trigger fires for ``event`` (`when` and `reenroll` checked)."""
        if self.state.index is None or self.state.account is None:
            return []
        found: list[str] = []
        for entry in self.state.index.triggers:
            if entry.kind != "event" or entry.event != event.type:
                continue
            context = build_context(account=self.state.account, event=event, run=None, now=workflow.now(), tz=self.state.account.timezone or "UTC")
            try:
                if not ex.is_true(entry.when, context):
                    continue
            except ex.ExpressionError as exc:
                workflow.logger.warning("trigger of %s failed: %s", entry.playbook, exc)
                continue
            last = self.state.last_started.get(entry.playbook)
            if last is not None:
                if entry.reenroll == "never":
                    continue
                if entry.reenroll.startswith("after") and workflow.now() - last < parse_duration(entry.reenroll[5:].strip()):
                    continue
            found.append(entry.playbook)
        return found

    async def _trigger(self, event: EventIn) -> None:
        for playbook in self._triggered(event):
            await self._start(StartRequest(playbook=playbook, event=event), manual=False)

    def _plan(self, derived: list[EventIn]) -> list[list[PlannedStart]]:
        """For each derived event, the runs it starts: once per playbook, none already active.

        The second type does not hear of a run's end: a playbook it last saw active is planned
        with `PlannedStart.after_run`, and the store step starts it only if that run has ended.
        """
        taken = set(self.state.active) if self.LEGACY else set()
        plan: list[list[PlannedStart]] = []
        for item in derived:
            starts = [self._planned(playbook, item) for playbook in self._triggered(item) if playbook not in taken]
            taken.update(start.playbook for start in starts)
            plan.append(starts)
        return plan

    def _planned(self, playbook: str, event: EventIn) -> PlannedStart:
        active = self.state.active.get(playbook)
        return PlannedStart(
            playbook=playbook,
            run_id=str(workflow.uuid4()),
            workflow_id=run_workflow_id(playbook, self.state.account_id),
            started_at=workflow.now(),
            event=event,
            account_workflow_id=workflow.info().workflow_id,
            after_run=None if self.LEGACY or active is None else active.run_id,
            report_end=self.LEGACY,
        )

    def _forget(self, ended: list[str]) -> None:
        """Drop the active runs the store step found ended (the second type's only news of it)."""
        for playbook, active in list(self.state.active.items()):
            if active.run_id in ended:
                del self.state.active[playbook]

    async def _start(self, request: StartRequest, *, manual: bool, planned: PlannedStart | None = None, started: str | None = None) -> None:
        """Start a run (``planned`` and ``started``: already started by `apply_event_v3`, with that version)."""
        if self.state.account is None:
            self.state.account = await workflow.execute_local_activity(
                names.LOAD_ACCOUNT, self.state.account_id, result_type=AccountDoc | None, **STORE_OPTIONS  # type: ignore[arg-type]
            )
            if self.state.account is None:
                workflow.logger.warning("cannot start %s: account %s is unknown", request.playbook, self.state.account_id)
                return
        if request.playbook in self.state.active and self.LEGACY:
            return  # one run of a playbook per account at a time (the second type asks the store)
        event = request.event or EventIn(type="manual", at=workflow.now())
        if self._patched(ONE_STORE_STEP):
            # One local activity writes the run's row and starts the run (`prepare_starts`).
            planned = planned or self._planned(request.playbook, event)
            if started is None and not self.LEGACY:
                prepared = await workflow.execute_local_activity(
                    names.PREPARE_STARTS_V2,
                    PrepareStartsInput(account_id=self.state.account_id, account=self.state.account, starts=[planned]),
                    result_type=ApplyResult,
                    **STORE_OPTIONS,
                )
                self._forget(prepared.ended)
                started = prepared.started.get(request.playbook)
            elif started is None:
                versions = await workflow.execute_local_activity(
                    names.PREPARE_STARTS,
                    PrepareStartsInput(account_id=self.state.account_id, account=self.state.account, starts=[planned]),
                    result_type=dict[str, str],
                    **STORE_OPTIONS,
                )
                started = versions.get(request.playbook)
            if started is None:
                if request.playbook not in self.state.active:
                    workflow.logger.warning("playbook %s is not deployed, or its earlier run still runs", request.playbook)
                return
            if planned.run_id in self.state.ended_early:  # it has already ended
                self.state.ended_early.remove(planned.run_id)
                self.state.last_started[request.playbook] = workflow.now()
                return
            self._started(request.playbook, ActiveRun(run_id=planned.run_id, workflow_id=planned.workflow_id, version=started, started_at=workflow.now()))
            return
        loaded = await workflow.execute_local_activity(
            names.LOAD_PLAYBOOK, LoadPlaybookInput(playbook=request.playbook), result_type=LoadedPlaybookVersion | None, **STORE_OPTIONS  # type: ignore[arg-type]
        )
        if loaded is None:
            workflow.logger.warning("playbook %s is not deployed", request.playbook)
            return
        run_id = str(workflow.uuid4())
        workflow_id = run_workflow_id(request.playbook, self.state.account_id)
        try:
            await workflow.start_child_workflow(
                names.PLAYBOOK_RUN,
                RunInput(
                    run_id=run_id,
                    playbook=loaded.playbook,
                    version=loaded.version,
                    account=self.state.account,
                    workspace=loaded.workspace,
                    event=event,
                    account_workflow_id=workflow.info().workflow_id,
                ),
                id=workflow_id,
                parent_close_policy=ParentClosePolicy.ABANDON,
                id_reuse_policy=WorkflowIDReusePolicy.ALLOW_DUPLICATE,
            )
        except WorkflowAlreadyStartedError:
            return
        self._started(request.playbook, ActiveRun(run_id=run_id, workflow_id=workflow_id, version=loaded.version, started_at=workflow.now()))

    def _started(self, playbook: str, run: ActiveRun) -> None:
        self.state.active[playbook] = run
        self.state.last_started[playbook] = workflow.now()

    async def _signal(self, active: ActiveRun, name: str, arg: Any) -> None:
        handle = workflow.get_external_workflow_handle(active.workflow_id)
        try:
            await handle.signal(name, arg)
        except Exception:  # the run has ended (its end report, or the next store step, says so)
            workflow.logger.info("run %s did not take %s", active.run_id, name)


@workflow.defn(name=names.ACCOUNT_V2)
class AccountWorkflowV2(AccountWorkflow):
    """The account workflow without patch markers, and without a signal per ended run.

    New accounts start as this type, and runs of the first type continue as it: its history
    records no `workflow.patched` markers (each was a marker and a `TemporalChangeVersion`
    search-attribute update in every new run), and the runs it starts do not report their end
    (a signal and a workflow task per run). Instead each store step tells it which of the runs
    it holds as active have ended (`ApplyResult.ended`), and a playbook it still holds as active
    is started again only once the store says its run ended (`PlannedStart.after_run`), or once
    its workflow is found closed without having said so (terminated from outside: the row is
    ended as ``terminated``). Between events `AccountState.active` may therefore still list a
    run that has ended.
    """

    LEGACY = False

    @workflow.run
    async def run(self, state: AccountState) -> None:
        await super().run(state)
