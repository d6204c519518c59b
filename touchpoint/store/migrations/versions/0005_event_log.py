"""The event log per account: `GET /events?account=ID` reads an account's events newest first.

An index on (account_id, at) serves it, and replaces the index on account_id alone (a prefix of
it): quiet events (contract section 9) are written straight to this table by the API, so it
keeps one index fewer to maintain per event.

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-05
"""

from __future__ import annotations

from alembic import op

revision = "0005"
down_revision: str | None = "0004"
branch_labels: str | None = None
depends_on: str | None = None


def upgrade() -> None:
    """Index events by (account_id, at); drop the index on account_id alone."""
    op.create_index("ix_events_account_id_at", "events", ["account_id", "at"])
    op.drop_index("ix_events_account_id", table_name="events")


def downgrade() -> None:
    """Put the index on account_id back and drop the new one."""
    op.create_index("ix_events_account_id", "events", ["account_id"])
    op.drop_index("ix_events_account_id_at", table_name="events")
