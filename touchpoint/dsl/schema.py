"""The playbook contract as pydantic models: strict (unknown keys are errors) and frozen.

Everything a workflow receives is one of these models, validated before any workflow starts.
``workspace.yaml`` and ``health.yaml`` are `touchpoint.dsl.workspace`, the account document
`touchpoint.dsl.accounts`; the base model and the checks they share (`check_cron`,
`check_timezone`) are here.
Expressions and templates are kept as source strings here; `touchpoint.dsl.expressions` compiles
and checks them, and the interpreter evaluates them at run time.
"""

from __future__ import annotations

import re
from typing import Annotated, Any, Literal, Union

from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Discriminator,
    Field,
    Tag,
    field_validator,
    model_validator,
)

from touchpoint.dsl.durations import Duration, PositiveDuration, parse_duration


class Model(BaseModel):
    """Base of every contract model: unknown keys are errors and instances are immutable."""

    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True, serialize_by_alias=True)


def _expr(value: Any) -> Any:
    # `when: true` or `value: 3` are valid expressions written as YAML scalars.
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return str(value)
    return value


Expr = Annotated[str, BeforeValidator(_expr), Field(min_length=1)]
"""A Jinja2 expression (no ``{{ }}``), checked by `touchpoint.dsl.expressions`."""

Text = str
"""A Jinja2 template string (``{{ }}`` and ``{% %}``)."""

ID_RE = r"^[a-z0-9][a-z0-9-]*$"
STEP_ID_RE = r"^[A-Za-z_][A-Za-z0-9_-]*$"
EVENT_TYPE_RE = r"^[a-z][a-z0-9_]*(\.[a-z][a-z0-9_]*)*$"
WEEKDAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")
Weekday = Literal["mon", "tue", "wed", "thu", "fri", "sat", "sun"]
_WORKDAYS: tuple[Weekday, ...] = ("mon", "tue", "wed", "thu", "fri")
EventType = Annotated[str, Field(pattern=EVENT_TYPE_RE)]
StepId = Annotated[str, Field(pattern=STEP_ID_RE)]
Outcome = Literal["completed", "converted", "exited", "cancelled", "failed"]

#: Contact roles that `to:` and `audience:` accept; `workspace.yaml` may add more under `roles:`.
DEFAULT_ROLES = ("champion", "admin", "executive", "sponsor", "user", "billing", "technical")
#: Internal recipients that `to:` accepts besides contact roles.
INTERNAL_RECIPIENTS = ("csm", "owner")
#: Step kinds a `schedule` playbook may use: it has no single account, so nothing that acts on one.
SCHEDULE_STEP_KINDS = ("email", "webhook", "set", "if", "wait", "exit")
_ADDRESS = re.compile(r"^[^@\s'\"{}()\[\]]+@[^@\s'\"{}()\[\]]+\.[^@\s'\"{}()\[\]]+$")


def is_address(target: str) -> bool:
    """Whether a `to:` entry is a literal email address (else a role name or an expression)."""
    return bool(_ADDRESS.match(target))


class NotSupportedYet(ValueError):
    """A key the contract marks *(later)*."""


# --------------------------------------------------------------------------- time


class SendWindow(Model):
    """Days and hours when email may go out, in the recipient's time zone."""

    days: list[Weekday] = Field(default_factory=lambda: list(_WORKDAYS), min_length=1)
    hours: str = "09:00-17:00"

    @field_validator("hours")
    @classmethod
    def _hours(cls, value: str) -> str:
        match = re.fullmatch(r"\s*(\d{1,2}):(\d{2})\s*-\s*(\d{1,2}):(\d{2})\s*", value)
        if not match:
            raise ValueError(f"expected hours like '09:00-17:00', found {value!r}")
        h1, m1, h2, m2 = (int(g) for g in match.groups())
        if not (0 <= h1 <= 24 and 0 <= h2 <= 24 and m1 < 60 and m2 < 60):
            raise ValueError(f"hours out of range in {value!r}")
        if (h1, m1) >= (h2, m2):
            raise ValueError(f"the window must end after it starts, found {value!r}")
        return f"{h1:02d}:{m1:02d}-{h2:02d}:{m2:02d}"

    def bounds(self) -> tuple[int, int]:
        """Start and end of the window in minutes after midnight."""
        start, end = self.hours.split("-")
        return _minutes(start), _minutes(end)


def _minutes(hhmm: str) -> int:
    hours, minutes = hhmm.split(":")
    return int(hours) * 60 + int(minutes)


# --------------------------------------------------------------------------- steps


class StepBase(Model):
    """Keys every step may carry besides its one action key."""

    id: StepId | None = None
    when: Expr | None = None
    on_error: Literal["continue", "stop"] = "continue"


class Approval(Model):
    """A human approves (optionally editing) or rejects an email step's rendered emails first."""

    by: str = Field("csm", json_schema_extra={"anyOf": [{"enum": list(INTERNAL_RECIPIENTS)}, {"pattern": _ADDRESS.pattern}]})
    timeout: PositiveDuration = Field(default_factory=lambda: parse_duration("2d"))
    on_timeout: Literal["send", "skip"] = "skip"

    @field_validator("by")
    @classmethod
    def _by(cls, value: str) -> str:
        if value in INTERNAL_RECIPIENTS or is_address(value):
            return value
        raise ValueError(f"expected `csm`, `owner` or an email address, found {value!r}")

    @field_validator("timeout")
    @classmethod
    def _positive(cls, value: Any) -> Any:
        if value.total_seconds() <= 0:
            raise ValueError("expected a duration longer than zero, e.g. 2d")
        return value


class EmailAction(Model):
    template: Annotated[str, Field(pattern=r"^[A-Za-z0-9_][A-Za-z0-9_./-]*$")]
    to: list[str] | None = None
    cc_csm: bool = False
    locale: Expr | None = None
    for_each: Literal["csm"] | None = None
    approval: Approval | None = None

    @field_validator("to", mode="before")
    @classmethod
    def _to_list(cls, value: Any) -> Any:
        return [value] if isinstance(value, str) else value


class EmailStep(StepBase):
    email: EmailAction


class WaitStep(StepBase):
    wait: PositiveDuration


class WaitUntilAction(Model):
    day: Annotated[int, Field(ge=0)] | None = None
    date: Expr | None = None
    offset: Duration = Field(default_factory=lambda: parse_duration("0d"))

    @model_validator(mode="after")
    def _one(self) -> WaitUntilAction:
        if (self.day is None) == (self.date is None):
            raise ValueError("give exactly one of `day: N` or `date: <expression>`")
        return self


class WaitUntilStep(StepBase):
    wait_until: WaitUntilAction


class WaitForAction(Model):
    event: list[EventType] = Field(min_length=1)
    when: Expr | None = None
    timeout: PositiveDuration
    seen: bool = False
    on_timeout: list[Step] = Field(default_factory=list)

    @field_validator("event", mode="before")
    @classmethod
    def _event_list(cls, value: Any) -> Any:
        return [value] if isinstance(value, str) else value


class WaitForStep(StepBase):
    wait_for: WaitForAction


class TaskAction(Model):
    title: Text = Field(min_length=1)
    owner: str = "csm"
    due: PositiveDuration | None = None
    priority: Literal["low", "medium", "high"] | None = None
    notes: Text | None = None
    await_: bool = Field(default=False, alias="await")
    on_overdue: list[Step] = Field(default_factory=list)

    @model_validator(mode="after")
    def _overdue(self) -> TaskAction:
        if self.on_overdue and not (self.await_ and self.due):
            raise ValueError("`on_overdue` needs `await: true` and a `due` duration")
        return self


class TaskStep(StepBase):
    task: TaskAction


class UpdateAction(Model):
    fields: dict[str, Any] = Field(min_length=1)


class UpdateStep(StepBase):
    update: UpdateAction


class NoteAction(Model):
    text: Text = Field(min_length=1)


class NoteStep(StepBase):
    note: NoteAction


class WebhookAction(Model):
    url: Text = Field(min_length=1)
    method: Literal["GET", "POST", "PUT", "PATCH", "DELETE"] = "POST"
    json_: Any = Field(default=None, alias="json")
    headers: dict[str, Text] = Field(default_factory=dict)

    @field_validator("method", mode="before")
    @classmethod
    def _upper(cls, value: Any) -> Any:
        return value.upper() if isinstance(value, str) else value


class WebhookStep(StepBase):
    webhook: WebhookAction


class SetStep(StepBase):
    set: dict[Annotated[str, Field(pattern=r"^[A-Za-z_][A-Za-z0-9_]*$")], Expr] = Field(min_length=1)


TEMPLATE_NAME_RE = r"^[A-Za-z0-9_][A-Za-z0-9_./-]*$"


class DraftAction(Model):
    """Ask the configured AI backend for a text from a rendered prompt (contract section 12)."""

    prompt: Annotated[str, Field(pattern=TEMPLATE_NAME_RE)]
    """`templates/<prompt>.txt.j2`, rendered with the account, its contacts, `run` and the event."""
    into: Annotated[str, Field(pattern=r"^[A-Za-z_][A-Za-z0-9_]*$")]
    """The `run.vars` name the text is kept under."""
    fallback: Annotated[str, Field(pattern=TEMPLATE_NAME_RE)] | None = None
    """`templates/<fallback>.txt.j2`: the text when no model answers (else the rendered prompt)."""
    max_words: Annotated[int, Field(ge=1, le=4000)] = 400


class DraftStep(StepBase):
    draft: DraftAction


class IfStep(StepBase):
    if_: Expr = Field(alias="if")
    then: list[Step] = Field(default_factory=list)
    else_: list[Step] = Field(default_factory=list, alias="else")


class SplitVariant(Model):
    weight: Annotated[float, Field(gt=0)] = 1
    steps: list[Step] = Field(default_factory=list)


class SplitStep(StepBase):
    split: dict[Annotated[str, Field(pattern=r"^[A-Za-z0-9_][A-Za-z0-9_-]*$")], SplitVariant] = Field(min_length=1)


class RepeatAction(Model):
    every: PositiveDuration
    steps: list[Step] = Field(min_length=1)
    until: Expr | None = None
    times: Annotated[int, Field(ge=1)] | None = None


class RepeatStep(StepBase):
    repeat: RepeatAction


class StartAction(Model):
    playbook: Annotated[str, Field(pattern=ID_RE)]
    when: Expr | None = None


class StartStep(StepBase):
    start: StartAction


class ExitAction(Model):
    outcome: Outcome = "completed"


class ExitStep(StepBase):
    # No default: the key names the step's kind (`step_kind`), so it is always there, and a
    # payload that leaves defaults out (`touchpoint.converter`) keeps it.
    exit: ExitAction

    @field_validator("exit", mode="before")
    @classmethod
    def _exit(cls, value: Any) -> Any:
        if value is None:
            return {}
        if isinstance(value, str):
            return {"outcome": value}
        return value


#: The closed registry of step kinds: action key -> model. An unknown key is rejected at load.
STEP_KINDS: dict[str, type[StepBase]] = {
    "email": EmailStep,
    "wait": WaitStep,
    "wait_until": WaitUntilStep,
    "wait_for": WaitForStep,
    "task": TaskStep,
    "update": UpdateStep,
    "note": NoteStep,
    "webhook": WebhookStep,
    "set": SetStep,
    "draft": DraftStep,
    "if": IfStep,
    "split": SplitStep,
    "repeat": RepeatStep,
    "start": StartStep,
    "exit": ExitStep,
}
#: Keys a step mapping may carry besides its action (and `then`/`else` for `if`).
STEP_COMMON_KEYS = ("id", "when", "on_error")
_ATTR_OF_KIND = {"if": "if_"}


def step_kind(value: Any) -> str | None:
    """The action key of a step, from a mapping or a model."""
    if isinstance(value, StepBase):
        for kind, cls in STEP_KINDS.items():
            if type(value) is cls:
                return kind
        return None
    if isinstance(value, dict):
        found = [k for k in value if k in STEP_KINDS]
        if not found and "if_" in value:
            return "if"
        return found[0] if len(found) == 1 else None
    return None


def _step_tag(value: Any) -> str | None:
    kind = step_kind(value)
    return f"step:{kind}" if kind else None


Step = Annotated[
    Union[
        Annotated[EmailStep, Tag("step:email")],
        Annotated[WaitStep, Tag("step:wait")],
        Annotated[WaitUntilStep, Tag("step:wait_until")],
        Annotated[WaitForStep, Tag("step:wait_for")],
        Annotated[TaskStep, Tag("step:task")],
        Annotated[UpdateStep, Tag("step:update")],
        Annotated[NoteStep, Tag("step:note")],
        Annotated[WebhookStep, Tag("step:webhook")],
        Annotated[SetStep, Tag("step:set")],
        Annotated[DraftStep, Tag("step:draft")],
        Annotated[IfStep, Tag("step:if")],
        Annotated[SplitStep, Tag("step:split")],
        Annotated[RepeatStep, Tag("step:repeat")],
        Annotated[StartStep, Tag("step:start")],
        Annotated[ExitStep, Tag("step:exit")],
    ],
    Discriminator(_step_tag, custom_error_type="step_kind", custom_error_message="unknown step"),
]
"""One step of a playbook: a mapping with exactly one action key (see `STEP_KINDS`)."""


# --------------------------------------------------------------------------- playbook


def _event_types(value: Any) -> Any:
    # `event: [a]` is the same trigger as `event: a`; every type is checked like `EventType`.
    if isinstance(value, list) and len(value) == 1:
        value = value[0]
    items = value if isinstance(value, list) else [value]
    if not items:
        raise ValueError("expected an event type, or a list of them")
    for item in items:
        if not isinstance(item, str) or not re.match(EVENT_TYPE_RE, item):
            raise ValueError(f"{item!r} is not a valid event type: expected a lowercase dotted event type (e.g. account.created)")
    return value


class EventTrigger(Model):
    """Starts a run on an event of this type (or of any of these types: `[trial.started, ...]`)."""

    event: Annotated[str | list[str], BeforeValidator(_event_types)]
    when: Expr | None = None

    @property
    def events(self) -> list[str]:
        """The event types that start it."""
        return [self.event] if isinstance(self.event, str) else list(self.event)


class DateTrigger(Model):
    date: Expr
    offset: Duration = Field(default_factory=lambda: parse_duration("0d"))
    when: Expr | None = None
    catch_up: bool = False


class ScheduleTrigger(Model):
    schedule: str
    when: Expr | None = None

    @field_validator("schedule")
    @classmethod
    def _cron(cls, value: str) -> str:
        return check_cron(value)


class ManualTrigger(Model):
    manual: Literal[True]
    """No default: the key names the trigger's kind (`_trigger_tag`), as `ExitStep.exit`."""


def check_cron(value: str) -> str:
    """Raise ValueError unless ``value`` is a 5-field cron expression croniter accepts."""
    from croniter import croniter  # local: keeps croniter off the workflow sandbox's import path

    if len(value.split()) != 5 or not croniter.is_valid(value):
        raise ValueError(f"expected a 5-field cron expression like '0 9 * * mon', found {value!r}")
    return value


def check_timezone(value: str) -> str:
    """Raise ValueError unless ``value`` is an IANA time zone name."""
    from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

    try:
        ZoneInfo(value)
    except (ZoneInfoNotFoundError, ValueError):
        raise ValueError(f"unknown time zone {value!r}: use an IANA name like 'America/New_York'") from None
    return value


def _trigger_tag(value: Any) -> str | None:
    if value == "manual":
        return "manual"
    if isinstance(value, BaseModel):
        return {EventTrigger: "event", DateTrigger: "date", ScheduleTrigger: "schedule", ManualTrigger: "manual"}.get(
            type(value)
        )
    if isinstance(value, dict):
        found = [k for k in ("event", "date", "schedule", "manual") if k in value]
        return found[0] if len(found) == 1 else None
    return None


def _manual(value: Any) -> Any:
    return {"manual": True} if value == "manual" else value


Trigger = Annotated[
    Union[
        Annotated[EventTrigger, Tag("event")],
        Annotated[DateTrigger, Tag("date")],
        Annotated[ScheduleTrigger, Tag("schedule")],
        Annotated[ManualTrigger, Tag("manual")],
    ],
    Discriminator(
        _trigger_tag,
        custom_error_type="trigger_kind",
        custom_error_message="expected exactly one of `event`, `date`, `schedule` or `manual`",
    ),
]


class Milestone(Model):
    id: StepId
    weight: Annotated[float, Field(gt=0)]
    event: EventType | None = None
    when: Expr | None = None

    @model_validator(mode="after")
    def _how(self) -> Milestone:
        if self.event is None and self.when is None:
            raise ValueError("a milestone needs an `event`, a `when`, or both")
        return self


class Checkpoint(Model):
    day: Annotated[int, Field(ge=0)]
    below: Annotated[float, Field(ge=0)]
    steps: list[Step] = Field(min_length=1)


class ScorecardTarget(Model):
    score: Annotated[float, Field(ge=0, le=100)] = 80
    by_day: Annotated[int, Field(ge=0)] = 90


class Scorecard(Model):
    target: ScorecardTarget = Field(default_factory=ScorecardTarget)
    milestones: list[Milestone] = Field(min_length=1)
    checkpoints: list[Checkpoint] = Field(default_factory=list)
    on_miss: list[Step] = Field(default_factory=list)


def _reenroll(value: Any) -> Any:
    if isinstance(value, str) and value.startswith("after"):
        parse_duration(value[len("after") :].strip())  # raises with the expected forms
        return value
    if value not in ("never", "always"):
        raise ValueError(f"expected `never`, `always` or `after <duration>` (e.g. `after 90d`), found {value!r}")
    return value


class Holdout(Model):
    """`holdout: {percent, for}` (contract sections 3 and 13): a stable share of enrollments takes
    no steps, and every run stays enrolled `for` that long so both arms are measured alike."""

    percent: Annotated[float, Field(gt=0, lt=100)]
    for_: PositiveDuration = Field(alias="for")


class Playbook(Model):
    """One playbook file (contract section 3)."""

    playbook: Annotated[str, Field(pattern=ID_RE)]
    name: str | None = None
    description: str | None = None
    trigger: Trigger
    reenroll: Annotated[str, BeforeValidator(_reenroll)] = "never"
    exit_when: Expr | None = None
    goal: Expr | None = None
    holdout: Holdout | None = None
    audience: list[str] | None = None
    send_window: SendWindow | None = None
    scorecard: Scorecard | None = None
    steps: list[Step] = Field(min_length=1)

    @field_validator("audience", mode="before")
    @classmethod
    def _audience(cls, value: Any) -> Any:
        return [value] if isinstance(value, str) else value

    @field_validator("trigger", mode="before")
    @classmethod
    def _trigger(cls, value: Any) -> Any:
        return _manual(value)

    @property
    def trigger_kind(self) -> str:
        """``event``, ``date``, ``schedule`` or ``manual``."""
        return _trigger_tag(self.trigger) or "manual"

    def reenroll_after(self) -> Any:
        """The `after <duration>` of `reenroll` as a timedelta, else None."""
        if self.reenroll.startswith("after"):
            return parse_duration(self.reenroll[len("after") :].strip())
        return None


for _model in (
    WaitForStep,
    TaskStep,
    SplitStep,
    RepeatStep,
    WaitForAction,
    TaskAction,
    IfStep,
    SplitVariant,
    RepeatAction,
    Checkpoint,
    Scorecard,
    Playbook,
):
    _model.model_rebuild()
