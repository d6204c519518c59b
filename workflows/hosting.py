"""`RunHost`: how the account workflow hosts its runs: feeding them, performing their effects,
projecting where they stand to the store, and its search attributes.

`workflows.account.AccountWorkflow` is the one subclass (the handlers, the loop, events and
enrollments live there); this part only reads and changes the state the workflow holds.
"""

import asyncio
from datetime import datetime, timedelta
from typing import Any

from temporalio import workflow
from temporalio.exceptions import ActivityError, ApplicationError

with workflow.unsafe.imports_passed_through():
    from touchpoint.dsl.listening import Listening, of_playbook
    from touchpoint.dsl.runtime import (
        ApprovalResult,
        DraftResult,
        EffectInput,
        EffectResult,
        EventIn,
        RunResult,
        RunStatus,
        SendEmailResult,
        StartRequest,
        StepRecord,
        TaskResult,
    )
    from touchpoint.engine import machine
    from touchpoint.engine.program import Effect, EffectDone, Output, Program
    from touchpoint.engine.state import RunState, waiting_of
    from workflows import names, search
    from workflows.messages import AccountState, Envelope, ProjectRuns, RunControl, RunProjection
    from workflows.options import EFFECT_OPTIONS, OPTIONS_BY_KIND, STORE_OPTIONS

TIMELINE_LIMIT = 20_000
"""Timeline lines a simulated run reports to its driver."""
RESULT_TYPES: dict[str, type[Any]] = {
    names.SEND_EMAIL: SendEmailResult,
    names.RESERVE_SEND_SLOT: datetime,
    names.REQUEST_APPROVAL: ApprovalResult,
    names.CREATE_TASK: TaskResult,
    names.ADD_NOTE: EffectResult,
    names.UPDATE_FIELDS: EffectResult,
    names.CALL_WEBHOOK: EffectResult,
    names.DRAFT_TEXT: DraftResult,
}


class RunHost:
    """The runs' side of the account workflow (its attributes are set by its `__init__`)."""

    state: AccountState
    programs: dict[str, Program]
    inbox: list[tuple[str, machine.Input]]
    inflight: int
    unstarted: int
    """Effect batches created that will carry the projections of moved runs."""
    effects: list[asyncio.Task[None]]
    timelines: dict[str, list[StepRecord]]
    unprojected: dict[str, list[StepRecord]]
    moved: set[str]
    result: RunResult | None
    unlogged: dict[str, list[EventIn]]
    """Per run, its engine events that nothing listens to: they ride on its next projection."""
    listening: dict[str, Listening]
    """What each program (``playbook@version``) listens to, worked out once per instance."""

    def now(self) -> datetime:
        """The account's clock: Temporal's time plus the simulation offset (zero in production)."""
        return workflow.now() + timedelta(seconds=self.state.clock_offset)

    def _status(self, run: RunState) -> RunStatus:
        return RunStatus(id=run.run_id, because=run.because, history=list(run.recent), **self._where(run))

    def _where(self, run: RunState) -> dict[str, Any]:
        """Where a run stands: what its status query and its store projection both say."""
        return {
            "workflow_id": workflow.info().workflow_id,
            "playbook": run.playbook,
            "version": run.version,
            "account_id": run.account_id,
            "status": run.status,
            "step": run.step,
            "outcome": run.outcome,
            "paused_reason": run.paused_reason,
            "started_at": run.started_at,
            "vars": run.vars,
            "scorecard": run.scorecard,
            "waiting": [w.model_dump(mode="json") for w in waiting_of(run)],
            "held_out": run.held_out,
            "enrolled_until": run.enrolled_until,
            "variant": run.variant,
        }

    def _index(self) -> None:
        """Keep the search attributes current: the account, its runs' playbooks and steps, at quiet points."""
        state = self.state
        if not state.indexed or state.account is None:
            return
        if self.inflight:
            return  # set where runs wait, not at each effect on the way (each upsert costs a visibility write)
        runs = [(run.playbook, run.step, run.status) for run in state.runs.values()]
        values = search.of_account(state.account_id, state.account, runs)
        changes = search.updates(state.indexed_values, values)
        if changes:
            workflow.upsert_search_attributes(changes)
            state.indexed_values = values

    # ------------------------------------------------------------------ hosting runs

    def _control(self, request: RunControl) -> None:
        for run_id, run in list(self.state.runs.items()):
            if run_id == request.run_id or (request.run_id is None and run.playbook == request.playbook):
                message: machine.Input
                if request.action == "pause":
                    message = machine.Pause(reason=request.reason)
                elif request.action == "resume":
                    message = machine.Resume()
                elif request.action == "stop":
                    message = machine.Stop(outcome="running", because="horizon")
                else:
                    message = machine.Cancel()
                self._feed(run_id, message)

    def _feed(self, run_id: str, message: machine.Input) -> None:
        run = self.state.runs.get(run_id)
        if run is None:
            return  # an answer for a run that has ended
        program = self.programs[f"{run.playbook}@{run.version}"]
        self._absorb(run, machine.step(program, run, self.state.account, self.now(), message))

    def _absorb(self, run: RunState, out: Output) -> None:
        """Keep the run's new timeline lines, start its effects (one batch), note that it moved."""
        if out.records:
            if self.state.finish_after_run:
                timeline = self.timelines.setdefault(run.run_id, [])
                timeline.extend(out.records)
                del timeline[:-TIMELINE_LIMIT]
            self.unprojected.setdefault(run.run_id, []).extend(out.records)
        for text in out.warnings:
            workflow.logger.warning("run %s: %s", run.run_id, text)
        if out.moved or out.ended:
            self.moved.add(run.run_id)
        effects = [e for e in out.effects if e.kind != "start_playbook"]
        for effect in out.effects:
            if effect.kind == "start_playbook" and isinstance(effect.input, StartRequest):
                self.state.starts.append(effect.input)
        if effects:
            self.inflight += 1
            self.unstarted += any(isinstance(e.input, EffectInput) for e in effects)
            self.effects = [t for t in self.effects if not t.done()]
            self.effects.append(asyncio.create_task(self._perform(run.run_id, effects)))

    async def _perform(self, run_id: str, effects: list[Effect]) -> None:
        """One run's batch of effects, concurrently; answers reach the run in the order asked."""
        effects = self._carrying(effects)
        try:
            answers = await asyncio.gather(*(self._call(effect) for effect in effects))
            self.inbox.extend((run_id, answer) for answer in answers)
            run = self.state.runs.get(run_id)
            for effect, answer in zip(effects, answers, strict=True):
                sent = answer.result
                if run is not None and isinstance(sent, SendEmailResult) and sent.status == "sent" and isinstance(effect.input, EffectInput):
                    data = {"message_id": sent.message_id, "playbook": run.playbook, "step": effect.input.step, "template": sent.template, "to": sent.to}
                    self._emit(run, "email.sent", data, f"{effect.input.key}:email.sent")
        finally:
            self.inflight -= 1

    # ------------------------------------------------------------------ engine events

    def _emit(self, run: RunState, type: str, data: dict[str, Any], id: str) -> None:
        """An engine event of the run (contract section 9: `run.started`, `run.ended`,
        `email.sent`): through the account's event path (stored, seen by its runs, may start a
        playbook) when something of the account listens to its type, else only recorded in the
        event log with the run's next projection, which costs no store step of its own."""
        event = EventIn(id=id, type=type, account_id=self.state.account_id, at=self.now(), data=data)
        if self._hears(type):
            self.state.pending.append(Envelope(event=event))
        elif not self.state.simulation:
            self.unlogged.setdefault(run.run_id, []).append(event)
            self.moved.add(run.run_id)

    def _run_event(self, run: RunState, type: str) -> None:
        data: dict[str, Any] = {"playbook": run.playbook, "version": run.version}
        if type == "run.ended":
            data["outcome"] = run.outcome
        if run.enrolled_until is not None:  # the playbook has a holdout
            data["held_out"] = run.held_out
        self._emit(run, type, data, f"{run.run_id}:{type}")

    def _hears(self, type: str) -> bool:
        """Whether a deployed trigger names ``type`` or a run of this account can react to it."""
        index = self.state.index
        if index is not None and any(entry.fires_on(type) for entry in index.triggers):
            return True
        for run in self.state.runs.values():
            key = f"{run.playbook}@{run.version}"
            if key not in self.listening and key in self.programs:
                self.listening[key] = of_playbook(self.programs[key].playbook)
            listens = self.listening.get(key)
            if listens is not None and (listens.every or type in listens.types):
                return True
        return False

    async def _call(self, effect: Effect) -> EffectDone:
        try:
            options = OPTIONS_BY_KIND.get(effect.kind, EFFECT_OPTIONS)
            result = await workflow.execute_activity(effect.kind, effect.input, result_type=RESULT_TYPES[effect.kind], **options)
        except ActivityError as error:
            cause = error.cause
            message = str(cause.message if isinstance(cause, ApplicationError) else (cause or error))
            kind = cause.type if isinstance(cause, ApplicationError) else None
            return EffectDone(id=effect.id, error=message, error_type=kind)
        return EffectDone(id=effect.id, result=result)

    # ------------------------------------------------------------------ projection

    def _projection(self, run: RunState) -> RunProjection:
        records = self.unprojected.pop(run.run_id, [])
        events = self.unlogged.pop(run.run_id, [])
        return RunProjection(
            run_id=run.run_id, ended_at=run.ended_at, position=run.position, asked_approval=run.asked_approval, records=records, events=events, **self._where(run)
        )

    def _take_projections(self) -> list[RunProjection]:
        """Projections of the runs that moved since the last store step (it carries them)."""
        found = [self._projection(self.state.runs[run_id]) for run_id in sorted(self.moved) if run_id in self.state.runs]
        self.moved.clear()
        return found

    def _carrying(self, effects: list[Effect]) -> list[Effect]:
        """The batch, its first side effect carrying the projections of the runs that moved: the
        activity writes them before its own work, so this activation needs no store step."""
        for i, effect in enumerate(effects):
            if isinstance(effect.input, EffectInput):
                self.unstarted -= 1
                if not self.moved or self.state.simulation:
                    return effects
                carried = effect.input.model_copy(update={"projections": self._take_projections()})
                return [*effects[:i], effect.model_copy(update={"input": carried}), *effects[i + 1 :]]
        return effects

    async def _flush(self) -> None:
        """Project the runs that moved, then let go of the ended ones.

        The projections ride on an effect this activation starts when there is one (see
        `_carrying`); else, or when a run ended, one local activity writes them.
        """
        ended = [run for run in self.state.runs.values() if run.ended]
        for run in ended:
            self._run_event(run, "run.ended")
        deferred = self.unstarted > 0 and not any(run.run_id in self.moved for run in ended)
        if self.moved and not self.state.simulation and not deferred:
            await workflow.execute_local_activity(names.PROJECT_RUNS, ProjectRuns(runs=self._take_projections()), **STORE_OPTIONS)
        if self.state.simulation or not deferred:
            self.moved.clear()
        for run in ended:
            del self.state.runs[run.run_id]
            self.unprojected.pop(run.run_id, None)
            if self.state.finish_after_run and self.result is None:
                self.result = RunResult(
                    run_id=run.run_id, outcome=run.outcome or "completed", because=run.because, started_at=run.started_at,
                    ended_at=run.ended_at, history=self.timelines.pop(run.run_id, []), vars=run.vars, scorecard=run.scorecard,
                )
