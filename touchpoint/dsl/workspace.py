"""``workspace.yaml`` and ``health.yaml`` as pydantic models (contract sections 7 and 8): the
settings every playbook of a folder shares, strict and frozen like the playbook's own
(`touchpoint.dsl.schema`)."""

from __future__ import annotations

import re
from typing import Annotated

from pydantic import Field, field_validator, model_validator

from touchpoint.dsl.durations import PositiveDuration
from touchpoint.dsl.schema import DEFAULT_ROLES, EventType, Expr, Model, SendWindow, StepId, check_cron, check_timezone


class Sender(Model):
    email: str
    name: str | None = None


class FrequencyCap(Model):
    emails: Annotated[int, Field(ge=1)]
    per: PositiveDuration


class CrmSettings(Model):
    fields: dict[str, str] = Field(default_factory=dict)
    fallback_owner: str | None = None
    sync: str | None = None
    """Extension: a cron (workspace time zone) for `AccountSync` from the configured CRM."""

    @field_validator("sync")
    @classmethod
    def _sync_cron(cls, value: str | None) -> str | None:
        return None if value is None else check_cron(value)


class SendGridSettings(Model):
    """Extension: SendGrid options that are not secrets."""

    unsubscribe_group: int | None = None
    categories: list[str] = Field(default_factory=list, max_length=7)


class Activity(Model):
    """Extension (workspace `activities`): a CSM activity `touchpoint report` counts, by an event
    type (``{event: plan.shared}``) or a playbook step (``{step: renewal-ai-plan:workshop_held}``)."""

    event: EventType | None = None
    step: str | None = None

    @field_validator("step")
    @classmethod
    def _step(cls, value: str | None) -> str | None:
        if value is not None and not re.match(r"^[a-z0-9][a-z0-9-]*:[A-Za-z_][A-Za-z0-9_-]*$", value):
            raise ValueError(f"expected `playbook-id:step_id` (e.g. renewal-ai-plan:workshop_held), found {value!r}")
        return value

    @model_validator(mode="after")
    def _one(self) -> Activity:
        if (self.event is None) == (self.step is None):
            raise ValueError("expected exactly one of `event` (an event type) or `step` (playbook-id:step_id)")
        return self


class Workspace(Model):
    """``workspace.yaml`` (contract section 7)."""

    timezone: str = "UTC"
    sender: Sender = Field(default_factory=lambda: Sender(email="success@example.com", name="Customer Success"))
    send_window: SendWindow = Field(default_factory=SendWindow)
    holidays: list[str] = Field(default_factory=list)
    frequency_cap: FrequencyCap | None = None
    segments: dict[str, Expr] = Field(default_factory=dict)
    crm: CrmSettings = Field(default_factory=CrmSettings)
    roles: list[str] = Field(default_factory=list)
    sendgrid: SendGridSettings = Field(default_factory=SendGridSettings)
    indicators: list[str] = Field(default_factory=list)
    """Extension: `account.metrics` names `touchpoint report` shows as leading indicators."""
    activities: dict[str, Activity] = Field(default_factory=dict)
    """Extension: the CSM activities `touchpoint report` counts, by name."""

    @field_validator("timezone")
    @classmethod
    def _zone(cls, value: str) -> str:
        return check_timezone(value)

    def known_roles(self) -> tuple[str, ...]:
        """Contact roles accepted by `to:` and `audience:`."""
        return DEFAULT_ROLES + tuple(r for r in self.roles if r not in DEFAULT_ROLES)


class HealthMetric(Model):
    id: StepId
    value: Expr
    weight: Annotated[float, Field(gt=0)]
    good: float
    bad: float

    @model_validator(mode="after")
    def _range(self) -> HealthMetric:
        if self.good == self.bad:
            raise ValueError("`good` and `bad` must differ")
        return self


class HealthTiers(Model):
    green: float = 70
    yellow: float = 40


class HealthModel(Model):
    """``health.yaml`` (contract section 8)."""

    schedule: str = "0 6 * * *"
    metrics: list[HealthMetric] = Field(min_length=1)
    tiers: HealthTiers = Field(default_factory=HealthTiers)

    @field_validator("schedule")
    @classmethod
    def _cron(cls, value: str) -> str:
        return check_cron(value)
