"""What activities need, built once per worker: the store, the email and CRM backends, settings."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

from sqlalchemy.orm import Session, sessionmaker

from touchpoint.config import Settings
from touchpoint.store import GroupWriter, is_sqlite, make_engine, migrate, session_factory, write_tx

T = TypeVar("T")


def crm_backend_from(settings: Settings, name: str) -> Any:
    """A HubSpot or Salesforce backend with the credentials of ``settings``."""
    from touchpoint.crm import make_crm_backend

    return make_crm_backend(
        name,  # type: ignore[arg-type]
        hubspot_token=settings.hubspot_token.get_secret_value() if settings.hubspot_token else None,
        hubspot_url=settings.hubspot_url,
        salesforce_instance_url=settings.salesforce_instance_url,
        salesforce_access_token=settings.salesforce_access_token.get_secret_value()
        if settings.salesforce_access_token
        else None,
    )


@dataclass
class Deps:
    """Shared resources of one worker's activities."""

    settings: Settings
    sessions: sessionmaker[Session]
    template_cache: Path
    email_backend: Any = None
    crm_backend: Any = None
    client: Any = None
    """The worker's Temporal client (set by `build_worker`): activities that start or signal
    account workflows (sweeps, health recompute, CRM sync) use it."""
    _locks: dict[str, asyncio.Lock] = field(default_factory=dict)
    _ai: Any = None
    _writer: GroupWriter | None = None

    def ai_backend(self) -> Any:
        """The AI backend `TOUCHPOINT_AI_BACKEND` names, made on first use (None for `none`).

        Raises:
            AiConfigurationError: a key or the model is missing (the draft's run pauses).
        """
        if self._ai is None and self.settings.ai_backend != "none":
            from touchpoint.ai.base import backend_from_settings

            self._ai = backend_from_settings(self.settings)
        return self._ai

    @classmethod
    def from_settings(cls, settings: Settings, *, email_backend: Any = None, crm_backend: Any = None) -> Deps:
        """Connect the store (migrating it) and choose the backends the settings name."""
        engine = make_engine(settings.db_url)
        migrate(engine)
        if email_backend is None:
            from touchpoint.email.backends import make_backend

            email_backend = make_backend(
                settings.email_backend,
                outbox_dir=settings.outbox_dir,
                sendgrid_api_key=settings.sendgrid_api_key.get_secret_value() if settings.sendgrid_api_key else None,
                sendgrid_url=settings.sendgrid_url,
                smtp_url=settings.smtp_url.get_secret_value() if settings.smtp_url else None,
            )
        if crm_backend is None and settings.crm_backend != "local":
            crm_backend = crm_backend_from(settings, settings.crm_backend)
        return cls(
            settings=settings,
            sessions=session_factory(engine),
            template_cache=settings.home / "templates",
            email_backend=email_backend,
            crm_backend=crm_backend,
        )

    async def db(self, work: Callable[[Session], T]) -> T:
        """Run ``work`` in one committed write transaction, in a thread (the store is synchronous).

        On SQLite the worker's writes go through one `GroupWriter` thread: ``work`` runs in a
        transaction it may share with other activities' writes (group commit; a unit that raises
        is rolled back alone), and this returns once that transaction has committed.
        """
        if is_sqlite(self.sessions):
            if self._writer is None:
                self._writer = GroupWriter(self.sessions)
            return await asyncio.wrap_future(self._writer.submit(work))

        def run() -> T:
            # BEGIN IMMEDIATE on SQLite: a deferred transaction that reads and then writes fails at
            # once with "database is locked" when another writer holds the lock.
            with write_tx(self.sessions) as session:
                return work(session)

        return await asyncio.to_thread(run)

    async def read(self, work: Callable[[Session], T]) -> T:
        """Run read-only ``work`` in a thread, in a plain transaction: on SQLite in WAL mode
        readers do not queue behind the writer's lock as `db` transactions do."""

        def run() -> T:
            with self.sessions() as session:
                return work(session)

        return await asyncio.to_thread(run)

    async def close(self) -> None:
        """Release backends and the engine."""
        if self._writer is not None:
            writer, self._writer = self._writer, None
            await asyncio.to_thread(writer.close)
        closer = getattr(self.crm_backend, "aclose", None)
        if closer:
            await closer()
        if self._ai is not None:
            self._ai.close()
        bind = self.sessions.kw.get("bind")
        if bind is not None:
            bind.dispose()
