"""The analytics rollups, filled from the runs, timelines, messages and engagement events there.

`analytics_runs`, `analytics_steps`, `analytics_gaps` and `analytics_marks` (see
`touchpoint/store/rollup_models.py`); from here on the store keeps them current as rows change.
The fill runs the store's own counting rules (`touchpoint.store.rollups.fill`), so a store
migrated with history holds the counts it would have kept itself.

Revision ID: 0009
Revises: 0008
Create Date: 2026-12-05
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from sqlalchemy.orm import Session

revision = "0009"
down_revision: str | None = "0008"
branch_labels: str | None = None
depends_on: str | None = None


def _key(*columns: sa.Column[object]) -> list[sa.Column[object]]:
    return [
        sa.Column("playbook_id", sa.String(), nullable=False),
        sa.Column("version", sa.String(), nullable=False),
        sa.Column("day", sa.Date(), nullable=False),
        *columns,
    ]


def upgrade() -> None:
    """Create the four tables and count the rows already in the store."""
    op.create_table(
        "analytics_runs",
        *_key(
            sa.Column("variant", sa.String(), nullable=False),
            sa.Column("held_out", sa.Boolean(), nullable=False),
            sa.Column("status", sa.String(), nullable=False),
            sa.Column("outcome", sa.String(), nullable=False),
            sa.Column("window", sa.String(), nullable=False),
            sa.Column("runs", sa.Integer(), nullable=False),
        ),
        sa.PrimaryKeyConstraint("playbook_id", "version", "day", "variant", "held_out", "status", "outcome", "window", name="pk_analytics_runs"),
    )
    op.create_table(
        "analytics_steps",
        *_key(
            sa.Column("step", sa.String(), nullable=False),
            sa.Column("metric", sa.String(), nullable=False),
            sa.Column("count", sa.Integer(), nullable=False),
        ),
        sa.PrimaryKeyConstraint("playbook_id", "version", "day", "step", "metric", name="pk_analytics_steps"),
    )
    op.create_table(
        "analytics_gaps",
        *_key(
            sa.Column("step", sa.String(), nullable=False),
            sa.Column("bucket", sa.Integer(), nullable=False),
            sa.Column("count", sa.Integer(), nullable=False),
        ),
        sa.PrimaryKeyConstraint("playbook_id", "version", "day", "step", "bucket", name="pk_analytics_gaps"),
    )
    op.create_table(
        "analytics_marks",
        sa.Column("message_id", sa.String(), nullable=False),
        sa.Column("metric", sa.String(), nullable=False),
        sa.PrimaryKeyConstraint("message_id", "metric", name="pk_analytics_marks"),
    )
    from touchpoint.store.rollups import fill

    fill(Session(bind=op.get_bind()))


def downgrade() -> None:
    """Drop the four tables."""
    for table in ("analytics_marks", "analytics_gaps", "analytics_steps", "analytics_runs"):
        op.drop_table(table)
