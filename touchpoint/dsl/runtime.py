"""Data passed between the API, workflows and activities: events, run inputs, activity I/O.

Plain pydantic models, passed through the workflow sandbox with the rest of `touchpoint.dsl`.
`build_context` turns them into what expressions and templates see (contract section 2), the
same way in workflow code (conditions) and in activities (templates).
"""

from __future__ import annotations

from datetime import date, datetime, timedelta
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from touchpoint.dsl.sandbox import Day, FreeMap
from touchpoint.dsl.schema import AccountDoc, Playbook, Workspace


class Data(BaseModel):
    """Base for runtime messages: strict, but not frozen (workflows build them step by step)."""

    model_config = ConfigDict(extra="forbid")


class EventIn(Data):
    """One event about an account (contract section 9)."""

    id: str | None = None
    type: str
    account_id: str | None = None
    at: datetime | None = None
    data: dict[str, Any] = Field(default_factory=dict)


class Recipient(Data):
    """Who an email goes to, with what decides their language and send window."""

    email: str
    name: str | None = None
    role: str | None = None
    locale: str | None = None
    timezone: str | None = None
    country: str | None = None


class RunView(Data):
    """`run` as expressions see it."""

    id: str
    playbook: str
    version: str
    started_at: datetime
    day: int = 0
    round: int = 1
    step: str | None = None
    vars: dict[str, Any] = Field(default_factory=dict)
    scorecard: dict[str, Any] | None = None


class RunInput(Data):
    """Everything a `PlaybookRun` needs, frozen at enrollment."""

    run_id: str
    playbook: Playbook
    version: str
    account: AccountDoc | None = None
    workspace: Workspace = Field(default_factory=Workspace)
    event: EventIn = Field(default_factory=lambda: EventIn(type="manual"))
    clock_offset: float = 0.0
    """Seconds added to Temporal's clock: simulations start in the past or the future."""
    account_workflow_id: str | None = None
    simulation: bool = False
    projected: bool = False
    """Started by the account workflow's store step (`apply_event_v3`, `prepare_starts`), which
    wrote the run's row: no projection at start, and the end projection reports the end to the
    account workflow (`ProjectRunInput.notify`, when ``report_end``) instead of a signal command."""
    report_end: bool = True
    """Whether a projected run's end projection signals `run_ended` to the account workflow;
    `AccountWorkflowV2` learns of ends from the store instead."""
    state: Any = None
    """The run's state (`touchpoint.engine.state.RunState`, as JSON) when it continues as new."""


class StepRecord(Data):
    """One line of a run's timeline."""

    at: datetime
    day: int
    step: str
    action: str
    detail: dict[str, Any] = Field(default_factory=dict)


class RunStatus(Data):
    """What `touchpoint status` and `GET /runs` show for a run."""

    id: str
    workflow_id: str = ""
    playbook: str
    version: str
    account_id: str | None
    status: Literal["running", "paused", "ended"]
    step: str | None = None
    outcome: str | None = None
    because: str | None = None
    paused_reason: str | None = None
    started_at: datetime
    vars: dict[str, Any] = Field(default_factory=dict)
    scorecard: dict[str, Any] | None = None
    waiting: list[dict[str, Any]] = Field(default_factory=list)
    """What the run waits for: ``{step, kind, until, detail}`` per thread (`RunState` waits)."""
    history: list[StepRecord] = Field(default_factory=list)


class RunResult(Data):
    """How a run ended, with its timeline."""

    run_id: str
    outcome: str
    because: str | None = None
    started_at: datetime | None = None
    ended_at: datetime | None = None
    history: list[StepRecord] = Field(default_factory=list)
    vars: dict[str, Any] = Field(default_factory=dict)
    scorecard: dict[str, Any] | None = None


# ---------------------------------------------------------------------------- activity I/O


class EffectInput(Data):
    """What every side-effect activity gets: the ledger key, who/where, and the render context."""

    key: str
    run: RunView
    step: str
    path: str
    account: AccountDoc | None = None
    event: EventIn
    now: datetime
    simulation: bool = False


class SendEmailInput(EffectInput):
    recipient: Recipient
    template: str
    locales: list[str] = Field(default_factory=list)
    cc: list[str] = Field(default_factory=list)
    sender_email: str
    sender_name: str | None = None
    categories: list[str] = Field(default_factory=list)
    unsubscribe_group: int | None = None
    extra_context: dict[str, Any] = Field(default_factory=dict)


class SendEmailResult(Data):
    status: Literal["sent", "suppressed", "failed", "uncertain", "skipped"]
    to: str
    message_id: str | None = None
    subject: str | None = None
    template: str | None = None
    locale: str | None = None
    error: str | None = None


class ReserveSlotInput(Data):
    key: str
    contact_email: str
    desired_at: datetime
    emails: int
    per: timedelta


class TaskInput(EffectInput):
    title: str
    notes: str | None = None
    owner: str = "csm"
    fallback_owner: str | None = None
    due_at: datetime | None = None
    priority: str | None = None


class TaskResult(Data):
    task_id: str
    title: str
    owner: str
    due_at: datetime | None = None
    owner_note: str | None = None


class NoteInput(EffectInput):
    text: str


class UpdateInput(EffectInput):
    fields: dict[str, Any]
    crm_fields: dict[str, str] = Field(default_factory=dict)


class WebhookInput(EffectInput):
    url: str
    method: str = "POST"
    json_body: Any = None
    headers: dict[str, str] = Field(default_factory=dict)


class EffectResult(Data):
    """Result of a note, update or webhook step, for the timeline."""

    detail: dict[str, Any] = Field(default_factory=dict)


class ProjectRunInput(Data):
    """The run's row in the store's projection (status, step, vars, scorecard, outcome)."""

    run_id: str
    workflow_id: str
    playbook: str
    version: str
    account_id: str | None
    status: Literal["running", "paused", "ended"]
    step: str | None = None
    outcome: str | None = None
    started_at: datetime
    ended_at: datetime | None = None
    vars: dict[str, Any] = Field(default_factory=dict)
    scorecard: dict[str, Any] | None = None
    paused_reason: str | None = None
    records: list[StepRecord] = Field(default_factory=list)
    notify: str | None = None
    """An account workflow id: once the row is written, signal it `run_ended` (an ended run)."""


# ---------------------------------------------------------------------------- expression context


def _free(value: Any) -> Any:
    return FreeMap(value) if isinstance(value, dict) else FreeMap()


def _dateish(value: Any) -> Any:
    if isinstance(value, datetime):
        return value
    if isinstance(value, date):
        return Day.of(value)
    if isinstance(value, str) and len(value) == 10 and value[4] == "-" and value[7] == "-":
        try:
            return Day.of(date.fromisoformat(value))
        except ValueError:
            return value
    return value


def account_context(account: AccountDoc | None) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """`account` and `contacts` as expressions see them."""
    if account is None:
        return {}, []
    doc = account.model_dump(mode="python")
    contacts = doc.pop("contacts")
    doc["metrics"] = _free(doc.get("metrics"))
    doc["properties"] = FreeMap({k: _dateish(v) for k, v in (doc.get("properties") or {}).items()})
    for key in ("created_at", "renewal_date"):
        doc[key] = _dateish(doc.get(key))
    doc["csm"] = doc.get("csm") or {"name": None, "email": None}
    doc["owner"] = doc.get("owner") or {"name": None, "email": None}
    doc["contacts"] = contacts
    return doc, contacts


def event_context(event: EventIn) -> dict[str, Any]:
    """`event` as expressions see it."""
    return {"id": event.id, "type": event.type, "at": event.at, "data": _free(event.data)}


def run_context(run: RunView) -> dict[str, Any]:
    """`run` as expressions see it."""
    view = run.model_dump(mode="python")
    view["vars"] = _free(run.vars)
    card = dict(run.scorecard or {})
    card["milestones"] = _free(card.get("milestones"))
    view["scorecard"] = card
    return view


def build_context(
    *,
    account: AccountDoc | None,
    event: EventIn | None,
    run: RunView | None,
    now: datetime,
    tz: str,
    extra: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """The names of contract section 2 for one evaluation."""
    from touchpoint.dsl.timing import zone

    account_view, contacts = account_context(account)
    context: dict[str, Any] = {
        "now": now,
        "today": Day.of(now.astimezone(zone(tz))),
    }
    if account is not None:
        context["account"] = account_view
        context["contacts"] = contacts
    if event is not None:
        context["event"] = event_context(event)
    if run is not None:
        context["run"] = run_context(run)
    if extra:
        context.update(extra)
    return context


def plain(value: Any) -> Any:
    """A JSON-friendly copy of an evaluated value (for `run.vars` and the timeline)."""
    if isinstance(value, dict):
        return {str(k): plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [plain(v) for v in value]
    if isinstance(value, (datetime, date)):
        return value.isoformat()
    if value is None or isinstance(value, (str, int, float, bool)):
        return value
    return str(value)


# ---------------------------------------------------------------------------- accounts


class TriggerEntry(Data):
    """One deployed playbook, as the account workflow needs it to decide enrollments."""

    playbook: str
    version: str
    kind: str
    event: str | None = None
    when: str | None = None
    reenroll: str = "never"


class DeployedIndex(Data):
    """The deployed playbooks' triggers and the workspace, at one deploy generation."""

    generation: str
    triggers: list[TriggerEntry] = Field(default_factory=list)
    workspace: Workspace = Field(default_factory=Workspace)


class Envelope(Data):
    """What the API sends an account workflow: an event, or an account upsert (with its doc)."""

    event: EventIn
    account: AccountDoc | None = None
    generation: str | None = None


class StartRequest(Data):
    """Start a playbook for the account now (CLI, API, or a `start` step)."""

    playbook: str
    by: str | None = None
    event: EventIn | None = None
    id: str | None = None
    """A repeated id is a no-op (a sweep that retries after signalling starts nothing twice)."""


class ActiveRun(Data):
    run_id: str
    workflow_id: str
    version: str
    started_at: datetime


class AccountState(Data):
    """Compact state carried across continue-as-new."""

    account_id: str
    account: AccountDoc | None = None
    active: dict[str, ActiveRun] = Field(default_factory=dict)
    last_started: dict[str, datetime] = Field(default_factory=dict)
    seen_ids: list[str] = Field(default_factory=list)
    index: DeployedIndex | None = None
    pending: list[Envelope] = Field(default_factory=list)
    starts: list[StartRequest] = Field(default_factory=list)
    applied: int = 0
    """Events applied so far: with the run id, the token of each apply step."""
    ended_early: list[str] = Field(default_factory=list)
    """Runs whose end was reported before the workflow recorded their start (a run started by a
    local activity can end, and signal, before that activity's result is handled)."""


class LoadPlaybookInput(Data):
    playbook: str
    version: str | None = None


class LoadedPlaybookVersion(Data):
    playbook: Playbook
    version: str
    workspace: Workspace


class PlannedStart(Data):
    """A run the account workflow is about to start: its ids are chosen before the store step."""

    playbook: str
    run_id: str
    workflow_id: str
    started_at: datetime
    event: EventIn
    """What starts it (the triggering event, or a manual start)."""
    account_workflow_id: str
    after_run: str | None = None
    """Start it only if this earlier run of the playbook has ended in the store (an account
    workflow that does not hear of ends still holds that run as active)."""
    report_end: bool = True
    """Whether the run signals `run_ended` to the account workflow (`RunInput.report_end`)."""


class ApplyEventInput(Data):
    """Project an event, the events it derived, and the account snapshot into the store."""

    account: AccountDoc | None
    event: EventIn
    derived: list[EventIn] = Field(default_factory=list)
    token: str | None = None
    """The account workflow's step (run id and apply counter): the same on a task retry."""
    starts: list[PlannedStart] = Field(default_factory=list)
    """`apply_event_v3`: the runs the event starts, loaded and projected in the same transaction."""
    active: list[str] = Field(default_factory=list)
    """Run ids the account workflow holds as active: the result says which have ended."""


class ApplyResult(Data):
    """What `apply_event_v2` did: ``accepted`` False for an old duplicate id; ``earlier`` holds
    the derived events when this very step applied the event before (a retried workflow task)."""

    accepted: bool
    earlier: list[EventIn] | None = None
    started: dict[str, str] = Field(default_factory=dict)
    """`apply_event_v3`: the version each planned run started with, by playbook id. A playbook
    that is not deployed, or whose earlier run still runs, is missing."""
    ended: list[str] = Field(default_factory=list)
    """Of the ``active`` run ids asked about, those whose rows have ended."""
    blocked: list[str] = Field(default_factory=list)
    """Planned run ids not started because their `PlannedStart.after_run` still runs."""


class LoadContextInput(Data):
    """What a fresh (or redeployed) account workflow needs from the store before an event."""

    generation: str | None = None
    index: bool = False
    account_id: str | None = None
    """Set to read the stored account (None: the workflow already holds it)."""


class LoadedContext(Data):
    index: DeployedIndex | None = None
    account: AccountDoc | None = None


class PrepareStartsInput(Data):
    account_id: str
    account: AccountDoc
    starts: list[PlannedStart]


def initial_scorecard(playbook: Playbook) -> dict[str, Any] | None:
    """A run's scorecard before anything happened (None when the playbook has none)."""
    card = playbook.scorecard
    if card is None:
        return None
    return {
        "score": 0,
        "target": card.target.score,
        "by_day": card.target.by_day,
        "met": False,
        "milestones": {m.id: {"done": False, "day": None} for m in card.milestones},
    }


def segment_of(account: AccountDoc, workspace: Workspace, now: datetime) -> str | None:
    """The first `segments` rule of the workspace that holds for the account (section 7)."""
    from touchpoint.dsl import expressions as ex

    context = build_context(account=account, event=None, run=None, now=now, tz=workspace.timezone)
    for name, rule in workspace.segments.items():
        try:
            if ex.is_true(rule, context):
                return name
        except ex.ExpressionError:
            continue  # a rule that cannot be evaluated for this account does not match it
    return None
