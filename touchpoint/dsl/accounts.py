"""The account document (contract section 9) as pydantic models: what the API, the CLI and a CRM
sync hand to an account's workflow, and what its playbooks read as ``account``."""

from __future__ import annotations

import re
from datetime import date
from typing import Annotated, Any

from pydantic import Field, field_validator

from touchpoint.dsl.schema import Model, check_timezone


class Person(Model):
    name: str | None = None
    email: str | None = None


class Seats(Model):
    licensed: int = 0
    active: int = 0


class Health(Model):
    score: float | None = None
    tier: str | None = None
    previous_score: float | None = None
    previous_tier: str | None = None
    updated_at: Any = None


class Contact(Model):
    email: str
    name: str | None = None
    role: str | None = None
    locale: str | None = None
    timezone: str | None = None
    country: str | None = None

    @field_validator("timezone")
    @classmethod
    def _zone(cls, value: str | None) -> str | None:
        return None if value is None else check_timezone(value)

    @field_validator("email")
    @classmethod
    def _email(cls, value: str) -> str:
        if not re.fullmatch(r"[^@\s]+@[^@\s]+\.[^@\s]+", value):
            raise ValueError(f"expected an email address, found {value!r}")
        return value


class AccountDoc(Model):
    """An account document (contract section 9): only `id` and `name` are required."""

    id: Annotated[str, Field(min_length=1, max_length=200, pattern=r"^[^/\s]+$")]
    name: str = Field(min_length=1)
    segment: str | None = None
    region: str | None = None
    country: str | None = None
    timezone: str | None = None
    locale: str = "en"
    plan: str | None = None
    arr: float = 0
    created_at: date | None = None
    renewal_date: date | None = None
    seats: Seats = Field(default_factory=Seats)
    csm: Person | None = None
    owner: Person | None = None
    health: Health = Field(default_factory=Health)
    contacts: list[Contact] = Field(default_factory=list)
    metrics: dict[str, float] = Field(default_factory=dict)
    properties: dict[str, Any] = Field(default_factory=dict)

    @field_validator("timezone")
    @classmethod
    def _zone(cls, value: str | None) -> str | None:
        return None if value is None else check_timezone(value)
