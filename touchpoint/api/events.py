"""`POST /events` (one event, or a batch of up to 1,000) and `GET /events` (an account's log).

Contract section 9. One event answers `202 {id, status}` once it is durable: in the store for
a quiet event, in Temporal for any other. A batch (a JSON array) answers `200` with one result
per event, in order (`{id, status: accepted | rejected, reason?}`): a bad event rejects only
itself, a repeated id is accepted and is a no-op, and quiet and listened events each take their
own path (`touchpoint.ingest.send_events`). The document describes an array item as any JSON
value, so that a batch holding a bad event is a valid request (answered 200, that event
rejected) rather than a 422 for all of it.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Annotated, Any

from fastapi import APIRouter, Body, HTTPException, Query
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import ValidationError
from sqlalchemy.orm import Session, sessionmaker
from temporalio.client import Client
from temporalio.service import RPCError

from touchpoint.api.app import error_responses
from touchpoint.api.models import ID_PATTERN, MAX_BATCH, Accepted, EventBody, EventResult, EventView
from touchpoint.deployed import StoreUnavailable
from touchpoint.dsl.runtime import EventIn
from touchpoint.dsl.schema import EVENT_TYPE_RE
from touchpoint.ingest import send_event, send_events
from touchpoint.observability.metrics import EVENTS_ACCEPTED
from touchpoint.store import repo

_BATCH_SCHEMA: dict[str, Any] = {
    "type": "array",
    "maxItems": MAX_BATCH,
    "items": {"description": "An event as `EventBody`; one that is not is rejected alone, in its result."},
    "description": f"A batch of up to {MAX_BATCH} events: answered 200 with one result per event, in order.",
}


def _body_schema() -> dict[str, Any]:
    return {"anyOf": [EventBody.model_json_schema(), _BATCH_SCHEMA]}


def _event_in(body: EventBody) -> EventIn:
    return EventIn(id=body.id, type=body.type, account_id=body.account_id, at=body.at, data=body.data)


def _reason(exc: ValidationError) -> str:
    parts = []
    for error in exc.errors(include_url=False):
        where = ".".join(str(p) for p in error["loc"]) or "event"
        parts.append(f"{where}: {error['msg']}")
    return "; ".join(parts)


def _given_id(item: Any) -> str | None:
    value = item.get("id") if isinstance(item, dict) else None
    return value if isinstance(value, str) and value.strip() and len(value) <= 200 else None


def parse_batch(items: Sequence[Any]) -> tuple[list[EventResult], list[tuple[int, EventIn]]]:
    """One result slot per item (filled for the rejected ones) and the valid events with their index."""
    results: list[EventResult] = []
    valid: list[tuple[int, EventIn]] = []
    for index, item in enumerate(items):
        if not isinstance(item, dict):
            results.append(EventResult(id=None, status="rejected", reason=f"expected an event object, found a JSON {_json_kind(item)}"))
            continue
        try:
            body = EventBody.model_validate(item)
        except ValidationError as exc:
            results.append(EventResult(id=_given_id(item), status="rejected", reason=_reason(exc)))
            continue
        results.append(EventResult(id=body.id, status="accepted"))
        valid.append((index, _event_in(body)))
    return results, valid


def _json_kind(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, (int, float)):
        return "number"
    return "string" if isinstance(value, str) else "array"


def make_router(client: Client, task_queue: str, sessions: sessionmaker[Session], *, guarded: list[Any], denied: tuple[int, ...]) -> APIRouter:
    """The event routes, behind the API's bearer token when it has one (``guarded``)."""
    router = APIRouter()
    unavailable = "The store or Temporal did not answer; nothing was taken: send it again."

    @router.post(
        "/events",
        status_code=202,
        dependencies=guarded,
        response_model=Accepted,
        responses={200: {"model": list[EventResult], "description": "A batch: one result per event, in order."}, **error_responses(400, *denied, 422, 503)},
        openapi_extra={"requestBody": {"required": True, "content": {"application/json": {"schema": _body_schema()}}}},
    )
    async def post_events(body: Annotated[Any, Body()]) -> Any:
        """Accept one event (202), or a JSON array of up to 1,000 (200, one result each); a repeated `id` is a no-op."""
        if isinstance(body, list):
            return await _batch(body)
        if not isinstance(body, dict):
            raise RequestValidationError(
                [{"type": "model_attributes_type", "loc": ("body",), "msg": f"expected an event object or an array of events, found a JSON {_json_kind(body)}", "input": None}]
            )
        try:
            event = EventBody.model_validate(body)
        except ValidationError as exc:
            raise RequestValidationError([{**e, "loc": ("body", *e["loc"])} for e in exc.errors(include_url=False)]) from None
        try:
            event_id = await send_event(client, task_queue, sessions, event.account_id, _event_in(event))
        except (StoreUnavailable, RPCError) as exc:
            raise HTTPException(503, f"{unavailable} ({exc})") from None
        return Accepted(id=event_id)

    async def _batch(items: list[Any]) -> JSONResponse:
        if len(items) > MAX_BATCH:
            raise RequestValidationError(
                [{"type": "too_long", "loc": ("body",), "msg": f"a batch holds at most {MAX_BATCH} events, found {len(items)}: split it", "input": None}]
            )
        results, valid = parse_batch(items)
        try:
            sent = await send_events(client, task_queue, sessions, [event for _, event in valid])
        except StoreUnavailable as exc:
            raise HTTPException(503, f"{unavailable} ({exc})") from None
        for (index, event), outcome in zip(valid, sent, strict=True):
            if outcome.error is None:
                results[index] = EventResult(id=outcome.id, status="accepted")
                EVENTS_ACCEPTED.labels(type=event.type, path="/events").inc()
            else:
                results[index] = EventResult(id=outcome.id, status="rejected", reason=outcome.error)
        return JSONResponse([r.model_dump(mode="json") for r in results], status_code=200)

    @router.get("/events", dependencies=guarded, response_model=list[EventView], responses=error_responses(*denied, 404, 422))
    def list_events(
        account: Annotated[str, Query(min_length=1, max_length=200, pattern=ID_PATTERN, description="The account's id.")],
        event_type: Annotated[str | None, Query(alias="type", max_length=100, pattern=EVENT_TYPE_RE, description="Only events of this type.")] = None,
        limit: Annotated[int, Query(ge=1, le=MAX_BATCH, description="At most this many events (1 to 1,000).")] = 100,
        before: Annotated[
            str | None, Query(min_length=1, max_length=200, description="An event id from a previous page: the events after it (the next page).")
        ] = None,
    ) -> list[EventView]:
        """The account's recorded events, newest first (by `at`, then arrival), quiet ones included.

        An event that reaches the account's workflow is listed once the workflow has applied it.
        """
        with sessions() as s:
            after = None
            if before is not None:
                after = repo.get_event(s, before)
                if after is None or after.account_id != account:
                    raise HTTPException(404, f"no event {before!r} of account {account!r} to continue from")
            rows = repo.event_log(s, account, type=event_type, limit=limit, before=after)
            return [EventView(id=e.id, account_id=e.account_id, type=e.type, at=e.at, data=dict(e.data or {}), received_at=e.received_at) for e in rows]

    return router
