"""One tick of a `schedule` playbook: its window, its expressions, its recipients and its sends.

`accounts` and `changes` are read from the store here, for each call, and handed to Jinja2: they
never travel in activity inputs or results, so a review over 100,000 accounts costs the workflow's
history a few hundred bytes. Emails and webhooks go through the same exactly-once paths as an
account run's (ledger key: run id, step path, recipient), with the run id derived from the
playbook and the tick, so a tick that runs twice sends nothing twice.

A schedule email goes out at the tick: the cron is its send window, and as an internal report
it is not counted by the customer frequency cap.
"""

from __future__ import annotations

import asyncio
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy.orm import Session
from temporalio import activity
from temporalio.exceptions import ApplicationError

from activities.deps import Deps
from activities.email import EmailActivities
from activities.store import current_workspace
from activities.webhook import WebhookActivities
from touchpoint.dsl import expressions as ex
from touchpoint.dsl.accounts import AccountDoc
from touchpoint.dsl.runtime import (
    EffectResult,
    Recipient,
    SendEmailInput,
    SendEmailResult,
    WebhookInput,
    account_context,
    build_context,
    plain,
)
from touchpoint.dsl.sandbox import FreeMap
from touchpoint.dsl.schedule import (
    BeginTickInput,
    FinishTickInput,
    ScheduleCall,
    ScheduleEmailInput,
    ScheduleEvalInput,
    ScheduleRecipient,
    ScheduleRecipientsInput,
    ScheduleTick,
    ScheduleWebhookInput,
    changes_root,
    schedule_cursor_name,
)
from touchpoint.dsl.schema import Playbook, is_address
from touchpoint.observability.metrics import email_outcome
from touchpoint.store import repo, reviews
from workflows import names


def tick_run_id(playbook: str, tick: datetime) -> str:
    """A schedule run's id: one per playbook and tick, whoever starts it."""
    return f"schedule:{playbook}:{tick.strftime('%Y%m%dT%H%M%SZ')}"


def previous_tick(cron: str, tick: datetime, tz: str) -> datetime:
    """The cron's tick before ``tick``, in the workspace's zone (the first tick's window)."""
    from zoneinfo import ZoneInfo

    from croniter import croniter

    local = tick.astimezone(ZoneInfo(tz))
    previous: datetime = croniter(cron, local - timedelta(seconds=1)).get_prev(datetime)
    return previous.astimezone(tick.tzinfo)


def _effect(call: ScheduleCall, key: str, step: str, path: str) -> dict[str, Any]:
    """The fields every side-effect input shares, for a step of a schedule run (no account)."""
    return {"key": key, "run": call.run, "step": step, "path": path, "event": call.event, "now": call.now, "writes_timeline": True}


def _account_view(doc: dict[str, Any]) -> dict[str, Any]:
    return account_context(AccountDoc.model_validate(doc))[0]


class ScheduleActivities:
    """Reads and effects of `ScheduleRun`, bound to one worker's store and backends."""

    def __init__(self, deps: Deps, email: EmailActivities, webhook: WebhookActivities) -> None:
        self.deps = deps
        self.email = email
        self.webhook = webhook

    # ------------------------------------------------------------------ tick

    @activity.defn(name=names.BEGIN_SCHEDULE_TICK)
    async def begin_schedule_tick(self, input: BeginTickInput) -> ScheduleTick:
        """Freeze the tick: the playbook version, the workspace and the window of `changes`."""

        def work(s: Session) -> ScheduleTick:
            deployment = repo.get_deployment(s, "playbook", input.playbook, input.version)
            if deployment is None:
                raise ApplicationError(
                    f"playbook {input.playbook} is not deployed: run `touchpoint deploy`",
                    type=names.CONFIGURATION_ERROR,
                    non_retryable=True,
                )
            playbook = Playbook.model_validate(deployment.content["playbook"])
            cron = getattr(playbook.trigger, "schedule", None)
            if not cron:
                raise ApplicationError(f"playbook {input.playbook} has no `schedule` trigger", type="Rejected", non_retryable=True)
            workspace = current_workspace(s)
            cursor = repo.get_cursor(s, schedule_cursor_name(input.playbook))
            if cursor is not None and cursor.at is not None and cursor.at < input.tick:
                since = cursor.at
            else:
                since = previous_tick(cron, input.tick, workspace.timezone)
            run_id = tick_run_id(input.playbook, input.tick)
            repo.upsert_run(
                s,
                id=run_id,
                workflow_id=input.workflow_id,
                playbook_id=input.playbook,
                version=deployment.version,
                account_id=None,
                status="running",
                started_at=input.tick,
            )
            return ScheduleTick(run_id=run_id, playbook=playbook, version=deployment.version, workspace=workspace, since=since, tick=input.tick)

        return await self.deps.db(work)

    @activity.defn(name=names.FINISH_SCHEDULE_TICK)
    async def finish_schedule_tick(self, input: FinishTickInput) -> None:
        """Record the outcome and move the playbook's cursor to this tick (never backwards)."""

        def work(s: Session) -> None:
            repo.upsert_run(s, id=input.run_id, status="ended", outcome=input.outcome, ended_at=input.ended_at, vars=input.vars)
            cursor = repo.get_cursor(s, schedule_cursor_name(input.playbook))
            if cursor is None or cursor.at is None or cursor.at < input.tick:
                repo.set_cursor(s, schedule_cursor_name(input.playbook), at=input.tick)

        await self.deps.db(work)

    # ------------------------------------------------------------------ reads

    def _context(self, call: ScheduleCall, *, csm: str | None = None) -> dict[str, Any]:
        """The names of one schedule call; blocking (call it in a thread).

        `changes` loads each event type when a template first asks for it, in a session of its
        own: rendering may happen later and in another thread than this call.
        """
        with self.deps.sessions() as s:
            accounts = [_account_view(doc) for doc in reviews.iter_account_docs(s, csm_email=csm)]

        def load(event_type: str) -> list[Any]:
            with self.deps.sessions() as s:
                rows = reviews.events_in_window(s, event_type, call.since, call.tick, csm_email=csm)
                return [
                    {
                        "id": event.id,
                        "type": event.type,
                        "at": event.at,
                        "data": FreeMap(event.data or {}),
                        "account": _account_view(doc) if doc else None,
                    }
                    for event, doc in rows
                ]

        return build_context(
            account=None,
            event=call.event,
            run=call.run,
            now=call.now,
            tz=call.timezone,
            extra={"accounts": accounts, "changes": changes_root(load)},
        )

    @activity.defn(name=names.EVALUATE_SCHEDULE)
    async def evaluate_schedule(self, input: ScheduleEvalInput) -> list[Any]:
        """Evaluate expressions of a schedule run (`when`, `if`, `set`) over the whole store."""

        def work() -> list[Any]:
            context = self._context(input.call)
            try:
                return [plain(ex.evaluate(expression, context)) for expression in input.expressions]
            except ex.ExpressionError as exc:
                raise ApplicationError(str(exc), type="Rejected", non_retryable=True) from None

        return await asyncio.to_thread(work)

    @activity.defn(name=names.SCHEDULE_RECIPIENTS)
    async def schedule_recipients(self, input: ScheduleRecipientsInput) -> list[ScheduleRecipient]:
        """Who a schedule email goes to: each CSM with a book (`for_each: csm`), or `to:`."""

        def work() -> list[ScheduleRecipient]:
            found: dict[str, ScheduleRecipient] = {}
            with self.deps.sessions() as s:
                if input.for_each == "csm":
                    for email, name in reviews.csms(s):
                        found[email] = ScheduleRecipient(recipient=Recipient(email=email, name=name, role="csm"), csm=email)
                context: dict[str, Any] | None = None
                for target in input.to or []:
                    if is_address(target):
                        addresses: list[Any] = [target]
                    else:
                        context = context or self._context(input.call)
                        value = ex.evaluate(target, context)
                        addresses = list(value) if isinstance(value, (list, tuple)) else [value]
                    for address in addresses:
                        if address and str(address).lower() not in found:
                            found[str(address).lower()] = ScheduleRecipient(recipient=Recipient(email=str(address)))
            return list(found.values())

        try:
            return await asyncio.to_thread(work)
        except ex.ExpressionError as exc:
            raise ApplicationError(str(exc), type="Rejected", non_retryable=True) from None

    # ------------------------------------------------------------------ effects

    @activity.defn(name=names.SEND_SCHEDULE_EMAIL)
    async def send_schedule_email(self, input: ScheduleEmailInput) -> SendEmailResult:
        """Render one recipient's email over their book (or everything) and send it once."""
        call = input.call
        request = SendEmailInput(
            **_effect(call, input.key, input.step, input.path),
            recipient=input.to.recipient,
            template=input.template,
            locales=input.locales,
            sender_email=input.sender_email,
            sender_name=input.sender_name,
            unsubscribe_group=input.unsubscribe_group,
        )

        def read() -> dict[str, Any]:
            return self._context(call, csm=input.to.csm)

        # The context is read on every attempt: a retried send renders what the store holds then,
        # but the ledger makes sure only one of the attempts is ever delivered.
        context = await asyncio.to_thread(read)
        if input.when is not None:
            try:
                wanted = ex.is_true(input.when, context)
            except ex.ExpressionError as exc:
                raise ApplicationError(str(exc), type="Rejected", non_retryable=True) from None
            if not wanted:
                email_outcome(call.run.playbook, input.step, "skipped")
                return SendEmailResult(status="skipped", to=input.to.recipient.email, template=input.template)
        return await self.email.deliver(request, context)

    @activity.defn(name=names.CALL_SCHEDULE_WEBHOOK)
    async def call_schedule_webhook(self, input: ScheduleWebhookInput) -> EffectResult:
        """A webhook step of a schedule run (its templates see `accounts` and `changes`)."""
        call = input.call
        request = WebhookInput(
            **_effect(call, input.key, input.step, input.path),
            url=input.url,
            method=input.method,
            json_body=input.json_body,
            headers=input.headers,
        )

        def read() -> dict[str, Any]:
            return self._context(call)

        return await self.webhook.deliver(request, await asyncio.to_thread(read))
