"""Runs hosted by their account's workflow: positions projected, timelines written once.

`runs.waiting` holds what a run waits for and until when (`touchpoint status`, the console);
`runs.position` orders projections (a late write never overwrites a newer one); each timeline
line has its run's sequence number, unique per run, so a retried projection writes it once.

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-04
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision: str | None = "0003"
branch_labels: str | None = None
depends_on: str | None = None


def upgrade() -> None:
    """Add `runs.waiting`, `runs.position` and `run_steps.seq` (unique per run)."""
    with op.batch_alter_table("runs") as batch:
        batch.add_column(sa.Column("waiting", sa.JSON(), nullable=True))
        batch.add_column(sa.Column("position", sa.Integer(), nullable=False, server_default="0"))
    with op.batch_alter_table("run_steps") as batch:
        batch.add_column(sa.Column("seq", sa.Integer(), nullable=True))
    op.create_index("ix_run_steps_run_seq", "run_steps", ["run_id", "seq"], unique=True)


def downgrade() -> None:
    """Drop them again."""
    op.drop_index("ix_run_steps_run_seq", table_name="run_steps")
    with op.batch_alter_table("run_steps") as batch:
        batch.drop_column("seq")
    with op.batch_alter_table("runs") as batch:
        batch.drop_column("position")
        batch.drop_column("waiting")
