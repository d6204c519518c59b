"""`sweep_date_triggers`: start date-triggered playbooks whose moment has come, one page at a time.

An hourly Temporal Schedule runs the `DateSweep` workflow, which calls this activity page by page.
Parked accounts cost store rows, never a timer per account and playbook.

**Window.** Per playbook, the cursor ``date-sweep/<playbook>`` holds ``swept_until``. A sweep at
``now`` fires every account whose moment (06:00 local on date value + offset, see
`touchpoint.dsl.sweep_models.trigger_moment`) lies in ``(swept_until, now]``, then moves the cursor
to ``now`` in the same transaction as the last page's fired rows. Before the first sweep of a
playbook, ``swept_until`` is the playbook's first deploy: a moment before it is retroactive and
does not fire. A missed sweep (server down) is covered by the next one, whose window starts at
the cursor. The cursor never moves back (a sweep with an older ``now`` fires nothing new).

**catch_up.** With `catch_up: true` the window also reaches back
``max(|offset|, 1 day)`` before ``now``: an account that arrives (or gets its date) after its
moment has passed still starts, as long as the moment passed less than that long ago. For a
renewal at `-120d` that is any time before the renewal date itself.

**Once per date value.** `date_triggers_fired` holds (account, playbook, date value); a fired row
blocks a second start for that value; a new value (a renewal pushed a year later) fires again
when its own moment comes.

**when.** `trigger.when` is evaluated here with `account`, `contacts`, `now`, `today` and the
`date.reached` event (no `run`). A false `when` records nothing, but the moment has passed: a later
sweep's window no longer holds it, so without `catch_up` the account stays unstarted for that date
value (with `catch_up`, later sweeps within the catch-up reach evaluate `when` again).

**Candidates.** For the expression exactly `account.renewal_date`, the indexed `renewal_date`
column gives the few dates whose moment can lie in the window (±14 h for time zones), minus the
accounts already fired for them (`touchpoint.store.triggers.renewal_candidates`). Any other
expression is evaluated per account over every account, in pages (memory stays bounded; time
grows with the account count).

**Starting.** Each due account's workflow gets a signal-with-start of `start_playbook` with
``StartRequest(id="date:<playbook>:<account>:<date>")``, at most `SIGNAL_CONCURRENCY` at a time;
the fired rows are written after the signals. A retry after a crash re-signals, and the account
workflow drops the repeated id. An account with an active run of the playbook is not started
again (the account workflow's rule), but the date value counts as fired.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import date, datetime
from typing import Any

from sqlalchemy.orm import Session
from temporalio import activity

from activities.deps import Deps
from activities.store import account_doc, current_workspace
from touchpoint.dsl import expressions as ex
from touchpoint.dsl.accounts import AccountDoc
from touchpoint.dsl.durations import format_duration
from touchpoint.dsl.runtime import EventIn, StartRequest, build_context
from touchpoint.dsl.schema import DateTrigger, Playbook
from touchpoint.dsl.sweep_models import (
    SweepInput,
    SweepPage,
    SweepPageResult,
    candidate_dates,
    catch_up_reach,
    sweep_cursor_name,
    trigger_moment,
)
from touchpoint.dsl.timing import as_date
from touchpoint.ingest import start_request
from touchpoint.store import repo, triggers
from workflows import names

SIGNAL_CONCURRENCY = 32
"""Signal-with-starts in flight at once: enough to hide round trips, gentle on the server."""
RENEWAL_EXPR = "account.renewal_date"
_log = logging.getLogger(__name__)

Starter = Callable[[str, StartRequest], Awaitable[None]]
"""Starts a playbook for an account: (account id, request)."""


@dataclass(frozen=True)
class _Plan:
    """One playbook's sweep, as read at the start of a page."""

    playbook: str
    trigger: DateTrigger
    workspace_tz: str
    window_start: datetime
    """Exclusive: the cursor (or the first deploy), earlier with catch_up."""

    def due(self, moment: datetime, now: datetime) -> bool:
        return self.window_start < moment <= now


@dataclass(frozen=True)
class _Due:
    account_id: str
    value: date
    moment: datetime
    tz: str


class SweepActivities:
    """The date sweep over the store; starts runs through the worker's Temporal client."""

    def __init__(self, deps: Deps, *, starter: Starter | None = None) -> None:
        """Bind the activity to a worker's dependencies.

        Args:
            deps: The worker's store and client.
            starter: How to start a playbook for an account (default: signal-with-start of its
                account workflow); the bench passes a counter to time the sweep alone.
        """
        self.deps = deps
        self.start = starter or self._signal_with_start
        self._playbooks: dict[tuple[str, str], Playbook] = {}

    @activity.defn(name=names.SWEEP_DATE_TRIGGERS)
    async def sweep_date_triggers(self, input: SweepInput) -> SweepPageResult:
        """Sweep one page of one date-triggered playbook (module docstring: window and rules)."""
        plans = await asyncio.to_thread(self._plans, input)
        if input.page is not None:
            current = input.page.playbook
        elif input.playbook is not None:
            current = input.playbook
        elif plans:
            current = next(iter(plans))
        else:
            return SweepPageResult()
        plan = plans.get(current)
        if plan is None:  # undeployed (or no longer date-triggered) since the sweep began
            return SweepPageResult(playbook=current, done=True, next=self._after(current, plans, input))
        _heartbeat(current)
        result, due = await asyncio.to_thread(self._scan, plan, input)
        started = await self._start_all(plan, due)
        result.fired = len(started)
        result.skipped = result.due - result.fired
        done = result.next is None
        await self.deps.db(lambda s: self._record(s, plan, started, input.now, done=done))
        if done:
            result.done = True
            result.next = self._after(current, plans, input)
        return result

    # ------------------------------------------------------------------ reading

    def _plans(self, input: SweepInput) -> dict[str, _Plan]:
        """Every deployed date-triggered playbook (or the one asked for), in name order."""
        with self.deps.sessions() as s:
            tz = current_workspace(s).timezone
            plans: dict[str, _Plan] = {}
            for d in repo.current_deployments(s, "playbook"):
                if input.playbook is not None and d.name != input.playbook:
                    continue
                playbook = self._playbook(d.name, d.version, d.content)
                if not isinstance(playbook.trigger, DateTrigger):
                    continue
                cursor = repo.get_cursor(s, sweep_cursor_name(d.name))
                since = cursor.at if cursor is not None and cursor.at is not None else triggers.first_deployed_at(s, d.name)
                since = since or input.now
                start = since
                if playbook.trigger.catch_up:
                    start = min(since, input.now - catch_up_reach(playbook.trigger.offset))
                plans[d.name] = _Plan(d.name, playbook.trigger, tz, start)
        return plans

    def _playbook(self, name: str, version: str, content: dict[str, Any]) -> Playbook:
        key = (name, version)
        if key not in self._playbooks:
            self._playbooks[key] = Playbook.model_validate(content["playbook"])
        return self._playbooks[key]

    def _scan(self, plan: _Plan, input: SweepInput) -> tuple[SweepPageResult, list[tuple[_Due, AccountDoc]]]:
        """Read one page of candidates and decide which are due (and pass `when`)."""
        page = input.page or SweepPage(playbook=plan.playbook)
        result = SweepPageResult(playbook=plan.playbook, window_start=plan.window_start)
        due: list[_Due] = []
        with self.deps.sessions() as s:
            if plan.trigger.date.strip() == RENEWAL_EXPR:
                first, last = candidate_dates(plan.window_start, input.now, plan.trigger.offset)
                after = (page.after_date, page.after_id) if page.after_date and page.after_id else None
                rows = triggers.renewal_candidates(s, plan.playbook, first, last, after=after, limit=input.limit)
                for row in rows:
                    assert row.renewal_date is not None  # the range excludes NULL
                    tz = row.timezone or plan.workspace_tz
                    moment = _moment(row.renewal_date, plan, tz)
                    if moment is not None and plan.due(moment, input.now):
                        due.append(_Due(row.id, row.renewal_date, moment, tz))
                result.scanned = len(rows)
                if len(rows) == input.limit:
                    result.next = SweepPage(playbook=plan.playbook, after_date=rows[-1].renewal_date, after_id=rows[-1].id)
                docs = repo.get_accounts(s, [d.account_id for d in due])
                accounts = {d.account_id: _account(*docs[d.account_id]) for d in due if d.account_id in docs}
            else:
                page_rows = repo.list_accounts(s, after=page.after_id, limit=input.limit)
                accounts = {}
                for doc, contacts in page_rows:
                    account = _account(doc, contacts)
                    if account is None:
                        continue
                    tz = account.timezone or plan.workspace_tz
                    value = _date_value(plan, account, input.now, tz)
                    moment = _moment(value, plan, tz) if value is not None else None
                    if value is not None and moment is not None and plan.due(moment, input.now):
                        due.append(_Due(account.id, value, moment, tz))
                        accounts[account.id] = account
                fired = triggers.fired_values(s, plan.playbook, [d.account_id for d in due])
                due = [d for d in due if (d.account_id, d.value) not in fired]
                result.scanned = len(page_rows)
                if len(page_rows) == input.limit:
                    result.next = SweepPage(playbook=plan.playbook, after_id=str(page_rows[-1][0]["id"]))
        result.due = len(due)
        passing = [(d, a) for d in due if (a := accounts.get(d.account_id)) is not None and self._when(plan, d, a, input.now)]
        return result, passing

    def _when(self, plan: _Plan, due: _Due, account: AccountDoc, now: datetime) -> bool:
        context = build_context(account=account, event=_event(plan, due), run=None, now=now, tz=due.tz)
        try:
            return ex.is_true(plan.trigger.when, context)
        except ex.ExpressionError as exc:
            _warn("date trigger of %s for account %s: %s", plan.playbook, account.id, exc)
            return False

    # ------------------------------------------------------------------ starting and recording

    async def _start_all(self, plan: _Plan, due: list[tuple[_Due, AccountDoc]]) -> list[_Due]:
        """Start every due account, a bounded number at a time; returns those started."""
        gate = asyncio.Semaphore(SIGNAL_CONCURRENCY)

        async def one(item: _Due) -> _Due:
            request = StartRequest(playbook=plan.playbook, by="date", id=_request_id(plan.playbook, item), event=_event(plan, item))
            async with gate:
                await self.start(item.account_id, request)
            _heartbeat(plan.playbook)
            return item

        # A failed signal fails the page (Temporal retries it); the ones that went through are
        # re-signalled then, and their account workflows drop the repeated request id.
        return list(await asyncio.gather(*(one(item) for item, _ in due)))

    async def _signal_with_start(self, account_id: str, request: StartRequest) -> None:
        # The queue this activity runs on: account workflows live on the sweep's worker queue.
        await start_request(self.deps.client, activity.info().task_queue, account_id, request)

    @staticmethod
    def _record(s: Session, plan: _Plan, started: list[_Due], now: datetime, *, done: bool) -> None:
        for item in started:
            repo.mark_date_trigger_fired(s, item.account_id, plan.playbook, item.value)
        if done:
            name = sweep_cursor_name(plan.playbook)
            cursor = repo.get_cursor(s, name)
            previous = cursor.at if cursor is not None else None
            repo.set_cursor(s, name, at=max(now, previous) if previous else now)

    @staticmethod
    def _after(current: str, plans: dict[str, _Plan], input: SweepInput) -> SweepPage | None:
        """The first page of the next playbook when sweeping them all, else None."""
        if input.playbook is not None:
            return None
        later = sorted(name for name in plans if name > current)
        return SweepPage(playbook=later[0]) if later else None


# ---------------------------------------------------------------------------- helpers


def _account(doc: dict[str, Any], contacts: list[dict[str, Any]]) -> AccountDoc | None:
    try:
        return account_doc(doc, contacts)
    except ValueError as exc:  # a stored document from an older schema: skip it, loudly
        _warn("account %s cannot be read: %s", doc.get("id"), exc)
        return None


def _date_value(plan: _Plan, account: AccountDoc, now: datetime, tz: str) -> date | None:
    """The trigger's date expression for one account, as a date (None when it has no value)."""
    context = build_context(account=account, event=None, run=None, now=now, tz=tz)
    try:
        value = ex.evaluate(plan.trigger.date, context)
    except ex.ExpressionError as exc:
        _warn("date trigger of %s for account %s: %s", plan.playbook, account.id, exc)
        return None
    return as_date(value, tz)


def _moment(value: date, plan: _Plan, tz: str) -> datetime | None:
    try:
        return trigger_moment(value, plan.trigger.offset, tz)
    except (ValueError, OverflowError, KeyError):  # an unknown zone, or a date near year 1 or 9999
        return None


def _request_id(playbook: str, item: _Due) -> str:
    return f"date:{playbook}:{item.account_id}:{item.value.isoformat()}"


def _event(plan: _Plan, item: _Due) -> EventIn:
    return EventIn(
        id=_request_id(plan.playbook, item),
        type="date.reached",
        account_id=item.account_id,
        at=item.moment,
        data={"playbook": plan.playbook, "date": item.value.isoformat(), "offset": format_duration(plan.trigger.offset)},
    )


def _heartbeat(*details: Any) -> None:
    # The bench calls the activity as a plain coroutine, outside any activity context.
    if activity.in_activity():
        activity.heartbeat(*details)


def _warn(message: str, *args: Any) -> None:
    (activity.logger if activity.in_activity() else _log).warning(message, *args)
