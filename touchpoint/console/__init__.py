"""The console: server-rendered pages for CS ops under `/console`, inside the API process.

Pages (`pages`): the overview, a playbook drawn as its journey with the runs at each step
(`diagram`), account search and the account's timeline, tasks by owner, runs. Forms (`actions`):
sign in and out, pause/resume/cancel a run, complete a task. Approvals (`approvals`): the
requests, each recipient's email as it will go, approve (optionally edited) or reject. Sessions and CSRF: `auth`. Reads
go through `touchpoint.store.repo` only; writes take the same paths as the CLI and the JSON API.
No page is in the OpenAPI document, no page runs JavaScript, and the one stylesheet is served
from the package (`static/`), so the console works offline and behind a firewall.
"""

from __future__ import annotations

from fastapi import APIRouter
from sqlalchemy.orm import Session, sessionmaker
from starlette.responses import Response
from temporalio.client import Client

from touchpoint.config import Settings

__all__ = ["console_router"]

STATIC_FILES = {"console.css": "text/css; charset=utf-8"}


def console_router(settings: Settings, client: Client, sessions: sessionmaker[Session]) -> APIRouter:
    """The console's routes, to include in the API app (none of them in the OpenAPI document)."""
    from touchpoint.console.actions import add_actions
    from touchpoint.console.approvals import add_approvals
    from touchpoint.console.core import Console
    from touchpoint.console.pages import add_pages
    from touchpoint.console.views import STATIC

    console = Console(settings, client, sessions)
    router = APIRouter(prefix="/console", include_in_schema=False)
    add_pages(router, console)
    add_actions(router, console)
    add_approvals(router, console)
    assets = {name: (STATIC / name).read_bytes() for name in STATIC_FILES}

    @router.get("/static/{name}")
    def static(name: str) -> Response:
        if name not in assets:
            return Response("no such file", status_code=404, media_type="text/plain")
        return Response(assets[name], media_type=STATIC_FILES[name], headers={"Cache-Control": "public, max-age=3600", "X-Content-Type-Options": "nosniff"})

    return router
