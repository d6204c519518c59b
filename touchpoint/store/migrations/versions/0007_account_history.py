"""The history of each account's ARR, seats, segment and metrics.

`touchpoint report` reads ARR and NRR for a period from it, and leading indicators as of the
period's end; `touchpoint health calibrate` reads the metrics an account had before an outcome.
Each existing account gets one row: its current values, as of its last update.

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-05
"""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa
from alembic import op

revision = "0007"
down_revision: str | None = "0006"
branch_labels: str | None = None
depends_on: str | None = None


def upgrade() -> None:
    """Create `account_history` and fill it with each account's current values."""
    history = op.create_table(
        "account_history",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("account_id", sa.String(), nullable=False),
        sa.Column("at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("arr", sa.Float(), nullable=False),
        sa.Column("seats_licensed", sa.Integer(), nullable=False),
        sa.Column("seats_active", sa.Integer(), nullable=False),
        sa.Column("segment", sa.String(), nullable=True),
        sa.Column("metrics", sa.JSON(), nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_account_history"),
    )
    op.create_index("ix_account_history_account_id_at", "account_history", ["account_id", "at"])
    accounts = sa.table("accounts", sa.column("id", sa.String()), sa.column("doc", sa.JSON()), sa.column("updated_at", sa.DateTime(timezone=True)))
    bind = op.get_bind()
    rows = [_row(id, doc or {}, at) for id, doc, at in bind.execute(sa.select(accounts.c.id, accounts.c.doc, accounts.c.updated_at))]
    if rows:
        op.bulk_insert(history, rows)


def _row(account_id: str, doc: dict[str, Any], at: Any) -> dict[str, Any]:
    seats = doc.get("seats") or {}
    metrics = doc.get("metrics") or {}
    return {
        "account_id": account_id,
        "at": at,
        "arr": float(doc.get("arr") or 0),
        "seats_licensed": int(seats.get("licensed") or 0),
        "seats_active": int(seats.get("active") or 0),
        "segment": doc.get("segment"),
        "metrics": metrics if isinstance(metrics, dict) else {},
    }


def downgrade() -> None:
    """Drop `account_history`."""
    op.drop_index("ix_account_history_account_id_at", table_name="account_history")
    op.drop_table("account_history")
