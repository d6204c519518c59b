"""A run's holdout arm and split variants, for analytics.

`held_out` marks a run that a playbook's `holdout` chose (it takes no steps); `enrolled_until` is
the end of the holdout's `for` window (goal rates compare the arms within it); `variant` names the
`split` variants the run took (``step=variant``, comma-separated).

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-05
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0008"
down_revision: str | None = "0007"
branch_labels: str | None = None
depends_on: str | None = None


def upgrade() -> None:
    """Add `held_out`, `enrolled_until` and `variant` to `runs`."""
    with op.batch_alter_table("runs") as batch:
        batch.add_column(sa.Column("held_out", sa.Boolean(), nullable=False, server_default=sa.false()))
        batch.add_column(sa.Column("enrolled_until", sa.DateTime(timezone=True), nullable=True))
        batch.add_column(sa.Column("variant", sa.String(), nullable=True))


def downgrade() -> None:
    """Drop the three columns."""
    with op.batch_alter_table("runs") as batch:
        batch.drop_column("variant")
        batch.drop_column("enrolled_until")
        batch.drop_column("held_out")
