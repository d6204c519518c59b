"""`ScheduleRun`: one tick of a playbook with a `schedule` trigger (weekly digests, reviews).

A Temporal Schedule per deployed schedule playbook starts one run per tick. The run has no
account: every expression and template that sees `accounts` and `changes` is evaluated by an
activity that reads the store, so those never enter this workflow's history. Steps: `email`
(`for_each: csm` or `to:`), `webhook`, `set`, `if`, `wait` and `exit` (validation refuses the
others in a schedule playbook).
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

from temporalio import workflow
from temporalio.common import SearchAttributeKey
from temporalio.exceptions import ActivityError

with workflow.unsafe.imports_passed_through():
    from touchpoint.dsl.runtime import EffectResult, EventIn, RunView, SendEmailResult, StepRecord, plain
    from touchpoint.dsl.schedule import (
        BeginTickInput,
        FinishTickInput,
        ScheduleCall,
        ScheduleEmailInput,
        ScheduleEvalInput,
        ScheduleRecipient,
        ScheduleRecipientsInput,
        ScheduleRunInput,
        ScheduleRunResult,
        ScheduleTick,
        ScheduleWebhookInput,
    )
    from touchpoint.dsl.schema import EmailStep, ExitStep, IfStep, SetStep, StepBase, WaitStep, WebhookStep
    from touchpoint.dsl.yamlpos import Path, format_path
    from workflows import names
    from workflows.options import EFFECT_OPTIONS, RunEnded, StepFailed

SCHEDULED_START = SearchAttributeKey.for_datetime("TemporalScheduledStartTime")
READ_OPTIONS: dict[str, Any] = {
    # Reads of the whole store: a large one may take a while, a failed one is retried.
    "start_to_close_timeout": timedelta(minutes=10),
    "retry_policy": EFFECT_OPTIONS["retry_policy"],
}


@workflow.defn(name=names.SCHEDULE_RUN)
class ScheduleRun:
    """Interprets one tick of a schedule playbook."""

    @workflow.run
    async def run(self, input: ScheduleRunInput) -> ScheduleRunResult:
        tick = input.tick or workflow.info().typed_search_attributes.get(SCHEDULED_START) or workflow.now()
        # The run's clock starts at the tick (a tick started by hand may name a past moment).
        self.offset = tick - workflow.now()
        self.history: list[StepRecord] = []
        self.vars: dict[str, Any] = {}
        self.tick: ScheduleTick = await workflow.execute_activity(
            names.BEGIN_SCHEDULE_TICK,
            BeginTickInput(playbook=input.playbook, version=input.version, tick=tick, workflow_id=workflow.info().workflow_id),
            result_type=ScheduleTick,
            **READ_OPTIONS,
        )
        self.event = EventIn(type="schedule", at=tick, data={"since": self.tick.since.isoformat(), "tick": tick.isoformat()})
        self.current: str | None = None
        outcome = "completed"
        try:
            await self._steps(self.tick.playbook.steps, ("steps",))
        except RunEnded as ended:
            outcome = ended.outcome
        except StepFailed as exc:
            self._record(self.current or "-", "failed", error=str(exc))
            outcome = "failed"
        await workflow.execute_activity(
            names.FINISH_SCHEDULE_TICK,
            FinishTickInput(
                run_id=self.tick.run_id, playbook=self.tick.playbook.playbook, tick=self.tick.tick, outcome=outcome, vars=self.vars, ended_at=self.now()
            ),
            **READ_OPTIONS,
        )
        return ScheduleRunResult(run_id=self.tick.run_id, outcome=outcome, history=self.history, vars=self.vars)

    # ------------------------------------------------------------------ helpers

    def now(self) -> datetime:
        return workflow.now() + self.offset

    def _call(self) -> ScheduleCall:
        view = RunView(
            id=self.tick.run_id,
            playbook=self.tick.playbook.playbook,
            version=self.tick.version,
            started_at=self.tick.tick,
            step=self.current,
            vars=self.vars,
        )
        return ScheduleCall(run=view, event=self.event, now=self.now(), since=self.tick.since, tick=self.tick.tick, timezone=self.tick.workspace.timezone)

    def _record(self, step: str, action: str, **detail: Any) -> None:
        self.history.append(StepRecord(at=self.now(), day=0, step=step, action=action, detail=plain(detail)))

    async def _evaluate(self, *expressions: str) -> list[Any]:
        result: list[Any] = await workflow.execute_activity(
            names.EVALUATE_SCHEDULE, ScheduleEvalInput(call=self._call(), expressions=list(expressions)), result_type=list, **READ_OPTIONS
        )
        return result

    # ------------------------------------------------------------------ steps

    async def _steps(self, steps: list[Any], path: Path) -> None:
        for index, step in enumerate(steps):
            await self._step(step, (*path, index))

    async def _step(self, step: StepBase, path: Path) -> None:
        name = step.id or format_path(path)
        self.current = name
        # With `for_each: csm` an email's `when` is checked per CSM, against that CSM's book.
        per_csm = isinstance(step, EmailStep) and step.email.for_each == "csm"
        if step.when is not None and not per_csm and not (await self._evaluate(step.when))[0]:
            return
        try:
            await self._act(step, path, name)
        except ActivityError as exc:
            cause = exc.cause or exc
            self._record(name, "failed", error=str(getattr(cause, "message", cause)))
            if step.on_error == "stop":
                raise StepFailed(str(cause)) from None

    async def _act(self, step: StepBase, path: Path, name: str) -> None:
        if isinstance(step, EmailStep):
            await self._email(step, path, name)
        elif isinstance(step, WebhookStep):
            hook = step.webhook
            result: EffectResult = await workflow.execute_activity(
                names.CALL_SCHEDULE_WEBHOOK,
                ScheduleWebhookInput(
                    call=self._call(),
                    key=self._key(path),
                    step=name,
                    path=format_path(path),
                    url=hook.url,
                    method=hook.method,
                    json_body=hook.json_,
                    headers=dict(hook.headers),
                ),
                result_type=EffectResult,
                **EFFECT_OPTIONS,
            )
            self._record(name, "webhook", **result.detail)
        elif isinstance(step, SetStep):
            keys = list(step.set)
            values = await self._evaluate(*(str(step.set[k]) for k in keys))
            self.vars.update(dict(zip(keys, values, strict=True)))
            self._record(name, "set", **dict(zip(keys, values, strict=True)))
        elif isinstance(step, IfStep):
            branch = "then" if (await self._evaluate(step.if_))[0] else "else"
            self._record(name, "if", branch=branch)
            await self._steps(list(step.then if branch == "then" else step.else_), (*path, branch))
        elif isinstance(step, WaitStep):
            self._record(name, "wait", duration=str(step.wait))
            await workflow.sleep(step.wait)
        elif isinstance(step, ExitStep):
            outcome = step.exit.outcome
            self._record(name, "exit", outcome=outcome)
            raise RunEnded(outcome)
        else:  # validation refuses other steps in schedule playbooks; an old deploy may not have
            raise StepFailed(f"step `{name}` cannot run in a schedule playbook")

    def _key(self, path: Path, recipient: str = "-") -> str:
        return f"{self.tick.run_id}|{format_path(path)}|{recipient}|1"

    async def _email(self, step: EmailStep, path: Path, name: str) -> None:
        mail = step.email
        recipients: list[ScheduleRecipient] = await workflow.execute_activity(
            names.SCHEDULE_RECIPIENTS,
            ScheduleRecipientsInput(call=self._call(), to=mail.to, for_each=mail.for_each),
            result_type=list[ScheduleRecipient],
            **READ_OPTIONS,
        )
        if not recipients:
            self._record(name, "email", status="skipped", reason="no recipients")
            return
        workspace = self.tick.workspace
        locales = [] if mail.locale is None else [str(v) for v in await self._evaluate(mail.locale) if v]
        failures = 0
        for target in recipients:
            result: SendEmailResult = await workflow.execute_activity(
                names.SEND_SCHEDULE_EMAIL,
                ScheduleEmailInput(
                    call=self._call(),
                    key=self._key(path, target.recipient.email.lower()),
                    step=name,
                    path=format_path(path),
                    template=mail.template,
                    to=target,
                    locales=locales,
                    sender_email=workspace.sender.email,
                    sender_name=workspace.sender.name,
                    unsubscribe_group=workspace.sendgrid.unsubscribe_group,
                    when=step.when if target.csm else None,
                ),
                result_type=SendEmailResult,
                **EFFECT_OPTIONS,
            )
            failures += result.status == "failed"
            if result.status == "skipped":
                continue  # this CSM's book does not meet the step's `when`
            self._record(name, "email", to=result.to, subject=result.subject, template=mail.template, status=result.status)
        if failures == len(recipients) and step.on_error == "stop":
            raise StepFailed("every email of the step failed")
