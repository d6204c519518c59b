"""The initial schema.

Migrations are self-contained (plain SQLAlchemy types, explicit constraint names) so that later
changes to the models never change what an old migration does.

Revision ID: 0001
Revises:
Create Date: 2024-11-23
"""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision: str | None = None
branch_labels: str | None = None
depends_on: str | None = None


def _id(name: str = "id") -> sa.Column[str]:
    return sa.Column(name, sa.String(), nullable=False)


def _autoinc_id() -> sa.Column[int]:
    return sa.Column("id", sa.Integer(), autoincrement=True, nullable=False)


def _str(name: str, *, nullable: bool = True) -> sa.Column[str]:
    return sa.Column(name, sa.String(), nullable=nullable)


def _at(name: str, *, nullable: bool = False) -> sa.Column[Any]:
    return sa.Column(name, sa.DateTime(timezone=True), nullable=nullable)


def _json(name: str, *, nullable: bool = False) -> sa.Column[Any]:
    return sa.Column(name, sa.JSON(), nullable=nullable)


def upgrade() -> None:
    """Create every table of the first release."""
    op.create_table(
        "accounts",
        _id(),
        _str("name"),
        _str("segment"),
        _str("timezone"),
        _str("csm_email"),
        sa.Column("renewal_date", sa.Date(), nullable=True),
        _json("doc"),
        _at("created_at"),
        _at("updated_at"),
        sa.PrimaryKeyConstraint("id", name="pk_accounts"),
    )
    op.create_index("ix_accounts_csm_email", "accounts", ["csm_email"])
    op.create_index("ix_accounts_renewal_date", "accounts", ["renewal_date"])

    op.create_table(
        "contacts",
        _autoinc_id(),
        _str("account_id", nullable=False),
        _str("email", nullable=False),
        _str("name"),
        _str("role"),
        _str("locale"),
        _str("timezone"),
        _str("country"),
        sa.PrimaryKeyConstraint("id", name="pk_contacts"),
        sa.ForeignKeyConstraint(
            ["account_id"],
            ["accounts.id"],
            name="fk_contacts_account_id_accounts",
            ondelete="CASCADE",
        ),
        sa.UniqueConstraint("account_id", "email", name="uq_contacts_account_id_email"),
    )
    op.create_index("ix_contacts_email", "contacts", ["email"])

    op.create_table(
        "events",
        _id(),
        _str("account_id", nullable=False),
        _str("type", nullable=False),
        _at("at"),
        _json("data"),
        _at("received_at"),
        sa.PrimaryKeyConstraint("id", name="pk_events"),
    )
    op.create_index("ix_events_account_id", "events", ["account_id"])
    op.create_index("ix_events_type", "events", ["type"])
    op.create_index("ix_events_account_id_type_at", "events", ["account_id", "type", "at"])

    op.create_table(
        "deployments",
        _str("kind", nullable=False),
        _str("name", nullable=False),
        _str("version", nullable=False),
        _json("content"),
        sa.Column("source", sa.Text(), nullable=False),
        _at("deployed_at"),
        sa.Column("current", sa.Boolean(), nullable=False),
        sa.PrimaryKeyConstraint("kind", "name", "version", name="pk_deployments"),
    )

    op.create_table(
        "runs",
        _id(),
        _str("workflow_id", nullable=False),
        _str("playbook_id", nullable=False),
        _str("version", nullable=False),
        _str("account_id"),
        _str("status", nullable=False),
        _str("step"),
        _str("outcome"),
        _at("started_at"),
        _at("ended_at", nullable=True),
        _json("vars"),
        _json("scorecard", nullable=True),
        _str("paused_reason"),
        _at("updated_at"),
        sa.PrimaryKeyConstraint("id", name="pk_runs"),
    )
    op.create_index("ix_runs_playbook_id", "runs", ["playbook_id"])
    op.create_index("ix_runs_account_id", "runs", ["account_id"])

    op.create_table(
        "run_steps",
        _autoinc_id(),
        _str("run_id", nullable=False),
        _at("at"),
        sa.Column("day", sa.Integer(), nullable=False),
        _str("step", nullable=False),
        _str("action", nullable=False),
        _json("detail"),
        sa.PrimaryKeyConstraint("id", name="pk_run_steps"),
    )
    op.create_index("ix_run_steps_run_id", "run_steps", ["run_id"])

    op.create_table(
        "ledger",
        _str("key", nullable=False),
        _str("kind", nullable=False),
        _str("status", nullable=False),
        _json("result", nullable=True),
        _at("created_at"),
        _at("updated_at"),
        sa.PrimaryKeyConstraint("key", name="pk_ledger"),
    )

    op.create_table(
        "messages",
        _id(),
        _str("ledger_key"),
        _str("run_id"),
        _str("account_id"),
        _str("playbook_id"),
        _str("step"),
        _str("template"),
        _str("to_email", nullable=False),
        _str("subject", nullable=False),
        sa.Column("html", sa.Text(), nullable=False),
        sa.Column("text", sa.Text(), nullable=False),
        _str("locale"),
        _str("backend"),
        _str("provider_message_id"),
        _str("status", nullable=False),
        sa.Column("error", sa.Text(), nullable=True),
        _at("sent_at"),
        sa.PrimaryKeyConstraint("id", name="pk_messages"),
        sa.UniqueConstraint("ledger_key", name="uq_messages_ledger_key"),
    )
    op.create_index("ix_messages_run_id", "messages", ["run_id"])
    op.create_index("ix_messages_to_email", "messages", ["to_email"])

    op.create_table(
        "tasks",
        _id(),
        _str("ledger_key"),
        _str("run_id"),
        _str("account_id", nullable=False),
        _str("playbook_id"),
        _str("step"),
        _str("title", nullable=False),
        _str("owner", nullable=False),
        _at("due_at", nullable=True),
        _str("priority"),
        sa.Column("notes", sa.Text(), nullable=True),
        _str("status", nullable=False),
        _str("crm_id"),
        _at("created_at"),
        _at("completed_at", nullable=True),
        sa.PrimaryKeyConstraint("id", name="pk_tasks"),
        sa.UniqueConstraint("ledger_key", name="uq_tasks_ledger_key"),
    )
    op.create_index("ix_tasks_account_id", "tasks", ["account_id"])

    op.create_table(
        "notes",
        _id(),
        _str("ledger_key"),
        _str("account_id", nullable=False),
        _str("run_id"),
        _str("step"),
        sa.Column("text", sa.Text(), nullable=False),
        _at("created_at"),
        sa.PrimaryKeyConstraint("id", name="pk_notes"),
        sa.UniqueConstraint("ledger_key", name="uq_notes_ledger_key"),
    )

    op.create_table(
        "field_updates",
        _autoinc_id(),
        _str("ledger_key"),
        _str("account_id", nullable=False),
        _str("run_id"),
        _str("step"),
        _json("fields"),
        _at("created_at"),
        sa.PrimaryKeyConstraint("id", name="pk_field_updates"),
        sa.UniqueConstraint("ledger_key", name="uq_field_updates_ledger_key"),
    )

    op.create_table(
        "suppressions",
        _str("email", nullable=False),
        _str("reason", nullable=False),
        _str("source"),
        _at("created_at"),
        sa.PrimaryKeyConstraint("email", name="pk_suppressions"),
    )

    op.create_table(
        "send_slots",
        _autoinc_id(),
        _str("contact_email", nullable=False),
        _at("slot_at"),
        _str("ledger_key", nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_send_slots"),
        sa.UniqueConstraint("ledger_key", name="uq_send_slots_ledger_key"),
    )
    op.create_index("ix_send_slots_contact_email", "send_slots", ["contact_email"])
    op.create_index("ix_send_slots_slot_at", "send_slots", ["slot_at"])

    op.create_table(
        "cap_locks",
        _str("contact_email", nullable=False),
        sa.PrimaryKeyConstraint("contact_email", name="pk_cap_locks"),
    )

    op.create_table(
        "provider_events",
        _id(),
        _at("received_at"),
        sa.PrimaryKeyConstraint("id", name="pk_provider_events"),
    )

    op.create_table(
        "health_scores",
        _autoinc_id(),
        _str("account_id", nullable=False),
        _at("at"),
        sa.Column("score", sa.Integer(), nullable=False),
        _str("tier", nullable=False),
        _json("breakdown"),
        sa.PrimaryKeyConstraint("id", name="pk_health_scores"),
    )
    op.create_index("ix_health_scores_account_id", "health_scores", ["account_id"])

    op.create_table(
        "date_triggers_fired",
        _str("account_id", nullable=False),
        _str("playbook_id", nullable=False),
        sa.Column("date_value", sa.Date(), nullable=False),
        sa.PrimaryKeyConstraint(
            "account_id", "playbook_id", "date_value", name="pk_date_triggers_fired"
        ),
    )


def downgrade() -> None:
    """Drop every table of the first release (all data is lost)."""
    for table in (
        "date_triggers_fired",
        "health_scores",
        "provider_events",
        "cap_locks",
        "send_slots",
        "suppressions",
        "field_updates",
        "notes",
        "tasks",
        "messages",
        "ledger",
        "run_steps",
        "runs",
        "deployments",
        "events",
        "contacts",
        "accounts",
    ):
        op.drop_table(table)
