"""The API as a process of its own (`touchpoint api`): a uvicorn application factory.

uvicorn calls `create_process_app` in each of its worker processes (`--workers N`). The
Temporal client needs a running event loop, so the factory returns `ApiProcess`, which builds the
real app (`touchpoint.api.ops.build_app`) at lifespan startup with a lazy client: the API starts
and answers `/healthz` while Temporal or the store are still down, and `/readyz` says which.
The store's schema is brought up to date in the background, with back-off.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import MutableMapping
from typing import Any

from touchpoint.api.ops import Receive, Scope, Send
from touchpoint.config import Settings, load_settings, mask_url

log = logging.getLogger("touchpoint.api")


class ApiProcess:
    """An ASGI app that builds the API when the server starts and serves it afterwards."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.app: Any = None
        self._engine: Any = None
        self._migrating: asyncio.Task[Any] | None = None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            await self._lifespan(receive, send)
            return
        if self.app is None:  # only before lifespan startup, which uvicorn runs first
            raise RuntimeError("the API was called before its startup")
        await self.app(scope, receive, send)

    async def _lifespan(self, receive: Receive, send: Send) -> None:
        while True:
            message: MutableMapping[str, Any] = await receive()
            if message["type"] == "lifespan.startup":
                try:
                    await self.start()
                except Exception as exc:
                    log.exception("the API could not start")
                    await send({"type": "lifespan.startup.failed", "message": str(exc)})
                    return
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                await self.stop()
                await send({"type": "lifespan.shutdown.complete"})
                return

    async def start(self) -> None:
        """Connect (lazily), open the store, build the app, migrate in the background."""
        from touchpoint.api.ops import build_app
        from touchpoint.connection import connect, with_backoff
        from touchpoint.store import make_engine, migrate, session_factory

        client = await connect(self.settings, lazy=True)
        self._engine = make_engine(self.settings.db_url)
        sessions = session_factory(self._engine)
        migrated = asyncio.Event()
        self.app = build_app(self.settings, client, sessions, schema_ready=migrated.is_set)

        async def upgrade() -> None:
            await asyncio.to_thread(migrate, self._engine)
            migrated.set()

        self._migrating = asyncio.create_task(with_backoff(f"the store at {mask_url(self.settings.db_url)}", upgrade))
        log.info("API ready on %s (Temporal %s, namespace %r)", self.settings.api_bind, self.settings.temporal_address, self.settings.temporal_namespace)

    async def stop(self) -> None:
        """Stop migrating, release the store, flush traces."""
        from touchpoint.observability.tracing import shutdown_tracing

        if self._migrating is not None:
            self._migrating.cancel()
        if self._engine is not None:
            self._engine.dispose()
        shutdown_tracing()


def create_process_app() -> ApiProcess:
    """uvicorn's factory: settings from the environment, checked; telemetry for this process."""
    from touchpoint.observability import setup_process

    settings = load_settings()
    settings.require_secret_key()
    setup_process(settings, role="api")
    return ApiProcess(settings)
