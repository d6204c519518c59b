"""Cursors of scheduled work, and the health history's time index.

A cursor remembers how far a piece of scheduled work got: the date sweep per playbook, the
previous tick of a schedule playbook, the last CRM sync.

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-23
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision: str | None = "0001"
branch_labels: str | None = None
depends_on: str | None = None


def upgrade() -> None:
    """Add `cursors` and an (account_id, at) index on `health_scores`."""
    op.create_table(
        "cursors",
        sa.Column("name", sa.String(), nullable=False),
        sa.Column("at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("value", sa.JSON(), nullable=True),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("name", name="pk_cursors"),
    )
    op.create_index("ix_health_scores_account_id_at", "health_scores", ["account_id", "at"])


def downgrade() -> None:
    """Drop what `upgrade` added."""
    op.drop_index("ix_health_scores_account_id_at", table_name="health_scores")
    op.drop_table("cursors")
