"""`GET /playbooks/{id}/analytics`: the object `touchpoint analytics --json` prints."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from datetime import date
from typing import Annotated, Any

from fastapi import APIRouter, HTTPException, Path, Query
from sqlalchemy.orm import Session, sessionmaker

from touchpoint.analytics import NotFound, PlaybookAnalytics, playbook_analytics
from touchpoint.api.models import PLAYBOOK_PATTERN


def make_router(sessions: sessionmaker[Session], responses: Callable[..., dict[int | str, dict[str, Any]]], guarded: Sequence[Any], denied: tuple[int, ...]) -> APIRouter:
    """The analytics route, guarded like the app's others (``responses`` documents its errors)."""
    router = APIRouter(dependencies=list(guarded))

    @router.get("/playbooks/{playbook_id}/analytics", response_model=PlaybookAnalytics, responses=responses(*denied, 404, 422))
    def get_analytics(
        playbook_id: Annotated[str, Path(min_length=1, max_length=100, pattern=PLAYBOOK_PATTERN, description="The playbook's id.")],
        since: Annotated[date | None, Query(description="Only runs enrolled on or after this day (YYYY-MM-DD, UTC).")] = None,
        version: Annotated[str | None, Query(min_length=1, max_length=200, description="Only runs of this version.")] = None,
    ) -> PlaybookAnalytics:
        """Funnels, email engagement and uplift of the playbook's runs (as `touchpoint analytics`):
        404 for a playbook never deployed or a version it never had."""
        with sessions() as s:
            try:
                return playbook_analytics(s, playbook_id, since=since, version=version)
            except NotFound as exc:
                raise HTTPException(404, str(exc)) from None

    return router
