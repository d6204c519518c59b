"""Which account-workflow step applied an event.

A workflow task that times out after its local activity committed is retried from its start:
the retry finds the event already stored. `applied_by` tells its own earlier attempt (same
token: apply it again, with the events it derived then) from a real duplicate (ignore it).

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-23
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision: str | None = "0002"
branch_labels: str | None = None
depends_on: str | None = None


def upgrade() -> None:
    """Add `events.applied_by`."""
    with op.batch_alter_table("events") as batch:
        batch.add_column(sa.Column("applied_by", sa.String(), nullable=True))


def downgrade() -> None:
    """Drop `events.applied_by`."""
    with op.batch_alter_table("events") as batch:
        batch.drop_column("applied_by")
