"""The store's tables.

The store is a projection of what Temporal already holds durably (accounts, events, runs), plus
the few things that need a shared lock or a unique key across workflows: the side-effect ledger,
suppressions, frequency-cap slots and the dedupe tables. The schema itself is created by the
Alembic migrations in ``migrations/versions``; keep both in step (a test compares them).
"""

from __future__ import annotations

import datetime as dt
import uuid
from typing import Any, ClassVar

from sqlalchemy import (
    Boolean,
    Date,
    Float,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    String,
    Text,
    UniqueConstraint,
    false,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from .columns import UTC, UTCDateTime, json_type

# Explicit constraint names make the migrations identical on SQLite and PostgreSQL and let
# later migrations drop or alter constraints by name.
NAMING_CONVENTION = {
    "ix": "ix_%(table_name)s_%(column_0_N_name)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
}


def utcnow() -> dt.datetime:
    """The current wall-clock time, timezone-aware UTC."""
    return dt.datetime.now(UTC)


def new_id(prefix: str) -> str:
    """A new random id such as ``msg_3f2a...``; the prefix tells what the id names."""
    return f"{prefix}_{uuid.uuid4().hex}"


class Base(DeclarativeBase):
    """Declarative base of every Touchpoint table."""

    metadata = MetaData(naming_convention=NAMING_CONVENTION)
    type_annotation_map: ClassVar[dict[Any, Any]] = {dt.datetime: UTCDateTime(), dt.date: Date()}


class Account(Base):
    """An account; ``doc`` is the whole account document except its contacts."""

    __tablename__ = "accounts"

    id: Mapped[str] = mapped_column(String, primary_key=True)
    name: Mapped[str | None] = mapped_column(String)
    segment: Mapped[str | None] = mapped_column(String)
    timezone: Mapped[str | None] = mapped_column(String)
    csm_email: Mapped[str | None] = mapped_column(String, index=True)
    renewal_date: Mapped[dt.date | None] = mapped_column(index=True)
    doc: Mapped[dict[str, Any]] = mapped_column(json_type())
    created_at: Mapped[dt.datetime] = mapped_column(default=utcnow)
    updated_at: Mapped[dt.datetime] = mapped_column(default=utcnow)


class Contact(Base):
    """A contact of an account; emails are stored lower-cased."""

    __tablename__ = "contacts"
    __table_args__ = (UniqueConstraint("account_id", "email"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    account_id: Mapped[str] = mapped_column(String, ForeignKey("accounts.id", ondelete="CASCADE"))
    email: Mapped[str] = mapped_column(String, index=True)
    name: Mapped[str | None] = mapped_column(String)
    role: Mapped[str | None] = mapped_column(String)
    locale: Mapped[str | None] = mapped_column(String)
    timezone: Mapped[str | None] = mapped_column(String)
    country: Mapped[str | None] = mapped_column(String)


class Event(Base):
    """An accepted event; the id is the caller's event id (the dedupe key)."""

    __tablename__ = "events"
    __table_args__ = (Index(None, "account_id", "type", "at"), Index(None, "account_id", "at"))

    id: Mapped[str] = mapped_column(String, primary_key=True)
    account_id: Mapped[str] = mapped_column(String)
    """Indexed with ``at`` (an account's event log, newest first) and with ``type``."""
    type: Mapped[str] = mapped_column(String, index=True)
    at: Mapped[dt.datetime]
    data: Mapped[dict[str, Any]] = mapped_column(json_type())
    received_at: Mapped[dt.datetime] = mapped_column(default=utcnow)
    applied_by: Mapped[str | None] = mapped_column(String, nullable=True)
    """The account workflow's token for the step that applied it (see migration 0003)."""


class Deployment(Base):
    """One deployed version of a playbook, the workspace or the health model."""

    __tablename__ = "deployments"

    kind: Mapped[str] = mapped_column(String, primary_key=True)
    name: Mapped[str] = mapped_column(String, primary_key=True)
    version: Mapped[str] = mapped_column(String, primary_key=True)
    content: Mapped[dict[str, Any]] = mapped_column(json_type())
    source: Mapped[str] = mapped_column(Text)
    deployed_at: Mapped[dt.datetime] = mapped_column(default=utcnow)
    current: Mapped[bool] = mapped_column(Boolean, default=True)


class Run(Base):
    """The projection of a playbook run, kept up to date by the run's activities."""

    __tablename__ = "runs"

    id: Mapped[str] = mapped_column(String, primary_key=True)
    workflow_id: Mapped[str] = mapped_column(String)
    playbook_id: Mapped[str] = mapped_column(String, index=True)
    version: Mapped[str] = mapped_column(String)
    account_id: Mapped[str | None] = mapped_column(String, index=True)
    status: Mapped[str] = mapped_column(String, default="running")
    step: Mapped[str | None] = mapped_column(String)
    outcome: Mapped[str | None] = mapped_column(String)
    started_at: Mapped[dt.datetime]
    ended_at: Mapped[dt.datetime | None]
    vars: Mapped[dict[str, Any]] = mapped_column(json_type(), default=dict)
    scorecard: Mapped[dict[str, Any] | None] = mapped_column(json_type())
    paused_reason: Mapped[str | None] = mapped_column(String)
    waiting: Mapped[list[dict[str, Any]] | None] = mapped_column(json_type())
    """What the run waits for: ``[{step, kind, until, detail}]`` (one per waiting thread)."""
    position: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    """The run's projection counter: a projection older than the row's is not written."""
    held_out: Mapped[bool] = mapped_column(Boolean, default=False, server_default=false())
    """The playbook's `holdout` chose this run: it takes no steps (migration 0008)."""
    enrolled_until: Mapped[dt.datetime | None]
    """With a `holdout`: the end of its `for` window, within which goal rates are compared."""
    variant: Mapped[str | None] = mapped_column(String)
    """The `split` variants the run took: ``step=variant``, comma-separated."""
    updated_at: Mapped[dt.datetime] = mapped_column(default=utcnow)


class RunStep(Base):
    """One line of a run's timeline."""

    __tablename__ = "run_steps"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    run_id: Mapped[str] = mapped_column(String, index=True)
    at: Mapped[dt.datetime]
    day: Mapped[int] = mapped_column(Integer)
    step: Mapped[str] = mapped_column(String)
    action: Mapped[str] = mapped_column(String)
    detail: Mapped[dict[str, Any]] = mapped_column(json_type(), default=dict)
    seq: Mapped[int | None] = mapped_column(Integer)
    """The line's number in its run's timeline (unique per run): a retried projection skips it."""

    __table_args__ = (Index("ix_run_steps_run_seq", "run_id", "seq", unique=True),)


class Ledger(Base):
    """The side-effect ledger: one row per side effect, keyed so a retry finds it."""

    __tablename__ = "ledger"

    key: Mapped[str] = mapped_column(String, primary_key=True)
    kind: Mapped[str] = mapped_column(String)
    status: Mapped[str] = mapped_column(String, default="reserved")
    result: Mapped[Any] = mapped_column(json_type(), nullable=True)
    created_at: Mapped[dt.datetime] = mapped_column(default=utcnow)
    updated_at: Mapped[dt.datetime] = mapped_column(default=utcnow)


class Message(Base):
    """An email we sent, skipped or failed to send."""

    __tablename__ = "messages"

    id: Mapped[str] = mapped_column(String, primary_key=True, default=lambda: new_id("msg"))
    ledger_key: Mapped[str | None] = mapped_column(String, unique=True)
    run_id: Mapped[str | None] = mapped_column(String, index=True)
    account_id: Mapped[str | None] = mapped_column(String)
    playbook_id: Mapped[str | None] = mapped_column(String)
    step: Mapped[str | None] = mapped_column(String)
    template: Mapped[str | None] = mapped_column(String)
    to_email: Mapped[str] = mapped_column(String, index=True)
    subject: Mapped[str] = mapped_column(String, default="")
    html: Mapped[str] = mapped_column(Text, default="")
    text: Mapped[str] = mapped_column(Text, default="")
    locale: Mapped[str | None] = mapped_column(String)
    backend: Mapped[str | None] = mapped_column(String)
    provider_message_id: Mapped[str | None] = mapped_column(String)
    status: Mapped[str] = mapped_column(String)
    error: Mapped[str | None] = mapped_column(Text)
    sent_at: Mapped[dt.datetime] = mapped_column(default=utcnow)


class Task(Base):
    """A task for a human (mirrored to the CRM when one is configured)."""

    __tablename__ = "tasks"

    id: Mapped[str] = mapped_column(String, primary_key=True, default=lambda: new_id("task"))
    ledger_key: Mapped[str | None] = mapped_column(String, unique=True)
    run_id: Mapped[str | None] = mapped_column(String)
    account_id: Mapped[str] = mapped_column(String, index=True)
    playbook_id: Mapped[str | None] = mapped_column(String)
    step: Mapped[str | None] = mapped_column(String)
    title: Mapped[str] = mapped_column(String)
    owner: Mapped[str] = mapped_column(String)
    due_at: Mapped[dt.datetime | None]
    priority: Mapped[str | None] = mapped_column(String)
    notes: Mapped[str | None] = mapped_column(Text)
    status: Mapped[str] = mapped_column(String, default="open")
    crm_id: Mapped[str | None] = mapped_column(String)
    created_at: Mapped[dt.datetime] = mapped_column(default=utcnow)
    completed_at: Mapped[dt.datetime | None]


class Approval(Base):
    """An email step's approval request: the emails it rendered per recipient, and its decision.

    ``status`` is ``pending`` until a person decides (``approved``, ``rejected``), the run times
    it out (``timed_out``) or the run ends first (``closed``).
    """

    __tablename__ = "approvals"

    id: Mapped[str] = mapped_column(String, primary_key=True)
    ledger_key: Mapped[str] = mapped_column(String, unique=True)
    run_id: Mapped[str] = mapped_column(String, index=True)
    account_id: Mapped[str | None] = mapped_column(String, index=True)
    playbook_id: Mapped[str] = mapped_column(String)
    version: Mapped[str] = mapped_column(String)
    step: Mapped[str] = mapped_column(String)
    template: Mapped[str] = mapped_column(String)
    approver: Mapped[str] = mapped_column(String, index=True)
    """Lower-cased."""
    status: Mapped[str] = mapped_column(String, index=True, default="pending")
    on_timeout: Mapped[str] = mapped_column(String, default="skip")
    requested_at: Mapped[dt.datetime]
    expires_at: Mapped[dt.datetime]
    emails: Mapped[list[dict[str, Any]]] = mapped_column(json_type(), default=list)
    """Per recipient: ``{to, name, subject, html, text, locale, error}`` as rendered for the request."""
    request: Mapped[dict[str, Any]] = mapped_column(json_type(), default=dict)
    """The request as the run asked for it (`ApprovalInput`): an edit is tried against it."""
    task_id: Mapped[str | None] = mapped_column(String)
    decided_by: Mapped[str | None] = mapped_column(String)
    decided_at: Mapped[dt.datetime | None]
    subject: Mapped[str | None] = mapped_column(Text)
    """The approver's subject (template source), when they edited it."""
    html: Mapped[str | None] = mapped_column(Text)
    """The approver's HTML (template source), when they edited it."""
    reason: Mapped[str | None] = mapped_column(Text)


class Note(Base):
    """A note on an account's timeline."""

    __tablename__ = "notes"

    id: Mapped[str] = mapped_column(String, primary_key=True, default=lambda: new_id("note"))
    ledger_key: Mapped[str | None] = mapped_column(String, unique=True)
    account_id: Mapped[str] = mapped_column(String)
    run_id: Mapped[str | None] = mapped_column(String)
    step: Mapped[str | None] = mapped_column(String)
    text: Mapped[str] = mapped_column(Text)
    created_at: Mapped[dt.datetime] = mapped_column(default=utcnow)


class FieldUpdate(Base):
    """Account fields written by an ``update`` step."""

    __tablename__ = "field_updates"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    ledger_key: Mapped[str | None] = mapped_column(String, unique=True)
    account_id: Mapped[str] = mapped_column(String)
    run_id: Mapped[str | None] = mapped_column(String)
    step: Mapped[str | None] = mapped_column(String)
    fields: Mapped[dict[str, Any]] = mapped_column(json_type())
    created_at: Mapped[dt.datetime] = mapped_column(default=utcnow)


class Suppression(Base):
    """An address we must not email; the email is lower-cased."""

    __tablename__ = "suppressions"

    email: Mapped[str] = mapped_column(String, primary_key=True)
    reason: Mapped[str] = mapped_column(String)
    source: Mapped[str | None] = mapped_column(String)
    created_at: Mapped[dt.datetime] = mapped_column(default=utcnow)


class SendSlot(Base):
    """A reserved send time counted by the contact's frequency cap."""

    __tablename__ = "send_slots"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    contact_email: Mapped[str] = mapped_column(String, index=True)
    slot_at: Mapped[dt.datetime] = mapped_column(index=True)
    ledger_key: Mapped[str] = mapped_column(String, unique=True)


class CapLock(Base):
    """One row per contact, locked to serialise that contact's cap reservations."""

    __tablename__ = "cap_locks"

    contact_email: Mapped[str] = mapped_column(String, primary_key=True)


class ProviderEvent(Base):
    """An email provider webhook event already processed (dedupe)."""

    __tablename__ = "provider_events"

    id: Mapped[str] = mapped_column(String, primary_key=True)
    received_at: Mapped[dt.datetime] = mapped_column(default=utcnow)


class HealthScore(Base):
    """One health score computed for an account."""

    __tablename__ = "health_scores"
    __table_args__ = (Index("ix_health_scores_account_id_at", "account_id", "at"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    account_id: Mapped[str] = mapped_column(String, index=True)
    at: Mapped[dt.datetime]
    score: Mapped[int] = mapped_column(Integer)
    tier: Mapped[str] = mapped_column(String)
    breakdown: Mapped[dict[str, Any]] = mapped_column(json_type(), default=dict)


class AccountHistory(Base):
    """An account's ARR, seats, segment and metrics as of ``at``: a row each time an upsert or a
    CRM sync changes one of them (`touchpoint report`, `touchpoint health calibrate`)."""

    __tablename__ = "account_history"
    __table_args__ = (Index("ix_account_history_account_id_at", "account_id", "at"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    account_id: Mapped[str] = mapped_column(String)
    at: Mapped[dt.datetime]
    arr: Mapped[float] = mapped_column(Float)
    seats_licensed: Mapped[int] = mapped_column(Integer)
    seats_active: Mapped[int] = mapped_column(Integer)
    segment: Mapped[str | None] = mapped_column(String)
    metrics: Mapped[dict[str, Any]] = mapped_column(json_type(), default=dict)


class DateTriggerFired(Base):
    """A (account, playbook, date value) date trigger that already fired."""

    __tablename__ = "date_triggers_fired"

    account_id: Mapped[str] = mapped_column(String, primary_key=True)
    playbook_id: Mapped[str] = mapped_column(String, primary_key=True)
    date_value: Mapped[dt.date] = mapped_column(Date, primary_key=True)


class Cursor(Base):
    """How far a piece of scheduled work got (date sweep per playbook, schedule ticks, CRM sync)."""

    __tablename__ = "cursors"

    name: Mapped[str] = mapped_column(String, primary_key=True)
    at: Mapped[dt.datetime | None] = mapped_column(nullable=True)
    value: Mapped[Any] = mapped_column(json_type(), nullable=True)
    updated_at: Mapped[dt.datetime] = mapped_column(default=utcnow)
