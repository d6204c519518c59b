"""`PlaybookRun`: hosts one run of a playbook version for one account, for as long as it takes.

The run itself is data (`touchpoint.engine.state.RunState`) advanced by the interpreter
(`touchpoint.engine.machine`); this workflow only hosts it: it feeds the interpreter signals,
activity results and the clock, performs the effects it asks for as activities (each keyed on
run id, step path, recipient and round and checked against the store's ledger, so a retry or a
replay never does anything twice), sleeps until the run's next wake, and continues as new with
the state when Temporal suggests it, so an endless `repeat` never reaches the history limit.
"""

import asyncio
from datetime import datetime, timedelta
from typing import Any

from temporalio import workflow
from temporalio.common import RetryPolicy
from temporalio.exceptions import ActivityError, ApplicationError

with workflow.unsafe.imports_passed_through():
    from touchpoint.dsl.runtime import (
        EffectResult,
        EventIn,
        ProjectRunInput,
        RunInput,
        RunResult,
        RunStatus,
        SendEmailResult,
        StepRecord,
        TaskResult,
    )
    from touchpoint.engine import machine
    from touchpoint.engine.accounts import apply_event
    from touchpoint.engine.program import Effect, EffectDone, Output, Program
    from touchpoint.engine.state import RunState, waiting_of
    from workflows import names
    from workflows.options import EFFECT_OPTIONS

RESULT_TYPES: dict[str, type[Any]] = {
    names.SEND_EMAIL: SendEmailResult,
    names.RESERVE_SEND_SLOT: datetime,
    names.CREATE_TASK: TaskResult,
    names.ADD_NOTE: EffectResult,
    names.UPDATE_FIELDS: EffectResult,
    names.CALL_WEBHOOK: EffectResult,
}
TIMELINE_LIMIT = 1_000
"""Timeline lines the run's result keeps (the newest; since its last continue-as-new)."""
SIMULATION_TIMELINE_LIMIT = 20_000
UNPROJECTED_LIMIT = 200


@workflow.defn(name=names.PLAYBOOK_RUN)
class PlaybookRun:
    """Hosts one run: the interpreter decides, this workflow waits and acts."""

    @workflow.init
    def __init__(self, input: RunInput) -> None:
        self.input = input
        self.account = input.account
        self.program = Program(input.playbook, input.workspace, input.version, unrestricted=workflow.unsafe.sandbox_unrestricted)
        self.state: RunState | None = None if input.state is None else RunState.model_validate(input.state)
        self.inbox: list[machine.Input] = []
        self.inflight = 0
        self.effect_tasks: list[asyncio.Task[None]] = []
        self.timeline: list[StepRecord] = []
        self.unprojected: list[StepRecord] = []

    def now(self) -> datetime:
        """The run's clock: Temporal's time plus the simulation offset."""
        return workflow.now() + timedelta(seconds=self.input.clock_offset)

    # ------------------------------------------------------------------ handlers

    @workflow.signal(name="event")
    def on_event(self, event: EventIn) -> None:
        """An event about the account, forwarded by its account workflow (or a test driver)."""
        if self.account is not None:
            # The account workflow merges it too; done here so the run sees it at once.
            self.account = apply_event(self.account, event) or self.account
        self.inbox.append(event)

    @workflow.signal(name="account")
    def on_account(self, account: Any) -> None:
        """The account document changed (metrics, fields, dates)."""
        from touchpoint.dsl.schema import AccountDoc

        self.account = account if isinstance(account, AccountDoc) else AccountDoc.model_validate(account)
        self.inbox.append(machine.AccountChanged())

    @workflow.signal(name="pause")
    def pause(self, reason: str | None = None) -> None:
        """Hold before the next side effect."""
        self.inbox.append(machine.Pause(reason=reason))

    @workflow.signal(name="resume")
    def resume(self) -> None:
        """Go on where the run was."""
        self.inbox.append(machine.Resume())

    @workflow.signal(name="cancel")
    def cancel(self) -> None:
        """End the run now with outcome `cancelled`."""
        self.inbox.append(machine.Cancel())

    @workflow.signal(name="stop_simulation")
    def stop_simulation(self) -> None:
        """The simulation horizon passed: end with outcome `running`."""
        self.inbox.append(machine.Stop(outcome="running", because="horizon"))

    @workflow.query(name="status")
    def status(self) -> RunStatus:
        state = self.state
        if state is None:
            return RunStatus(id=self.input.run_id, playbook=self.input.playbook.playbook, version=self.input.version, account_id=None, status="running", started_at=self.now())
        return RunStatus(
            id=state.run_id,
            workflow_id=workflow.info().workflow_id,
            playbook=state.playbook,
            version=state.version,
            account_id=state.account_id,
            status=state.status,
            step=state.step,
            outcome=state.outcome,
            because=state.because,
            paused_reason=state.paused_reason,
            started_at=state.started_at,
            vars=state.vars,
            scorecard=state.scorecard,
            waiting=[w.model_dump(mode="json") for w in waiting_of(state)],
            history=list(state.recent),
        )

    # ------------------------------------------------------------------ run

    @workflow.run
    async def run(self, input: RunInput) -> RunResult:
        if self.state is None:
            self.state, out = machine.start(self.program, self.account, run_id=input.run_id, event=input.event, now=self.now(), simulation=input.simulation)
            if not input.projected:  # else the account workflow wrote the row as it started the run
                await self._project()
        else:
            out = machine.step(self.program, self.state, self.account, self.now(), machine.Tick())
        state = self.state
        await self._absorb([out])
        while not state.ended:
            wake = machine.next_wake(state)
            timeout = None if wake is None else wake - self.now()
            if not self.inbox and (timeout is None or timeout > timedelta(0)):
                try:
                    await workflow.wait_condition(lambda: bool(self.inbox), timeout=timeout)
                except TimeoutError:
                    pass
            outputs: list[Output] = []
            while self.inbox and not state.ended:
                outputs.append(machine.step(self.program, state, self.account, self.now(), self.inbox.pop(0)))
            wake = machine.next_wake(state)
            if not state.ended and wake is not None and wake <= self.now():
                outputs.append(machine.step(self.program, state, self.account, self.now(), machine.Tick()))
            await self._absorb(outputs)
            if not state.ended and self._quiet() and workflow.info().is_continue_as_new_suggested():
                await workflow.wait_condition(workflow.all_handlers_finished)
                if self._quiet():
                    await self._project()
                    workflow.continue_as_new(input.model_copy(update={"state": state, "account": self.account, "projected": True}))
        for task in self.effect_tasks:
            if not task.done():
                task.cancel()
        await self._project()
        return RunResult(
            run_id=input.run_id,
            outcome=state.outcome or "completed",
            because=state.because,
            started_at=state.started_at,
            ended_at=state.ended_at,
            history=self.timeline,
            vars=state.vars,
            scorecard=state.scorecard,
        )

    def _quiet(self) -> bool:
        """No effect in flight and nothing to handle: a point where the run may continue as new."""
        return self.inflight == 0 and not self.inbox

    async def _absorb(self, outputs: list[Output]) -> None:
        """Keep the timeline, start the effects (one batch), project a change of status."""
        effects: list[Effect] = []
        status_changed = False
        for out in outputs:
            self.timeline.extend(out.records)
            del self.timeline[: -(SIMULATION_TIMELINE_LIMIT if self.input.simulation else TIMELINE_LIMIT)]
            if not self.input.simulation:
                self.unprojected.extend(out.records)
                del self.unprojected[:-UNPROJECTED_LIMIT]
            for text in out.warnings:
                workflow.logger.warning("run %s: %s", self.input.run_id, text)
            effects.extend(out.effects)
            status_changed = status_changed or out.status_changed
        if effects:
            self.inflight += 1
            self.effect_tasks = [t for t in self.effect_tasks if not t.done()]
            self.effect_tasks.append(asyncio.create_task(self._perform(effects)))
        if status_changed and self.state is not None and not self.state.ended:
            await self._project()

    async def _perform(self, effects: list[Effect]) -> None:
        """Run a batch of effects concurrently; their answers reach the run in the order asked."""
        try:
            answers = await asyncio.gather(*(self._call(effect) for effect in effects))
            self.inbox.extend(answer for answer in answers if answer is not None)
        finally:
            self.inflight -= 1

    async def _call(self, effect: Effect) -> EffectDone | None:
        if effect.kind == "start_playbook":
            if self.input.account_workflow_id:
                handle = workflow.get_external_workflow_handle(self.input.account_workflow_id)
                await handle.signal("start_playbook", effect.input)
            return None
        try:
            result = await workflow.execute_activity(effect.kind, effect.input, result_type=RESULT_TYPES[effect.kind], **EFFECT_OPTIONS)
        except ActivityError as error:
            cause = error.cause
            message = str(cause.message if isinstance(cause, ApplicationError) else (cause or error))
            kind = cause.type if isinstance(cause, ApplicationError) else None
            return EffectDone(id=effect.id, error=message, error_type=kind)
        return EffectDone(id=effect.id, result=result)

    async def _project(self) -> None:
        """Write the run's row (status, step, vars, scorecard, outcome) and its new timeline lines."""
        state = self.state
        if self.input.simulation or state is None:
            return
        records, self.unprojected = (self.unprojected, []) if state.ended else ([], self.unprojected)
        notify = self.input.account_workflow_id if state.ended and self.input.report_end else None
        await workflow.execute_local_activity(
            names.PROJECT_RUN,
            ProjectRunInput(
                run_id=state.run_id,
                workflow_id=workflow.info().workflow_id,
                playbook=state.playbook,
                version=state.version,
                account_id=state.account_id,
                status=state.status,
                step=state.step,
                outcome=state.outcome,
                started_at=state.started_at,
                ended_at=state.ended_at,
                vars=state.vars,
                scorecard=state.scorecard,
                paused_reason=state.paused_reason,
                records=records[-50:],
                notify=notify,
            ),
            start_to_close_timeout=timedelta(seconds=30),
            retry_policy=RetryPolicy(maximum_interval=timedelta(minutes=1)),
        )
