"""`Account`: one workflow per account (`account/<id>`), the home of everything about it.

It takes the account's events and upserts in order (a repeated event id is a no-op), applies
each in one store step, decides which event-triggered playbooks start, and hosts every playbook
run of the account: a run is data (`touchpoint.engine.state.RunState`) that the interpreter
(`touchpoint.engine.machine`) advances; this workflow feeds it events, the clock and activity
results, performs the effects it asks for, and projects where it stands to the store. Starting
a run starts no workflow. One run of a playbook per account at a time; `reenroll` decides
whether a later trigger starts it again. Runs are paused, resumed and cancelled one by one
(`control`), and an exception in one run fails that run alone.

It continues as new when Temporal suggests it, at a quiet point (no effect in flight, no handler
running), carrying every run's state; each run's playbook version is loaded again by its id.
"""

import asyncio
from datetime import datetime, timedelta

from temporalio import workflow
from temporalio.exceptions import ApplicationError

with workflow.unsafe.imports_passed_through():
    from touchpoint.dsl.listening import Listening
    from touchpoint.dsl.runtime import (
        EventIn,
        RunResult,
        RunStatus,
        StartRequest,
        StepRecord,
    )
    from touchpoint.dsl.workspace import Workspace
    from touchpoint.engine import machine
    from touchpoint.engine import migrate as migration
    from touchpoint.engine.program import Program
    from touchpoint.engine.state import RunState
    from workflows import enrolling, names, search
    from workflows.hosting import RunHost
    from workflows.messages import (
        AccountState,
        Envelope,
        FirstResult,
        FirstStep,
        LoadContextInput,
        Loaded,
        LoadedContext,
        MigrateRequest,
        PlannedStart,
        PrepareStarts,
        RunControl,
        StartAnswer,
        StoreResult,
        StoreStep,
    )
    from workflows.options import STORE_OPTIONS

SEEN_IDS = 500


def account_workflow_id(account_id: str) -> str:
    """The id of an account's workflow."""
    return f"account/{account_id}"


@workflow.defn(name=names.ACCOUNT)
class AccountWorkflow(RunHost):
    """Serialises everything that happens to one account and hosts its runs (`RunHost`)."""

    @workflow.init
    def __init__(self, state: AccountState) -> None:
        self.state = state
        self.programs: dict[str, Program] = {}
        self.inbox: list[tuple[str, machine.Input]] = []
        self.inflight = 0
        self.unstarted = 0  # effect batches created that will carry the projections of moved runs
        self.effects: list[asyncio.Task[None]] = []
        self.timelines: dict[str, list[StepRecord]] = {}
        self.unprojected: dict[str, list[StepRecord]] = {}
        self.moved: set[str] = set()
        self.result: RunResult | None = None
        """The first run, ended, for an account workflow that ends with it (`finish_after_run`)."""
        self.unlogged: dict[str, list[EventIn]] = {}
        self.listening: dict[str, Listening] = {}
        self.answers: dict[str, StartAnswer] = {}
        """What each start request did, by its run id, for the `start` update that waits for it."""
        self.awaiting: set[str] = set()
        self.updates = 0
        """Updates this execution has taken (`AccountState.updates_before_continue`)."""
        if state.indexed is None and not state.simulation:
            # Started by the API with the account's search attributes (`search.at_start`): the
            # namespace has them, and they are set as the start named them.
            attributes = workflow.info().typed_search_attributes
            if attributes.get(search.ACCOUNT) == state.account_id:
                state.indexed = True
                state.indexed_values = search.seen(attributes)

    # ------------------------------------------------------------------ handlers

    @workflow.signal(name="ingest")
    def ingest(self, envelope: Envelope) -> None:
        """An event or an account upsert from the API, the CLI or a sync."""
        self.state.pending.append(envelope)

    @workflow.signal(name="start_playbook")
    def start_playbook(self, request: StartRequest) -> None:
        """Start a playbook now (a manual start, a date trigger's sweep)."""
        self.state.starts.append(request)

    @workflow.update(name="start")
    async def start_now(self, request: StartRequest) -> StartAnswer:
        """Start a playbook now and say what happened (`POST /runs`: update-with-start)."""
        self.updates += 1
        request = request.model_copy(update={"run_id": request.run_id or str(workflow.uuid4())})
        assert request.run_id is not None
        self.awaiting.add(request.run_id)
        self.state.starts.append(request)
        await workflow.wait_condition(lambda: request.run_id in self.answers)
        self.awaiting.discard(request.run_id)
        return self.answers.pop(request.run_id)

    @workflow.signal(name="control")
    def control(self, request: RunControl) -> None:
        """Pause, resume or cancel one run."""
        self.state.controls.append(request)

    @workflow.update(name="migrate")
    async def migrate(self, request: MigrateRequest) -> list[migration.Move]:
        """Move this account's runs of a playbook to another version, once no effect of theirs is
        in flight; a dry run says what the move would do and changes nothing."""
        self.updates += 1
        key = f"{request.playbook}@{request.version}"
        if request.program is not None and request.program.key == key:
            self._learn([request.program])
        if key not in self.programs:
            context = await workflow.execute_local_activity(names.LOAD_CONTEXT, LoadContextInput(programs=[key]), result_type=LoadedContext, **STORE_OPTIONS)
            self._learn(context.programs)
        target = self.programs.get(key)
        if target is None:
            raise ApplicationError(f"version {request.version} of playbook {request.playbook} is not deployed", type="NotDeployed", non_retryable=True)

        def chosen() -> list[RunState]:
            return [
                run for run in self.state.runs.values()
                if run.playbook == request.playbook and run.version != request.version and request.run_id in (None, run.run_id)
            ]

        await workflow.wait_condition(lambda: not any(machine.effect_in_flight(run) for run in chosen()))
        moves: list[migration.Move] = []
        for run in chosen():
            old = self.programs[f"{run.playbook}@{run.version}"]
            if request.dry_run:
                moves.append(migration.plan(old, target, run, self.now())[0])
                continue
            move, moved, out = migration.apply(old, target, run, self.state.account, self.now())
            moves.append(move)
            if moved is not None:
                self.state.runs[run.run_id] = moved
                self._absorb(moved, out)
                data = {"playbook": move.playbook, "from_version": move.from_version, "to_version": move.to_version, "step": move.to_step}
                # Through the account's own event path: stored in its log, seen by its runs; the
                # loop that applies it also wakes what the move made due.
                self.state.pending.append(Envelope(event=EventIn(id=str(workflow.uuid4()), type="run.migrated", data=data)))
        return moves

    @workflow.query(name="state")
    def query_state(self) -> AccountState:
        return self.state

    @workflow.query(name="runs")
    def query_runs(self) -> list[RunStatus]:
        """Every run in flight, with what it waits for and its recent timeline."""
        return [self._status(run) for run in self.state.runs.values()]

    # ------------------------------------------------------------------ the loop

    @workflow.run
    async def run(self, state: AccountState) -> RunResult | None:
        await self._load_programs()
        for run_id in list(self.state.runs):
            self._feed(run_id, machine.Tick())
        await self._flush()
        while True:
            wake = self._next_wake()
            timeout = None if wake is None else max(wake - self.now(), timedelta(0))
            if not self._has_work() and timeout != timedelta(0):
                try:
                    await workflow.wait_condition(lambda: self._has_work() or (self._quiet() and self._continue_due()), timeout=timeout)
                except TimeoutError:
                    pass
            await self._work()
            if self.result is not None and self._quiet():
                return self.result  # `finish_after_run`: its run has ended
            if self._continue_due() and self._quiet():
                await workflow.wait_condition(workflow.all_handlers_finished)
                if self._quiet():
                    workflow.continue_as_new(self.state)

    def _continue_due(self) -> bool:
        """The server suggests continue-as-new (history length or size), or this execution has
        taken its share of updates."""
        return workflow.info().is_continue_as_new_suggested() or self.updates >= self.state.updates_before_continue

    def _has_work(self) -> bool:
        state = self.state
        return bool(state.pending or state.starts or state.controls or self.inbox)

    def _quiet(self) -> bool:
        return self.inflight == 0 and not self._has_work() and not self.moved

    def _next_wake(self) -> datetime | None:
        wakes = [w for run in self.state.runs.values() if (w := machine.next_wake(run)) is not None]
        base = self.state.script_base
        if base is not None:
            if self.state.script:
                wakes.append(base + timedelta(seconds=self.state.script[0].after))
            if self.state.horizon is not None and self.state.runs:
                wakes.append(base + timedelta(seconds=self.state.horizon))
        return min(wakes) if wakes else None

    def _play_script(self) -> None:
        """A simulation's scripted events that are due, and its horizon."""
        state, now = self.state, self.now()
        if state.script_base is None:
            return
        while state.script and state.script_base + timedelta(seconds=state.script[0].after) <= now:
            state.pending.append(state.script.pop(0).envelope)
        if state.horizon is not None and state.script_base + timedelta(seconds=state.horizon) <= now and not state.pending:
            for run_id in list(state.runs):
                self._feed(run_id, machine.Stop(outcome="running", because="horizon"))

    async def _work(self) -> None:
        """Handle everything that arrived, in order, then wake the runs that are due."""
        state = self.state
        self._play_script()
        while self._has_work():
            if state.pending:
                await self._apply(state.pending.pop(0))
            elif state.starts:
                request = state.starts.pop(0)
                if request.id:
                    if request.id in state.seen_ids:
                        continue
                    self._remember(request.id)
                await self._start_requested(request)
            elif state.controls:
                self._control(state.controls.pop(0))
            else:
                run_id, message = self.inbox.pop(0)
                self._feed(run_id, message)
        now = self.now()
        for run_id, run in list(state.runs.items()):
            wake = machine.next_wake(run)
            if wake is not None and wake <= now:
                self._feed(run_id, machine.Tick())
        await self._flush()
        self._index()

    # ------------------------------------------------------------------ events

    async def _apply(self, envelope: Envelope) -> None:
        """One event: dedupe, derive, plan starts, one store step, then deliver and start."""
        event = envelope.event
        if event.id:
            if event.id in self.state.seen_ids:
                return
            self._remember(event.id)
        event.at = event.at or self.now()
        event.account_id = self.state.account_id
        if self._first_upsert(envelope):
            await self._apply_first(envelope)
            return
        await self._load_context(envelope)
        previous = self.state.account
        derived = self._derive(envelope)
        plan = self._plan(derived)
        self.state.applied += 1
        step = StoreStep(
            account=self.state.account,
            event=event,
            derived=[d for d in derived if d is not event],
            token=f"{workflow.info().run_id}:{self.state.applied}",
            starts=[start for starts in plan for start in starts],
            known=sorted(self.programs),
            projections=self._take_projections(),
        )
        result = await workflow.execute_local_activity(names.APPLY_EVENT, step, result_type=StoreResult, **STORE_OPTIONS)
        if not result.accepted:  # an old duplicate id, already in the store
            return
        self._learn(result.programs)
        if result.earlier is not None and envelope.account is not None:
            # A retried task: the upsert was compared with a store that already held it.
            derived = result.earlier
            plan = self._plan(derived)
            prepared = await self._prepare([start for starts in plan for start in starts])
            result.started.update(prepared.started)
        if self.state.account is not None and self.state.account != previous:
            for run_id in list(self.state.runs):
                self._feed(run_id, machine.AccountChanged())
        for position, item in enumerate(derived):
            for run_id in list(self.state.runs):
                self._feed(run_id, item)
            for start in plan[position]:
                version = result.started.get(start.run_id)
                if version is not None:
                    self._begin(start, version)

    def _first_upsert(self, envelope: Envelope) -> bool:
        """A fresh workflow's upsert (no account read yet, no run): one store step reads the
        context, decides and applies (`_apply_first`) instead of a read and then a step."""
        state = self.state
        return envelope.account is not None and state.account is None and not state.runs and not state.simulation

    async def _apply_first(self, envelope: Envelope) -> None:
        state = self.state
        ask = state.indexed is None
        state.applied += 1
        step = FirstStep(
            envelope=envelope, account_id=state.account_id, workflow_id=workflow.info().workflow_id, now=self.now(),
            token=f"{workflow.info().run_id}:{state.applied}", search_attributes=ask,
        )
        first = await workflow.execute_local_activity(names.APPLY_FIRST, step, result_type=FirstResult, **STORE_OPTIONS)
        state.index = first.index
        if ask:
            state.indexed = first.search_attributes
        if not first.store.accepted:  # an old duplicate id, already in the store
            state.account = first.previous
            return
        state.account = first.account
        self._learn(first.store.programs)
        for starts in first.plan:
            for start in starts:
                version = first.store.started.get(start.run_id)
                if version is not None:
                    self._begin(start, version)

    def _remember(self, id: str) -> None:
        self.state.seen_ids.append(id)
        del self.state.seen_ids[:-SEEN_IDS]

    async def _load_context(self, envelope: Envelope) -> None:
        """The deployed index (fresh workflow or a newer deploy) and the stored account, once."""
        state = self.state
        need_index = state.index is None or bool(envelope.generation and envelope.generation != state.index.generation)
        # A fresh workflow compares an upsert with what the store holds: an account imported
        # without a workflow (a CRM backfill) then derives account.updated, not account.created.
        need_account = state.account is None
        if not (need_index or need_account):
            return
        ask = state.indexed is None and not state.simulation
        context = await workflow.execute_local_activity(
            names.LOAD_CONTEXT,
            LoadContextInput(generation=envelope.generation, index=need_index, account_id=state.account_id if need_account else None, search_attributes=ask),
            result_type=LoadedContext,
            **STORE_OPTIONS,
        )
        if need_index:
            state.index = context.index
        if need_account:
            state.account = context.account
        if ask:
            state.indexed = context.search_attributes

    async def _load_programs(self) -> None:
        """The playbook versions of the runs this workflow carries (after continue-as-new)."""
        keys = sorted({f"{run.playbook}@{run.version}" for run in self.state.runs.values()} - set(self.programs))
        if keys:
            context = await workflow.execute_local_activity(names.LOAD_CONTEXT, LoadContextInput(programs=keys), result_type=LoadedContext, **STORE_OPTIONS)
            self._learn(context.programs)

    def _learn(self, programs: list[Loaded]) -> None:
        for loaded in programs:
            self.programs[loaded.key] = Program(loaded.playbook, loaded.workspace, loaded.version, unrestricted=workflow.unsafe.sandbox_unrestricted)

    def _derive(self, envelope: Envelope) -> list[EventIn]:
        """The events this envelope amounts to; the account document after it."""
        state, event = self.state, envelope.event
        if envelope.account is not None:
            previous = state.account
            state.account = enrolling.with_defaults(envelope.account, previous, self._workspace(), self.now())
            return enrolling.derive_upsert(previous, state.account, event, state.account_id, "" if event.id else str(workflow.uuid4()))
        state.account = enrolling.account_after(state.account, event)
        return [event]

    def _workspace(self) -> Workspace | None:
        return self.state.index.workspace if self.state.index else None

    # ------------------------------------------------------------------ enrollments

    def _plan(self, derived: list[EventIn]) -> list[list[PlannedStart]]:
        """For each derived event, the runs it starts: once per playbook, none already in flight."""
        state = self.state
        return enrolling.plan(
            state.index, state.account, derived, now=self.now(), taken={run.playbook for run in state.runs.values()},
            last_started=state.last_started, workflow_id=workflow.info().workflow_id,
            new_id=lambda _playbook, _position: str(workflow.uuid4()), warn=workflow.logger.warning,
        )

    def _planned(self, playbook: str, event: EventIn, run_id: str | None = None) -> PlannedStart:
        return PlannedStart(
            playbook=playbook, run_id=run_id or str(workflow.uuid4()), workflow_id=workflow.info().workflow_id, started_at=self.now(), event=event
        )

    async def _prepare(self, starts: list[PlannedStart]) -> StoreResult:
        if not starts:
            return StoreResult()
        request = PrepareStarts(account_id=self.state.account_id, starts=starts, known=sorted(self.programs), projections=self._take_projections())
        result: StoreResult = await workflow.execute_local_activity(names.PREPARE_STARTS, request, result_type=StoreResult, **STORE_OPTIONS)
        self._learn(result.programs)
        return result

    async def _start_requested(self, request: StartRequest) -> None:
        """A manual start, a date trigger or a `start` step: no second run of a playbook."""
        state = self.state
        if state.account is None:
            await self._load_context(Envelope(event=EventIn(type="manual")))
            if state.account is None:
                workflow.logger.warning("cannot start %s: account %s is unknown", request.playbook, state.account_id)
                self._answer(request.run_id, StartAnswer(result="unknown_account"))
                return
        running = next((run for run in state.runs.values() if run.playbook == request.playbook), None)
        if running is not None:
            workflow.logger.info("%s is already running for %s", request.playbook, state.account_id)
            self._answer(request.run_id, StartAnswer(result="in_flight", run_id=running.run_id, status=running.status))
            return
        event = request.event or EventIn(type="manual")
        start = self._planned(request.playbook, event if event.at else event.model_copy(update={"at": self.now()}), request.run_id)
        result = await self._prepare([start])
        version = result.started.get(start.run_id)
        if version is None:
            workflow.logger.warning("playbook %s is not deployed", request.playbook)
            self._answer(request.run_id, StartAnswer(result="not_deployed"))
            return
        self._begin(start, version)
        self._answer(request.run_id, StartAnswer(result="started", run_id=start.run_id))

    def _answer(self, run_id: str | None, answer: StartAnswer) -> None:
        if run_id in self.awaiting:
            self.answers[run_id] = answer

    def _begin(self, start: PlannedStart, version: str) -> None:
        """Start a run whose row the store step wrote: the interpreter takes its first steps, at
        the time the start was planned (the row's `started_at`, so the two agree)."""
        program = self.programs[f"{start.playbook}@{version}"]
        run, out = machine.start(program, self.state.account, run_id=start.run_id, event=start.event, now=start.started_at, simulation=self.state.simulation)
        self.state.runs[run.run_id] = run
        self.state.last_started[start.playbook] = self.now()
        if self.state.simulation and self.state.script_base is None:
            self.state.script_base = run.started_at
        self._absorb(run, out)
        self._run_event(run, "run.started")
