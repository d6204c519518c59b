"""Alembic environment: runs Touchpoint's migrations on the connection ``migrate()`` passes in.

There is no alembic.ini and no offline mode: migrations run on start, from ``migrate()``, which
takes the write lock first so that two processes starting at once migrate one after the other.
"""

from __future__ import annotations

from alembic import context
from sqlalchemy.engine import Connection

from touchpoint.store.models import Base


def run_migrations() -> None:
    """Run the pending migrations inside the caller's transaction."""
    connection = context.config.attributes.get("connection")
    if context.is_offline_mode() or not isinstance(connection, Connection):
        raise RuntimeError(
            "Touchpoint's migrations run from the application: call "
            "touchpoint.store.migrate(engine_or_url) (the server and CLI do so on start) "
            "instead of the alembic command line"
        )
    context.configure(connection=connection, target_metadata=Base.metadata)
    with context.begin_transaction():
        context.run_migrations()


run_migrations()
