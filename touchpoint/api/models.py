"""The API's request and response bodies: what the OpenAPI document promises, exactly.

A request the document calls valid is accepted (or answers 404/409 about state); one it calls
invalid is refused with 422 (400 for a webhook batch). So every constraint the server checks is
written into the schema: text patterns use explicit character classes (Python's, ECMAScript's
and pydantic's ``\\s`` differ), time zones are an enum, timestamps must be RFC 3339 strings
(``at: 0`` is refused), numbers are finite and bounded.
"""

from __future__ import annotations

import re
from datetime import date, datetime
from functools import lru_cache
from typing import Annotated, Any, Literal
from zoneinfo import available_timezones

from pydantic import AfterValidator, BaseModel, BeforeValidator, ConfigDict, Field, WithJsonSchema

from touchpoint.dsl.schema import EVENT_TYPE_RE
from touchpoint.engine.migrate import Move

# Every character any of Python, ECMAScript or Unicode calls white space.
_SPACE = "\\t\\n\\x0b\\x0c\\r\\x1c-\\x1f \\x85\\xa0\\u1680\\u2000-\\u200a\\u2028\\u2029\\u202f\\u205f\\u3000\\ufeff"
ID_PATTERN = f"^[^/{_SPACE}]+$"
"""An account id: no `/` (it is a path segment) and no white space."""
_EMAIL_PART = f"[^@{_SPACE}]+"
EMAIL_PATTERN = f"^{_EMAIL_PART}@{_EMAIL_PART}\\.{_EMAIL_PART}$"
NOT_BLANK_PATTERN = f"[^{_SPACE}]"
"""Holds at least one character that is not white space."""
PLAYBOOK_PATTERN = "^[a-z0-9][a-z0-9-]*$"
MAX_INT = 2**53
"""Whole numbers a JSON client (and the store) keep exactly."""

_RFC3339 = re.compile(r"\d{4}-\d\d-\d\d[Tt ]\d\d:\d\d:\d\d(\.\d{1,9})?([Zz]|[+-]\d\d:\d\d)")
_DATE = re.compile(r"\d{4}-\d\d-\d\d")


def _timestamp_text(value: Any) -> Any:
    if isinstance(value, datetime):
        return value
    if not isinstance(value, str) or not _RFC3339.fullmatch(value):
        raise ValueError("expected an RFC 3339 / ISO 8601 date-time with its offset, e.g. 2026-03-01T09:30:00Z")
    return value


def _date_text(value: Any) -> Any:
    if isinstance(value, date):
        return value
    if not isinstance(value, str) or not _DATE.fullmatch(value):
        raise ValueError("expected an ISO 8601 date, e.g. 2026-03-01")
    return value


Timestamp = Annotated[datetime, BeforeValidator(_timestamp_text), WithJsonSchema({"type": "string", "format": "date-time"})]
"""A date-time written as an RFC 3339 string with its offset (numbers are refused)."""
Day = Annotated[date, BeforeValidator(_date_text), WithJsonSchema({"type": "string", "format": "date"})]
def _whole(value: Any) -> Any:
    # JSON Schema counts 3.0 as an integer; Python's JSON reads it as a float.
    return int(value) if isinstance(value, float) and value.is_integer() and abs(value) <= MAX_INT else value


Count = Annotated[int, Field(strict=True, ge=0, le=MAX_INT), BeforeValidator(_whole)]
"""A whole JSON number from 0 to 2**53 (``3.0`` is one, ``true`` and ``"3"`` are not)."""
Number = Annotated[float, Field(strict=True, allow_inf_nan=False, ge=-1e15, le=1e15)]
"""A finite JSON number (``true`` is not one)."""
Text = Annotated[str, Field(max_length=10_000)]
Email = Annotated[str, Field(pattern=EMAIL_PATTERN, max_length=320)]


@lru_cache(maxsize=1)
def _zones() -> list[str]:
    return sorted(available_timezones())


def _zone_schema(schema: dict[str, Any]) -> None:
    schema["enum"] = _zones()


def _check_zone(value: str) -> str:
    if value not in _zones():
        raise ValueError(f"unknown time zone {value!r}: use an IANA name like 'America/New_York'")
    return value


Zone = Annotated[str, AfterValidator(_check_zone), Field(json_schema_extra=_zone_schema)]
"""An IANA time zone name (the document lists them)."""


class Strict(BaseModel):
    """A request body: unknown keys are refused."""

    model_config = ConfigDict(extra="forbid")


class ErrorItem(BaseModel):
    """One reason a request was refused."""

    loc: list[str | int] = Field(description="Where: `body`, `path`, `query` or `header`, then the field's path.")
    msg: str
    type: str


class ErrorBody(BaseModel):
    """Every 4xx (and 503) answer: a sentence, and the reasons field by field when there are several."""

    detail: str
    errors: list[ErrorItem] = Field(default_factory=list)


class RunInFlight(ErrorBody):
    """`POST /runs` 409: a run of the playbook is in flight for the account (one at a time)."""

    run_id: str | None = None
    status: str | None = None


class Accepted(BaseModel):
    """The event is durable in Temporal; its effects follow asynchronously."""

    id: str
    status: Literal["accepted"] = "accepted"


class RunStarted(BaseModel):
    """`POST /runs`: the new run."""

    run_id: str


class TaskCompleted(BaseModel):
    """A task marked done."""

    id: str
    status: Literal["completed"] = "completed"


class EventBody(Strict):
    """`POST /events`: one event about an account."""

    type: Annotated[str, Field(pattern=EVENT_TYPE_RE, max_length=100)]
    account_id: Annotated[str, Field(min_length=1, max_length=200, pattern=ID_PATTERN)]
    at: Timestamp | None = None
    data: dict[str, Any] = Field(default_factory=dict)
    id: Annotated[str, Field(min_length=1, max_length=200, pattern=NOT_BLANK_PATTERN)] | None = None


MAX_BATCH = 1000
"""Events one `POST /events` batch may hold."""


class EventResult(BaseModel):
    """What became of one event of a batch, in the batch's order."""

    id: str | None = Field(description="The event's id (given, or made when accepted); null for a rejected event without a usable id.")
    status: Literal["accepted", "rejected"]
    reason: str | None = Field(default=None, description="Why it was rejected: the field and what was expected, or what to retry.")


class EventView(BaseModel):
    """One recorded event of an account (`GET /events`)."""

    id: str
    account_id: str
    type: str
    at: datetime
    data: dict[str, Any]
    received_at: datetime


class StartBody(Strict):
    """`POST /runs`: start a deployed playbook for an account."""

    playbook: Annotated[str, Field(pattern=PLAYBOOK_PATTERN, max_length=100)]
    account_id: Annotated[str, Field(min_length=1, max_length=200, pattern=ID_PATTERN)]


class MigrateBody(Strict):
    """`POST /playbooks/{id}/migrate`: the options of `touchpoint migrate` (contract section 13)."""

    to: Annotated[str, Field(min_length=1, max_length=100, pattern="^[A-Za-z0-9._-]+$")] = "latest"
    """`latest` (the current version) or a version id as `deploy` prints it."""
    account_id: Annotated[str | None, Field(min_length=1, max_length=200, pattern=ID_PATTERN)] = None
    dry_run: bool = False


class MigrationReport(BaseModel):
    """What a migration did (or, dry, would do)."""

    playbook: str
    to_version: str
    dry_run: bool
    moved: int
    stayed: int
    runs: list[Move]
    """Every run found in flight on another version: where it stood, where it stands now (or
    would), or why it stays."""


class PersonBody(Strict):
    name: Text | None = None
    email: Email | None = None


class SeatsBody(Strict):
    licensed: Count = 0
    active: Count = 0


class HealthBody(Strict):
    score: Number | None = None
    tier: Text | None = None
    previous_score: Number | None = None
    previous_tier: Text | None = None
    updated_at: Timestamp | None = None


class ContactBody(Strict):
    email: Email
    name: Text | None = None
    role: Text | None = None
    locale: Text | None = None
    timezone: Zone | None = None
    country: Text | None = None


class AccountBody(Strict):
    """`PUT /accounts/{id}`: an account document (contract section 9); `id` defaults to the path's."""

    id: Annotated[str, Field(min_length=1, max_length=200, pattern=ID_PATTERN)] | None = None
    name: Annotated[str, Field(min_length=1, max_length=1000)]
    segment: Text | None = None
    region: Text | None = None
    country: Text | None = None
    timezone: Zone | None = None
    locale: Annotated[str, Field(min_length=1, max_length=100)] = "en"
    plan: Text | None = None
    arr: Number = 0
    created_at: Day | None = None
    renewal_date: Day | None = None
    seats: SeatsBody = Field(default_factory=SeatsBody)
    csm: PersonBody | None = None
    owner: PersonBody | None = None
    health: HealthBody = Field(default_factory=HealthBody)
    contacts: Annotated[list[ContactBody], Field(max_length=1000)] = Field(default_factory=list)
    metrics: dict[str, Number] = Field(default_factory=dict)
    properties: dict[str, Any] = Field(default_factory=dict)


class AccountView(BaseModel):
    """`GET /accounts/{id}`: the stored document with its contacts (more keys may follow)."""

    model_config = ConfigDict(extra="allow")

    id: str
    name: str
    contacts: list[dict[str, Any]] = Field(default_factory=list)


class Waiting(BaseModel):
    """What a run waits for: a time, an event, a task, an email's window or cap, a resume."""

    step: str | None = None
    kind: str
    until: datetime | None = None
    detail: str | None = None


class RunView(BaseModel):
    """One run in `GET /runs`."""

    id: str
    workflow_id: str
    playbook: str
    version: str
    account_id: str | None
    status: str
    step: str | None = None
    outcome: str | None = None
    started_at: datetime
    ended_at: datetime | None = None
    paused_reason: str | None = None
    held_out: bool = False
    """The playbook's `holdout` chose this run: it takes no steps (contract section 13)."""
    variant: str | None = None
    """The `split` variants the run took: ``step=variant``, comma-separated."""
    waiting: list[Waiting] = Field(default_factory=list)
    """What the run waits for, one entry per waiting thread (its steps and its scorecard)."""
    waiting_text: str | None = None
    """The same in words, times in the account's zone ("email held until Mon 07 Dec 09:00
    Europe/Berlin: send window")."""


class TimelineLine(BaseModel):
    """One line of a run's timeline."""

    at: datetime
    day: int
    step: str
    action: str
    detail: dict[str, Any] = Field(default_factory=dict)


class RunDetail(RunView):
    """`GET /runs/{id}`: one run, ended or not, with its vars, scorecard and whole timeline."""

    vars: dict[str, Any] = Field(default_factory=dict)
    scorecard: dict[str, Any] | None = None
    history: list[TimelineLine] = Field(default_factory=list)


class SendGridEvent(BaseModel):
    """One event of a SendGrid Event Webhook batch (more keys are kept as SendGrid sends them)."""

    model_config = ConfigDict(extra="allow")

    event: Annotated[str, Field(max_length=500, pattern=NOT_BLANK_PATTERN)]
    email: Annotated[str, Field(max_length=500, pattern=NOT_BLANK_PATTERN)]
    sg_event_id: Annotated[str, Field(max_length=500, pattern=NOT_BLANK_PATTERN)]
    timestamp: Annotated[float, Field(ge=0, le=253402300799)] | None = None


class WebhookReceipt(BaseModel):
    """What a SendGrid batch became."""

    received: int
    processed: int
    duplicates: int


ApprovalStatus = Literal["pending", "approved", "rejected", "timed_out", "closed"]


class ApprovalView(BaseModel):
    """One approval request in `GET /approvals`: who approves it, its recipients, its decision."""

    id: str
    status: ApprovalStatus
    by: str = Field(description="The approver (the account's CSM or owner, an address, or the fallback owner).")
    account_id: str | None = None
    playbook: str
    version: str
    run_id: str
    step: str
    template: str
    to: list[str] = Field(default_factory=list)
    requested_at: datetime
    expires_at: datetime
    on_timeout: Literal["send", "skip"]
    task_id: str | None = None
    link: str | None = None
    decided_by: str | None = None
    decided_at: datetime | None = None
    reason: str | None = None
    edited: list[Literal["subject", "html"]] = Field(default_factory=list)


class ApprovalEmail(BaseModel):
    """One recipient's email as rendered for the request (``error`` when it could not render)."""

    to: str
    name: str | None = None
    subject: str | None = None
    html: str | None = None
    text: str | None = None
    locale: str | None = None
    error: str | None = None


class ApprovalDetail(ApprovalView):
    """`GET /approvals/{id}`: the request with each recipient's rendered email, and the approved edit."""

    emails: list[ApprovalEmail] = Field(default_factory=list)
    subject: str | None = Field(None, description="The approved subject (template source), when edited.")
    html: str | None = Field(None, description="The approved HTML (template source), when edited.")


class Approve(Strict):
    """Approve, optionally editing the subject and the HTML (template source, rendered per recipient)."""

    decision: Literal["approved"]
    subject: Annotated[str, Field(min_length=1, max_length=1_000, pattern=NOT_BLANK_PATTERN)] | None = None
    html: Annotated[str, Field(min_length=1, max_length=200_000, pattern=NOT_BLANK_PATTERN)] | None = None
    by: Email | None = Field(None, description="Who decided (the console asks the reviewer); default: the approver.")


class Reject(Strict):
    """Reject, with a reason: nothing is sent and the step completes as skipped."""

    decision: Literal["rejected"]
    reason: Annotated[str, Field(max_length=2_000)] | None = None
    by: Email | None = Field(None, description="Who decided (the console asks the reviewer); default: the approver.")


DecisionBody = Annotated[Approve | Reject, Field(discriminator="decision")]
"""`POST /approvals/{id}`: approve (optionally with an edit) or reject (optionally with a reason)."""
