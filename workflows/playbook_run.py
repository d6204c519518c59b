"""`PlaybookRun`: one playbook version for one account, step by step, for as long as it takes.

A small recursive interpreter over the frozen, validated playbook in its input. Conditions are
evaluated here (Jinja2 is passed through the sandbox at worker level); templates are rendered
and side effects happen only in activities, each keyed on (run id, step path, recipient, round)
and checked against the store's ledger, so a retry or a replay never does anything twice.

Every wait is `workflow.wait_condition` on the run's own state, so `exit_when`, `goal`, cancel and
the scorecard's judgement can end a run in the middle of any wait.
"""

import asyncio
import hashlib
from collections.abc import Sequence
from datetime import datetime, timedelta
from typing import Any

from temporalio import workflow
from temporalio.common import RetryPolicy
from temporalio.exceptions import ActivityError, ApplicationError

with workflow.unsafe.imports_passed_through():
    from touchpoint.dsl import expressions as ex
    from touchpoint.dsl.runtime import (
        EffectResult,
        EventIn,
        NoteInput,
        ProjectRunInput,
        Recipient,
        ReserveSlotInput,
        RunInput,
        RunResult,
        RunStatus,
        RunView,
        SendEmailInput,
        SendEmailResult,
        StepRecord,
        TaskInput,
        TaskResult,
        UpdateInput,
        WebhookInput,
        build_context,
        initial_scorecard,
        plain,
    )
    from touchpoint.dsl.schema import (
        INTERNAL_RECIPIENTS,
        EmailStep,
        ExitStep,
        IfStep,
        NoteStep,
        RepeatStep,
        SetStep,
        SplitStep,
        StartStep,
        StepBase,
        TaskStep,
        UpdateStep,
        WaitForStep,
        WaitStep,
        WaitUntilStep,
        WebhookStep,
        is_address,
    )
    from touchpoint.dsl.timing import local_midnight, next_opening, run_day
    from touchpoint.dsl.yamlpos import Path, format_path
    from workflows import names
    from workflows.options import EFFECT_OPTIONS, RunEnded, StepFailed

HISTORY_LIMIT = 1000
SEEN_LIMIT = 200
@workflow.defn(name=names.PLAYBOOK_RUN)
class PlaybookRun:
    """Interprets one frozen playbook version for one account."""

    @workflow.init
    def __init__(self, input: RunInput) -> None:
        self.input = input
        self.playbook = input.playbook
        self.account = input.account
        self.event = input.event
        self.vars: dict[str, Any] = {}
        self.history: list[StepRecord] = []
        self.seen: list[EventIn] = []
        self.ending: str | None = None
        self.paused = False
        self.paused_reason: str | None = None
        self.current: str | None = None
        self.rounds: list[int] = []
        self.started_at = self.now()
        self.waiting_for: tuple[WaitForStep, list[EventIn]] | None = None
        self.awaiting_tasks: dict[str, bool] = {}
        self.awaiting_steps: dict[str, str] = {}
        self.account_version = 0
        self.judged = self.playbook.scorecard is None
        self.scorecard: dict[str, Any] | None = initial_scorecard(self.playbook)

    # ------------------------------------------------------------------ clock and context

    def now(self) -> datetime:
        """The run's clock: Temporal's time plus the simulation offset."""
        return workflow.now() + timedelta(seconds=self.input.clock_offset)

    @property
    def tz(self) -> str:
        return (self.account.timezone if self.account else None) or self.input.workspace.timezone

    def view(self) -> RunView:
        return RunView(
            id=self.input.run_id,
            playbook=self.playbook.playbook,
            version=self.input.version,
            started_at=self.started_at,
            day=run_day(self.started_at, self.now()),
            round=self.rounds[-1] if self.rounds else 1,
            step=self.current,
            vars=self.vars,
            scorecard=self.scorecard,
        )

    def context(self, event: EventIn | None = None) -> dict[str, Any]:
        return build_context(account=self.account, event=event or self.event, run=self.view(), now=self.now(), tz=self.tz)

    def check(self, source: str | None, event: EventIn | None = None) -> bool:
        return ex.is_true(source, self.context(event))

    # ------------------------------------------------------------------ handlers

    @workflow.signal(name="event")
    def on_event(self, event: EventIn) -> None:
        """An event about the account, forwarded by its account workflow (or a test driver)."""
        if self.ending:
            return
        self.seen.append(event)
        del self.seen[:-SEEN_LIMIT]
        if event.type == "usage.reported" and self.account is not None:
            # Also merged by the account workflow; done here too so simulations see it.
            metrics = event.data.get("metrics") or {}
            merged = {**self.account.metrics, **{k: float(v) for k, v in metrics.items() if isinstance(v, (int, float))}}
            self.account = self.account.model_copy(update={"metrics": merged})
            self.account_version += 1
        if event.type == "task.completed":
            for task_id, step in list(self.awaiting_steps.items()):
                if self._completes(event, task_id, step):
                    self.awaiting_tasks[task_id] = True
        if self.waiting_for is not None:
            spec, matched = self.waiting_for
            if not matched and event.type in spec.wait_for.event and self._safe_check(spec.wait_for.when, event):
                matched.append(event)
        self._score(event)
        self._check_end(event)

    @workflow.signal(name="account")
    def on_account(self, account: Any) -> None:
        """The account document changed (metrics, fields, dates)."""
        from touchpoint.dsl.schema import AccountDoc

        self.account = AccountDoc.model_validate(account) if not isinstance(account, AccountDoc) else account
        self.account_version += 1
        if not self.ending:
            self._score(None)
            self._check_end(None)

    @workflow.signal(name="pause")
    def pause(self, reason: str | None = None) -> None:
        """Hold before the next side effect."""
        self.paused = True
        self.paused_reason = reason or "paused by a user"

    @workflow.signal(name="resume")
    def resume(self) -> None:
        """Go on where the run was."""
        self.paused = False
        self.paused_reason = None

    @workflow.signal(name="cancel")
    def cancel(self) -> None:
        """End the run now with outcome `cancelled`."""
        if not self.ending:
            self.ending = "cancelled"

    @workflow.signal(name="stop_simulation")
    def stop_simulation(self) -> None:
        """The simulation horizon passed: end with outcome `running`."""
        if not self.ending:
            self.ending = "running"

    @workflow.query(name="status")
    def status(self) -> RunStatus:
        return RunStatus(
            id=self.input.run_id,
            workflow_id=workflow.info().workflow_id,
            playbook=self.playbook.playbook,
            version=self.input.version,
            account_id=self.account.id if self.account else None,
            status="ended" if self.ending else ("paused" if self.paused else "running"),
            step=self.current,
            outcome=self.ending,
            paused_reason=self.paused_reason,
            started_at=self.started_at,
            vars=self.vars,
            scorecard=self.scorecard,
            history=self.history[-200:],
        )

    def _safe_check(self, source: str | None, event: EventIn | None) -> bool:
        try:
            return self.check(source, event)
        except ex.ExpressionError as exc:
            workflow.logger.warning("condition failed: %s", exc)
            return False

    def _check_end(self, event: EventIn | None) -> None:
        if self.ending:
            return
        if self.playbook.exit_when and self._safe_check(self.playbook.exit_when, event):
            self.ending = "exited"
        elif self.playbook.goal and self._safe_check(self.playbook.goal, event):
            self.ending = "converted"

    def _score(self, event: EventIn | None) -> None:
        card = self.playbook.scorecard
        if not card or self.scorecard is None:
            return
        changed = False
        for milestone in card.milestones:
            state = self.scorecard["milestones"][milestone.id]
            if state["done"]:
                continue
            if milestone.event:
                hit = event is not None and event.type == milestone.event and self._safe_check(milestone.when, event)
            else:
                hit = self._safe_check(milestone.when, event)
            if hit:
                state["done"], state["day"] = True, run_day(self.started_at, self.now())
                changed = True
                self._record("scorecard", "milestone", kind="milestone", milestone=milestone.id)
        if changed:
            total = sum(m.weight for m in card.milestones)
            done = sum(m.weight for m in card.milestones if self.scorecard["milestones"][m.id]["done"])
            self.scorecard["score"] = round(done / total * 100) if total else 0

    # ------------------------------------------------------------------ run

    @workflow.run
    async def run(self, input: RunInput) -> RunResult:
        outcome = "completed"
        if not input.projected:  # else the account workflow wrote the row as it started the run
            await self._project("running")
        self._score(None)
        self._check_end(None)
        card_task = asyncio.create_task(self._scorecard_clock()) if self.playbook.scorecard else None
        try:
            await self.run_steps(self.playbook.steps, ("steps",))
            if not self.judged:
                await self._wait(lambda: self.judged)
            if self.ending:
                raise RunEnded(self.ending)
        except RunEnded as ended:
            outcome = ended.outcome
        except asyncio.CancelledError:
            outcome = "cancelled"
        except StepFailed:
            outcome = "failed"
        if card_task and not card_task.done():
            card_task.cancel()
        self.ending = outcome
        self.current = None
        # A run the account workflow's store step started is reported by its end projection.
        notify = self.input.account_workflow_id if input.projected and input.report_end else None
        await self._project("ended", outcome=outcome, notify=notify)
        if self.input.account_workflow_id and not input.projected:
            handle = workflow.get_external_workflow_handle(self.input.account_workflow_id)
            try:
                await handle.signal("run_ended", {"playbook": self.playbook.playbook, "run_id": self.input.run_id, "outcome": outcome})
            except Exception:  # the account workflow may be between continue-as-new runs
                workflow.logger.warning("could not report the end of run %s", self.input.run_id)
        return RunResult(run_id=self.input.run_id, outcome=outcome, history=self.history, vars=self.vars, scorecard=self.scorecard)

    async def _scorecard_clock(self) -> None:
        """Checkpoints and the `by_day` judgement, on their day, whatever step the run is in."""
        card = self.playbook.scorecard
        assert card is not None and self.scorecard is not None
        try:
            for index, checkpoint in sorted(enumerate(card.checkpoints), key=lambda item: item[1].day):
                await self._sleep_until(self.started_at + timedelta(days=checkpoint.day))
                if self.scorecard["score"] < checkpoint.below:
                    await self.run_steps(checkpoint.steps, ("scorecard", "checkpoints", index, "steps"))
            await self._sleep_until(self.started_at + timedelta(days=card.target.by_day))
            self.scorecard["met"] = self.scorecard["score"] >= card.target.score
            if not self.scorecard["met"]:
                await self.run_steps(card.on_miss, ("scorecard", "on_miss"))
        except RunEnded:
            return
        except StepFailed:
            self.ending = self.ending or "failed"
        finally:
            self.judged = True

    async def _wait(self, condition: Any = None, until: datetime | None = None) -> bool:
        """Wait for ``condition`` (or for ``until``), waking early if the run is ending.

        Returns:
            True if the condition held, False if the time came first.
        """
        while True:
            if self.ending:
                raise RunEnded(self.ending)
            timeout = None
            if until is not None:
                timeout = until - self.now()
                if timeout <= timedelta(0):
                    return bool(condition and condition())
            try:
                await workflow.wait_condition(
                    lambda: bool(self.ending) or bool(condition and condition()),
                    timeout=timeout,
                )
            except TimeoutError:
                if self.ending:
                    raise RunEnded(self.ending) from None
                return bool(condition and condition())
            if self.ending:
                raise RunEnded(self.ending)
            return True

    async def _sleep_until(self, until: datetime) -> None:
        await self._wait(None, until)

    async def _hold_if_paused(self) -> None:
        if self.paused:
            await self._project("paused")
            await self._wait(lambda: not self.paused)
            await self._project("running")

    # ------------------------------------------------------------------ interpreter

    async def run_steps(self, steps: Sequence[StepBase], path: Path) -> None:
        for index, step in enumerate(steps):
            await self.run_step(step, path + (index,))

    async def run_step(self, step: StepBase, path: Path) -> None:
        if self.ending:
            raise RunEnded(self.ending)
        self._check_end(None)
        if self.ending:
            raise RunEnded(self.ending)
        name = step.id or format_path(path)
        self.current = name
        await self._hold_if_paused()
        if not self._condition(step.when, name):
            return
        while True:
            try:
                await self._execute(step, path, name)
                return
            except ex.ExpressionError as exc:
                # A condition or value that fails at run time (e.g. a division by zero): the
                # step has failed, and the error rules of the contract apply.
                self._record(name, _action(step), status="failed", error=str(exc))
                if step.on_error == "stop":
                    raise StepFailed(str(exc)) from None
                return
            except ActivityError as error:
                cause = error.cause
                if isinstance(cause, ApplicationError) and cause.type == names.CONFIGURATION_ERROR:
                    # Only a human can fix this: pause, say why, and retry the step on resume.
                    self.paused, self.paused_reason = True, f"{name}: {cause.message}"
                    self._record(name, "paused", reason=cause.message)
                    await self._hold_if_paused()
                    continue
                message = str(cause.message if isinstance(cause, ApplicationError) else (cause or error))
                self._record(name, _action(step), status="failed", error=message)
                if step.on_error == "stop":
                    raise StepFailed(message) from None
                return

    def _condition(self, source: str | None, name: str) -> bool:
        try:
            return self.check(source)
        except ex.ExpressionError as exc:
            self._record(name, "when", status="failed", error=str(exc))
            return False

    def _key(self, path: Path, recipient: str = "-") -> str:
        rounds = ".".join(str(r) for r in self.rounds) or "1"
        return f"{self.input.run_id}|{format_path(path)}|{recipient}|{rounds}"

    def _effect(self, path: Path, name: str, recipient: str = "-") -> dict[str, Any]:
        return {
            "key": self._key(path, recipient),
            "run": self.view(),
            "step": name,
            "path": format_path(path),
            "account": self.account,
            "event": self.event,
            "now": self.now(),
            "simulation": self.input.simulation,
        }

    def _record(self, step: str, action: str, **detail: Any) -> None:
        now = self.now()
        self.history.append(StepRecord(at=now, day=run_day(self.started_at, now), step=step, action=action, detail=plain(detail)))
        del self.history[:-HISTORY_LIMIT]

    async def _execute(self, step: StepBase, path: Path, name: str) -> None:
        if isinstance(step, EmailStep):
            await self._email(step, path, name)
        elif isinstance(step, WaitStep):
            until = self.now() + step.wait
            self._record(name, "wait", until=until)
            await self._sleep_until(until)
        elif isinstance(step, WaitUntilStep):
            await self._wait_until(step, name)
        elif isinstance(step, WaitForStep):
            await self._wait_for(step, path, name)
        elif isinstance(step, TaskStep):
            await self._task(step, path, name)
        elif isinstance(step, NoteStep):
            result = await self._activity(names.ADD_NOTE, NoteInput(**self._effect(path, name), text=step.note.text), EffectResult)
            self._record(name, "note", **result.detail)
        elif isinstance(step, UpdateStep):
            fields = {k: self._field_value(v) for k, v in step.update.fields.items()}
            update = UpdateInput(**self._effect(path, name), fields=fields, crm_fields=self.input.workspace.crm.fields)
            result = await self._activity(names.UPDATE_FIELDS, update, EffectResult)
            self._record(name, "update", **result.detail)
        elif isinstance(step, WebhookStep):
            hook = step.webhook
            call = WebhookInput(**self._effect(path, name), url=hook.url, method=hook.method, json_body=hook.json_, headers=hook.headers)
            result = await self._activity(names.CALL_WEBHOOK, call, EffectResult)
            self._record(name, "webhook", **result.detail)
        elif isinstance(step, SetStep):
            values = {key: plain(ex.evaluate(source, self.context())) for key, source in step.set.items()}
            self.vars.update(values)
            self._record(name, "set", vars=values)
        elif isinstance(step, IfStep):
            branch = "then" if self.check(step.if_) else "else"
            self._record(name, "if", branch=branch)
            await self.run_steps(step.then if branch == "then" else step.else_, path + (branch,))
        elif isinstance(step, SplitStep):
            variant = self._variant(step, name)
            self.vars[step.id or name] = variant
            self._record(name, "split", variant=variant)
            await self.run_steps(step.split[variant].steps, path + ("split", variant, "steps"))
        elif isinstance(step, RepeatStep):
            await self._repeat(step, path, name)
        elif isinstance(step, StartStep):
            if self.check(step.start.when):
                self._record(name, "start", playbook=step.start.playbook)
                if self.input.account_workflow_id:
                    handle = workflow.get_external_workflow_handle(self.input.account_workflow_id)
                    await handle.signal("start_playbook", {"playbook": step.start.playbook, "by": self.input.run_id})
        elif isinstance(step, ExitStep):
            self._record(name, "exit", outcome=step.exit.outcome)
            self.ending = step.exit.outcome
            raise RunEnded(step.exit.outcome)

    def _field_value(self, value: Any) -> Any:
        if isinstance(value, dict) and set(value) == {"expr"}:
            return {"value": plain(ex.evaluate(str(value["expr"]), self.context()))}
        return value

    async def _activity(self, activity: str, arg: Any, result_type: type[Any]) -> Any:
        return await workflow.execute_activity(activity, arg, result_type=result_type, **EFFECT_OPTIONS)

    async def _project(self, status: str, outcome: str | None = None, notify: str | None = None) -> None:
        if self.input.simulation:
            return
        await workflow.execute_local_activity(
            names.PROJECT_RUN,
            ProjectRunInput(
                run_id=self.input.run_id,
                workflow_id=workflow.info().workflow_id,
                playbook=self.playbook.playbook,
                version=self.input.version,
                account_id=self.account.id if self.account else None,
                status=status,  # type: ignore[arg-type]
                step=self.current,
                outcome=outcome,
                started_at=self.started_at,
                ended_at=self.now() if status == "ended" else None,
                vars=self.vars,
                scorecard=self.scorecard,
                paused_reason=self.paused_reason,
                records=self.history[-50:] if status == "ended" else [],
                notify=notify,
            ),
            start_to_close_timeout=timedelta(seconds=30),
            retry_policy=RetryPolicy(maximum_interval=timedelta(minutes=1)),
        )

    # ------------------------------------------------------------------ steps with waits

    async def _wait_until(self, step: WaitUntilStep, name: str) -> None:
        spec = step.wait_until
        if spec.day is not None:
            until = self.started_at + timedelta(days=spec.day)
            self._record(name, "wait_until", until=until)
            await self._sleep_until(until)
            return
        recorded = False
        while True:
            # Re-evaluated whenever the account changes: a moved renewal date moves the wait.
            version = self.account_version
            value = ex.evaluate(str(spec.date), self.context())
            if value is None:
                self._record(name, "wait_until", status="skipped", reason=f"`{spec.date}` has no value")
                return
            day = value.date() if isinstance(value, datetime) else value
            until = local_midnight(day, self.tz) + spec.offset
            if not recorded:
                self._record(name, "wait_until", until=until)
                recorded = True
            changed = await self._wait(lambda v=version: self.account_version != v, until)  # type: ignore[misc]
            if not changed:
                return

    async def _wait_for(self, step: WaitForStep, path: Path, name: str) -> None:
        spec = step.wait_for
        deadline = self.now() + spec.timeout
        matched: list[EventIn] = []
        if spec.seen:
            for event in self.seen:
                if event.type in spec.event and self._safe_check(spec.when, event):
                    matched.append(event)
                    break
        if not matched:
            self.waiting_for = (step, matched)
            try:
                await self._wait(lambda: bool(matched), deadline)
            finally:
                self.waiting_for = None
        if matched:
            self.event = matched[0]
            self._record(name, "wait_for", event=matched[0].type, timeout=False)
            return
        self._record(name, "wait_for", timeout=True)
        await self.run_steps(spec.on_timeout, path + ("wait_for", "on_timeout"))

    async def _task(self, step: TaskStep, path: Path, name: str) -> None:
        task = step.task
        due_at = self.now() + task.due if task.due else None
        request = TaskInput(
            **self._effect(path, name),
            title=task.title,
            notes=task.notes,
            owner=task.owner,
            fallback_owner=self.input.workspace.crm.fallback_owner,
            due_at=due_at,
            priority=task.priority,
        )
        result: TaskResult = await self._activity(names.CREATE_TASK, request, TaskResult)
        self._record(name, "task", task_id=result.task_id, title=result.title, owner=result.owner, due=result.due_at, **({"owner_note": result.owner_note} if result.owner_note else {}))
        if not task.await_:
            return
        self.awaiting_steps[result.task_id] = name
        self.awaiting_tasks[result.task_id] = any(
            e.type == "task.completed" and self._completes(e, result.task_id, name) for e in self.seen
        )
        try:
            done = await self._wait(lambda: self.awaiting_tasks[result.task_id], due_at)
        finally:
            completed = self.awaiting_tasks.pop(result.task_id, False)
            self.awaiting_steps.pop(result.task_id, None)
        if not done and not completed:
            self._record(name, "task_overdue", task_id=result.task_id)
            await self.run_steps(task.on_overdue, path + ("task", "on_overdue"))

    def _completes(self, event: EventIn, task_id: str, step: str) -> bool:
        """A `task.completed` event names the task by id or (CRM syncs, simulations) by step."""
        data = event.data
        if str(data.get("task_id", "")) == task_id:
            return True
        return data.get("task_id") is None and data.get("step") == step and data.get("playbook") in (None, self.playbook.playbook)

    async def _repeat(self, step: RepeatStep, path: Path, name: str) -> None:
        spec = step.repeat
        round_no = 0
        while True:
            round_no += 1
            round_start = self.now()
            self.rounds.append(round_no)
            try:
                self._record(name, "repeat", round=round_no)
                await self.run_steps(spec.steps, path + ("repeat", "steps"))
                finished = (spec.times is not None and round_no >= spec.times) or (spec.until is not None and self.check(spec.until))
            finally:
                self.rounds.pop()
            if finished:
                return
            await self._sleep_until(round_start + spec.every)

    def _variant(self, step: SplitStep, name: str) -> str:
        # Stable per account: the same account always lands in the same variant of a step.
        subject = self.account.id if self.account else self.input.run_id
        digest = hashlib.sha256(f"{subject}|{self.playbook.playbook}|{name}".encode()).digest()
        point = int.from_bytes(digest[:8], "big") / 2**64
        total = sum(v.weight for v in step.split.values())
        cumulative = 0.0
        for variant, spec in step.split.items():
            cumulative += spec.weight / total
            if point < cumulative:
                return variant
        return list(step.split)[-1]

    # ------------------------------------------------------------------ email

    def _recipients(self, step: EmailStep) -> list[Recipient]:
        mail = step.email
        account = self.account
        contacts = account.contacts if account else []
        roles = self.input.workspace.known_roles()
        found: list[Recipient] = []

        def add(r: Recipient) -> None:
            if r.email and all(x.email.lower() != r.email.lower() for x in found):
                found.append(r)

        def person(kind: str) -> None:
            who = getattr(account, kind, None) if account else None
            if who and who.email:
                add(Recipient(email=who.email, name=who.name, role=kind, timezone=account.timezone if account else None))

        targets = mail.to if mail.to is not None else (self.playbook.audience or None)
        if targets is None:
            for c in contacts:
                add(Recipient(**c.model_dump()))
        for target in targets or []:
            if target in INTERNAL_RECIPIENTS:
                person(target)
            elif target in roles:
                for c in contacts:
                    if c.role == target:
                        add(Recipient(**c.model_dump()))
            elif is_address(target):
                known = next((c for c in contacts if c.email.lower() == target.lower()), None)
                add(Recipient(**known.model_dump()) if known else Recipient(email=target))
            else:
                value = ex.evaluate(target, self.context())
                for address in value if isinstance(value, (list, tuple)) else [value]:
                    if not address:
                        continue
                    known = next((c for c in contacts if c.email.lower() == str(address).lower()), None)
                    add(Recipient(**known.model_dump()) if known else Recipient(email=str(address)))
        return found

    async def _email(self, step: EmailStep, path: Path, name: str) -> None:
        mail = step.email
        workspace = self.input.workspace
        recipients = self._recipients(step)
        if not recipients:
            self._record(name, "email", status="skipped", reason="no recipients")
            return
        locale_override = str(ex.evaluate(mail.locale, self.context())) if mail.locale else None
        cc = [self.account.csm.email] if mail.cc_csm and self.account and self.account.csm and self.account.csm.email else []
        window = self.playbook.send_window or workspace.send_window
        internal = set(INTERNAL_RECIPIENTS)
        # Each recipient is sent in their own window, concurrently; the step ends when all are done.
        results = await asyncio.gather(
            *(self._email_one(step, path, name, r, locale_override, cc, window, r.role in internal) for r in recipients)
        )
        failures = [r for r in results if r.status == "failed"]
        if failures and len(failures) == len(results) and step.on_error == "stop":
            raise StepFailed(failures[0].error or "email failed")

    def _opening(self, tz: str, window: Any, country: str | None) -> datetime:
        # `holidays` reads its translations through `locale` on first use of a country, which the
        # sandbox restricts; the calendars themselves are fixed data, so this stays deterministic.
        with workflow.unsafe.sandbox_unrestricted():
            return next_opening(self.now(), tz, window, country=country, holidays=tuple(self.input.workspace.holidays))

    async def _email_one(self, step: EmailStep, path: Path, name: str, r: Recipient, locale_override: str | None, cc: list[str], window: Any, internal: bool) -> SendEmailResult:
        workspace = self.input.workspace
        tz = r.timezone or (self.account.timezone if self.account else None) or workspace.timezone
        country = r.country or (self.account.country if self.account else None)
        key = self._key(path, r.email.lower())
        while True:
            due = self._opening(tz, window, country)
            if due > self.now():
                await self._sleep_until(due)
            if workspace.frequency_cap and not internal:
                cap = workspace.frequency_cap
                slot: datetime = await workflow.execute_activity(
                    names.RESERVE_SEND_SLOT,
                    ReserveSlotInput(key=key, contact_email=r.email.lower(), desired_at=self.now(), emails=cap.emails, per=cap.per),
                    result_type=datetime,
                    **EFFECT_OPTIONS,
                )
                if slot > self.now() + timedelta(seconds=1):
                    await self._sleep_until(slot)
                    if self._opening(tz, window, country) > self.now():
                        continue  # the free slot fell outside the window: find the next opening
            break
        await self._hold_if_paused()
        locales = [x for x in (locale_override, r.locale, self.account.locale if self.account else None) if x]
        request = SendEmailInput(
            **{**self._effect(path, name, r.email.lower()), "key": key},
            recipient=r,
            template=step.email.template,
            locales=locales,
            cc=cc,
            sender_email=workspace.sender.email,
            sender_name=workspace.sender.name,
            categories=list(workspace.sendgrid.categories),
            unsubscribe_group=workspace.sendgrid.unsubscribe_group,
        )
        try:
            result: SendEmailResult = await self._activity(names.SEND_EMAIL, request, SendEmailResult)
        except ActivityError as error:
            cause = error.cause
            if isinstance(cause, ApplicationError) and cause.type == names.CONFIGURATION_ERROR:
                raise
            message = str(cause.message if isinstance(cause, ApplicationError) else (cause or error))
            result = SendEmailResult(status="failed", to=r.email, template=step.email.template, error=message)
        detail: dict[str, Any] = {"to": result.to, "template": step.email.template}
        if result.status in ("sent", "uncertain"):
            detail.update(subject=result.subject, locale=result.locale)
        if result.status != "sent":
            detail.update(status=result.status, **({"error": result.error} if result.error else {}))
        self._record(name, "email", **detail)
        return result


def _action(step: StepBase) -> str:
    from touchpoint.dsl.schema import step_kind

    return step_kind(step) or "step"
