"""Data passed between the API, workflows and activities: events, run inputs, activity I/O.

Plain pydantic models, passed through the workflow sandbox with the rest of `touchpoint.dsl`.
`build_context` turns them into what expressions and templates see (contract section 2), the
same way in workflow code (conditions) and in activities (templates).
"""

from __future__ import annotations

from datetime import date, datetime, timedelta
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from touchpoint.dsl.accounts import AccountDoc
from touchpoint.dsl.sandbox import Day, FreeMap
from touchpoint.dsl.schema import Playbook
from touchpoint.dsl.workspace import Workspace


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


class StepRecord(Data):
    """One line of a run's timeline (``seq``: its number in the run's timeline, from 1)."""

    at: datetime
    day: int
    step: str
    action: str
    detail: dict[str, Any] = Field(default_factory=dict)
    seq: int = 0


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
    held_out: bool = False
    enrolled_until: datetime | None = None
    variant: str | None = None
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


class RunProjection(Data):
    """Where a run stands, for the store's `runs` row, and its new timeline lines."""

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
    waiting: list[dict[str, Any]] = Field(default_factory=list)
    held_out: bool = False
    enrolled_until: datetime | None = None
    variant: str | None = None
    position: int = 0
    asked_approval: bool = False
    """The run has asked for an approval (`RunState.asked_approval`): when it ends, the store
    closes the requests it left pending; a run that never asked costs no statement for that."""
    records: list[StepRecord] = Field(default_factory=list)
    events: list[EventIn] = Field(default_factory=list)
    """The run's engine events (`run.started`, `run.ended`, `email.sent`) that no playbook of the
    account listens to: recorded in the account's event log with the projection, no store step."""


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
    writes_timeline: bool = False
    """The activity writes the run's timeline line itself (schedule runs); account-hosted runs
    project their timeline from the interpreter instead."""
    projections: list[RunProjection] = Field(default_factory=list)
    """Where the account's runs stand, written by the activity before its own work: the store
    step of an activation that starts an effect rides on that effect (no local activity)."""


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
    approval_id: str | None = None
    """The approval this email went through: without an edit, what it rendered is sent."""
    edit_subject: str | None = None
    """The approver's subject (template source), rendered for this recipient instead of the template's."""
    edit_html: str | None = None
    """The approver's HTML (template source); the text part is then made from it."""


class ApprovalRecipient(Data):
    """One recipient of an approval request: who, the send's ledger key, the locales to render in."""

    recipient: Recipient
    key: str
    locales: list[str] = Field(default_factory=list)


class ApprovalInput(SendEmailInput):
    """Render each recipient's email and hold it for a person (`request_approval`).

    The `SendEmailInput` fields are the first recipient's; ``key`` is the request's own ledger key.
    """

    approval_id: str
    approver: str
    approver_spec: str = "csm"
    """`by` as written (csm, owner, an address): the approver's CRM task is assigned from it."""
    fallback_owner: str | None = None
    expires_at: datetime
    on_timeout: Literal["send", "skip"] = "skip"
    recipients: list[ApprovalRecipient] = Field(default_factory=list)

    def send_inputs(self) -> list[SendEmailInput]:
        """Each recipient's email as the send would render it."""
        base = {name: getattr(self, name) for name in SendEmailInput.model_fields}
        return [SendEmailInput(**{**base, "recipient": r.recipient, "key": r.key, "locales": r.locales}) for r in self.recipients]


class ApprovalResult(Data):
    """An approval request, stored and its approver told."""

    approval_id: str
    approver: str
    task_id: str | None = None
    to: list[str] = Field(default_factory=list)


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


class DraftInput(EffectInput):
    """Render a `draft` step's prompt and ask the AI backend for a text (`draft_text`).

    With ``use_model`` false the backend is not asked: the text is the rendered fallback (else
    the rendered prompt), and ``note`` says why (the model refused, answered nothing, failed).
    """

    prompt: str
    into: str
    fallback: str | None = None
    max_words: int = 400
    use_model: bool = True
    note: str | None = None


class DraftResult(Data):
    """A draft and what made it: kept in `run.vars.<into>`, and on the run's timeline."""

    text: str
    backend: str
    """`openai`, `anthropic` or `none`."""
    source: Literal["model", "fallback", "prompt"]
    """Who wrote the text: the model, the fallback template, or the prompt itself."""
    prompt: str
    """The rendered prompt (what was, or would have been, sent)."""
    model: str | None = None
    input_tokens: int | None = None
    output_tokens: int | None = None
    words: int = 0
    note: str | None = None
    """Why the text is not the model's (a refusal, an empty answer, a failure after retries)."""


class EffectResult(Data):
    """Result of a note, update or webhook step, for the timeline."""

    detail: dict[str, Any] = Field(default_factory=dict)


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


_last_account: tuple[AccountDoc, dict[str, Any], list[dict[str, Any]]] | None = None


def account_context(account: AccountDoc | None) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """`account` and `contacts` as expressions see them.

    An account document is frozen, and a run evaluates many expressions against the same one:
    the view of the last account asked for is kept (its nested values are shared between
    evaluations, which the sandbox never lets modify them).
    """
    global _last_account
    if account is None:
        return {}, []
    last = _last_account
    if last is not None and last[0] is account:
        return dict(last[1]), last[2]
    doc, contacts = _account_view(account)
    _last_account = (account, doc, contacts)
    return dict(doc), contacts


def _account_view(account: AccountDoc) -> tuple[dict[str, Any], list[dict[str, Any]]]:
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
    return run_values(
        id=run.id, playbook=run.playbook, version=run.version, started_at=run.started_at,
        day=run.day, round=run.round, step=run.step, vars=run.vars, scorecard=run.scorecard,
    )


def run_values(
    *,
    id: str,
    playbook: str,
    version: str,
    started_at: datetime,
    day: int,
    round: int,
    step: str | None,
    vars: dict[str, Any],
    scorecard: dict[str, Any] | None,
) -> dict[str, Any]:
    """`run` as expressions see it, from its values (the interpreter builds no `RunView` for a
    condition). Nested values are shared with the run: the sandbox never modifies them."""
    card = dict(scorecard or {})
    card["milestones"] = _free(card.get("milestones"))
    return {
        "id": id, "playbook": playbook, "version": version, "started_at": started_at, "day": day,
        "round": round, "step": step, "vars": _free(vars), "scorecard": card,
    }


def build_context(
    *,
    account: AccountDoc | None,
    event: EventIn | None,
    run: RunView | None,
    now: datetime,
    tz: str,
    extra: dict[str, Any] | None = None,
    names: frozenset[str] | None = None,
) -> dict[str, Any]:
    """The names of contract section 2 for one evaluation.

    With ``names`` (what an expression reads, `expressions.root_names`) `account`, `contacts`,
    `event` and `run` are built only when named: the expression sees the same values.
    """
    from touchpoint.dsl.timing import zone

    context: dict[str, Any] = {
        "now": now,
        "today": Day.of(now.astimezone(zone(tz))),
    }
    if account is not None and (names is None or "account" in names or "contacts" in names):
        context["account"], context["contacts"] = account_context(account)
    if event is not None and (names is None or "event" in names):
        context["event"] = event_context(event)
    if run is not None and (names is None or "run" in names):
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


class StartRequest(Data):
    """Start a playbook for the account now (CLI, API, or a `start` step)."""

    playbook: str
    by: str | None = None
    event: EventIn | None = None
    id: str | None = None
    """A repeated id is a no-op (a sweep that retries after signalling starts nothing twice)."""
    run_id: str | None = None
    """The new run's id, for a caller that must know it before the run starts (else chosen by
    the account workflow)."""



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
