"""A local HubSpot stand-in: the CRM v3/v4 endpoints the connector uses, as documented.

It follows /work/shared/contracts/hubspot.md: bearer auth (401 ``INVALID_AUTHENTICATION``),
string-only property values, companies paged with ``after`` cursors and embedded contact
associations (truncated, continued by the v4 associations API), contact batch reads, tasks
and notes with required ``hs_timestamp`` and typed associations (192, 190), a unique
``touchpoint_key`` property (a repeated value is refused with 409 ``CONFLICT``; reads by
``?idProperty=``), owners, task search, ``X-HubSpot-RateLimit-*`` headers on every answer,
and programmable trouble::

    with run_hubspot_server("pat-test") as hs:
        company = hs.add_company("Acme", seats_licensed=400)
        hs.drop_next_response(match="POST /crm/v3/objects/tasks")  # write, then hang up
        hs.fail_next(429, headers={"Retry-After": "3"})
        hs.rate_limit_every(3)  # or: every third request answers 429 (a storm of rate limits)
        ...
        assert len(hs.tasks) == 1

All state is in memory; one lock serializes requests, so tests may read the dicts after a
call has returned.
"""

from __future__ import annotations

import contextlib
import json
import re
import threading
import time
import uuid
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

__all__ = ["FakeHubSpot", "FakeRecord", "FakeRequest", "run_hubspot_server"]

OBJECT_TYPES = ("companies", "contacts", "tasks", "notes")
READ_ONLY = frozenset({"hs_object_id", "createdate", "hs_createdate", "hs_lastmodifieddate"})
# HUBSPOT_DEFINED association type ids the fake accepts, by (from type, to type).
ASSOCIATION_TYPES = {
    ("tasks", "companies"): 192,
    ("tasks", "contacts"): 204,
    ("notes", "companies"): 190,
    ("notes", "contacts"): 202,
}
_BASE_PROPERTIES = {
    "companies": {
        "name",
        "domain",
        "country",
        "timezone",
        "hubspot_owner_id",
        "renewal_date",
        "arr",
        "seats_licensed",
        "seats_active",
        "numberofemployees",
    },
    "contacts": {"email", "firstname", "lastname", "hs_language", "hs_timezone", "country", "touchpoint_role"},
    "tasks": {
        "hs_timestamp",
        "hs_task_subject",
        "hs_task_body",
        "hs_task_status",
        "hs_task_priority",
        "hs_task_type",
        "hs_task_completion_date",
        "hubspot_owner_id",
    },
    "notes": {"hs_timestamp", "hs_note_body", "hubspot_owner_id", "hs_attachment_ids"},
}
_ENUMS = {
    ("tasks", "hs_task_status"): {"NOT_STARTED", "IN_PROGRESS", "WAITING", "COMPLETED", "DEFERRED"},
    ("tasks", "hs_task_priority"): {"LOW", "MEDIUM", "HIGH"},
    ("tasks", "hs_task_type"): {"EMAIL", "CALL", "TODO"},
}
_CATEGORIES = {
    400: "VALIDATION_ERROR",
    401: "INVALID_AUTHENTICATION",
    403: "MISSING_SCOPES",
    404: "OBJECT_NOT_FOUND",
    409: "CONFLICT",
    414: "URI_TOO_LONG",
}
_SINGULAR = {"companies": "company", "contacts": "contact", "tasks": "task", "notes": "note"}
_SEARCH_OPERATORS = {"EQ", "NEQ", "LT", "LTE", "GT", "GTE", "IN", "NOT_IN", "HAS_PROPERTY", "NOT_HAS_PROPERTY"}
_INTERVAL_MS = 10_000


def _iso(moment: datetime) -> str:
    return moment.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _now() -> datetime:
    return datetime.now(UTC)


@dataclass
class FakeRecord:
    """One CRM object: string properties and associations (to type → {id: typeId})."""

    id: str
    properties: dict[str, str]
    created_at: datetime
    updated_at: datetime
    associations: dict[str, dict[str, int]] = field(default_factory=dict)


@dataclass(frozen=True)
class FakeRequest:
    """A request as the fake received it."""

    method: str
    path: str
    query: dict[str, list[str]]
    headers: dict[str, str]
    body: Any


@dataclass
class _Owner:
    id: str
    email: str
    first_name: str
    last_name: str
    user_id: int


@dataclass
class _Trouble:
    kind: str  # "fail" | "drop" | "slow"
    times: int
    match: str | None
    status: int = 0
    headers: dict[str, str] = field(default_factory=dict)
    body: Any = None
    seconds: float = 0.0


@dataclass
class _Reply:
    status: int
    body: Any = None
    headers: dict[str, str] = field(default_factory=dict)


class HubSpotError(Exception):
    """Raised by route handlers; becomes a HubSpot error body."""

    def __init__(self, status: int, message: str, *, errors: list[dict[str, Any]] | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.errors = errors or []


def _invalid(message: str, *, prop: str, code: str) -> HubSpotError:
    return HubSpotError(
        400,
        f"Property values were not valid: {message}",
        errors=[{"message": message, "code": code, "context": {"propertyName": [prop]}}],
    )


def _comparable(value: str) -> float | str:
    try:
        return float(value)
    except ValueError:
        pass
    try:
        return datetime.fromisoformat(value.replace("Z", "+00:00")).timestamp() * 1000
    except ValueError:
        return value.lower()


def _sort_key(value: str | None) -> tuple[int, float, str]:
    comparable = _comparable(value or "")
    if isinstance(comparable, float):
        return (0, comparable, "")
    return (1, 0.0, comparable)


def _compare(left: str | None, operator: str, right: Any, values: list[Any]) -> bool:
    if operator == "HAS_PROPERTY":
        return bool(left)
    if operator == "NOT_HAS_PROPERTY":
        return not left
    if left is None or left == "":
        return operator in ("NEQ", "NOT_IN")
    if operator in ("IN", "NOT_IN"):
        found = str(left).lower() in {str(v).lower() for v in values}
        return found if operator == "IN" else not found
    a, b = _comparable(left), _comparable(str(right))
    if type(a) is not type(b):
        return operator == "NEQ"
    if operator == "EQ":
        return a == b
    if operator == "NEQ":
        return a != b
    ordered: dict[str, Callable[[Any, Any], bool]] = {
        "LT": lambda x, y: x < y,
        "LTE": lambda x, y: x <= y,
        "GT": lambda x, y: x > y,
        "GTE": lambda x, y: x >= y,
    }
    return ordered[operator](a, b)


class FakeHubSpot:
    """State and behaviour of the fake; reach it through ``run_hubspot_server``.

    Attributes:
        url: Base URL to give the connector (``http://127.0.0.1:PORT``).
        companies, contacts, tasks, notes: Records by id.
        requests: Every request received, in order.
        duplicate_status: Status answered for a repeated unique value (409; 400 also seen).
        embedded_association_limit: Contacts embedded per company before paging.
    """

    def __init__(self, token: str, *, unique_property: str | None = "touchpoint_key") -> None:
        self._lock = threading.Lock()
        self.token = token
        self.url = ""
        self.unique_property = unique_property
        self.duplicate_status = 409
        self.embedded_association_limit = 100
        self.daily_limit = 250_000
        self.interval_limit = 190
        self.enforce_interval_limit = False
        self.companies: dict[str, FakeRecord] = {}
        self.contacts: dict[str, FakeRecord] = {}
        self.tasks: dict[str, FakeRecord] = {}
        self.notes: dict[str, FakeRecord] = {}
        self.owners: dict[str, _Owner] = {}
        self.requests: list[FakeRequest] = []
        self._properties = {kind: set(names) for kind, names in _BASE_PROPERTIES.items()}
        self._unique: dict[str, set[str]] = {kind: set() for kind in OBJECT_TYPES}
        if unique_property:
            for kind in ("tasks", "notes"):
                self.add_property(kind, unique_property, unique=True)
        self._trouble: list[_Trouble] = []
        self._daily_used = 0
        self._window: list[float] = []
        self._next_id = 1_000_000
        self._every: tuple[int, str] | None = None
        self._calls = 0
        self.rate_limited = 0

    # -- seeding and control --------------------------------------------------------------

    def add_property(self, object_type: str, name: str, *, unique: bool = False) -> None:
        """Define a property (``POST /crm/v3/properties/{type}``; ``hasUniqueValue``)."""
        with self._lock:
            self._properties[object_type].add(name)
            if unique:
                self._unique[object_type].add(name)

    def add_company(self, name: str, /, **properties: object) -> str:
        """Create a company; values are stored as HubSpot stores them (strings)."""
        return self._seed("companies", {"name": name, **properties})

    def add_contact(self, email: str, /, *, company_id: str | None = None, **properties: object) -> str:
        """Create a contact, associated with ``company_id`` when given."""
        contact_id = self._seed("contacts", {"email": email, **properties})
        if company_id is not None:
            self.associate(company_id, contact_id)
        return contact_id

    def associate(self, company_id: str, contact_id: str) -> None:
        """Associate a company and a contact (types 280 and 279)."""
        with self._lock:
            self.companies[company_id].associations.setdefault("contacts", {})[contact_id] = 280
            self.contacts[contact_id].associations.setdefault("companies", {})[company_id] = 279

    def add_owner(self, email: str, /, *, first_name: str = "", last_name: str = "") -> str:
        """Create an owner (a HubSpot user); returns its owner ``id``."""
        with self._lock:
            owner_id = self._new_id()
            self.owners[owner_id] = _Owner(owner_id, email, first_name, last_name, int(owner_id) + 7)
            return owner_id

    def add_task(self, **properties: object) -> str:
        """Create a task directly (as a person in HubSpot would), skipping validation."""
        return self._seed("tasks", properties)

    def complete_task(self, task_id: str, *, at: datetime | None = None) -> None:
        """Mark a task completed, as a person clicking "complete" would."""
        moment = at or _now()
        with self._lock:
            task = self.tasks[task_id]
            task.properties["hs_task_status"] = "COMPLETED"
            task.properties["hs_task_completion_date"] = _iso(moment)
            task.properties["hs_lastmodifieddate"] = _iso(moment)
            task.updated_at = moment

    def fail_next(
        self,
        status: int,
        *,
        headers: Mapping[str, str] | None = None,
        body: Any = None,
        times: int = 1,
        match: str | None = None,
    ) -> None:
        """Answer the next ``times`` matching requests with ``status`` instead of serving them.

        Args:
            status: HTTP status to answer.
            headers: Extra response headers (e.g. ``Retry-After``).
            body: JSON body (or ``str``/``bytes`` verbatim); default a HubSpot error body.
            times: How many requests fail.
            match: Only requests whose ``"METHOD /path"`` contains this string.
        """
        with self._lock:
            self._trouble.append(_Trouble("fail", times, match, status, dict(headers or {}), body))

    def drop_next_response(self, *, times: int = 1, match: str | None = None) -> None:
        """Serve the next matching requests (writes happen), then hang up without answering."""
        with self._lock:
            self._trouble.append(_Trouble("drop", times, match))

    def slow_next(self, seconds: float, *, times: int = 1, match: str | None = None) -> None:
        """Wait ``seconds`` before serving the next matching requests."""
        with self._lock:
            self._trouble.append(_Trouble("slow", times, match, seconds=seconds))

    def rate_limit_every(self, n: int, *, retry_after: str = "0.05") -> None:
        """Answer every ``n``-th request (counting all, refused ones too) with 429
        ``TEN_SECONDLY_ROLLING`` and ``Retry-After: retry_after``; 0 stops it.

        `rate_limited` counts the requests refused this way.
        """
        with self._lock:
            self._every = (n, retry_after) if n > 0 else None
            self._calls = 0

    def exhaust_daily_limit(self) -> None:
        """Use up the daily allowance: every request answers 429 ``DAILY``."""
        with self._lock:
            self._daily_used = self.daily_limit

    def set_interval_limit(self, per_ten_seconds: int) -> None:
        """Enforce a ``TEN_SECONDLY_ROLLING`` limit (off by default)."""
        with self._lock:
            self.interval_limit = per_ten_seconds
            self.enforce_interval_limit = True
            self._window.clear()

    # -- request handling -----------------------------------------------------------------

    def _new_id(self) -> str:
        self._next_id += 1
        return str(self._next_id)

    def _seed(self, object_type: str, properties: Mapping[str, object]) -> str:
        with self._lock:
            record_id = self._new_id()
            moment = _now()
            props = {k: ("" if v is None else str(v)) for k, v in properties.items()}
            self._properties[object_type].update(props)
            props.setdefault("hs_lastmodifieddate", _iso(moment))
            self._store(object_type)[record_id] = FakeRecord(record_id, props, moment, moment)
            return record_id

    def _store(self, object_type: str) -> dict[str, FakeRecord]:
        stores = {"companies": self.companies, "contacts": self.contacts, "tasks": self.tasks, "notes": self.notes}
        if object_type not in stores:
            raise HubSpotError(400, f"Unable to infer object type from: {object_type}")
        return stores[object_type]

    def _take(self, kind: str, where: str) -> _Trouble | None:
        for trouble in self._trouble:
            if trouble.kind == kind and (trouble.match is None or trouble.match in where):
                trouble.times -= 1
                if trouble.times <= 0:
                    self._trouble.remove(trouble)
                return trouble
        return None

    def respond(self, method: str, target: str, headers: Mapping[str, str], raw: bytes) -> _Reply | None:
        """Serve one request; None means "hang up without answering"."""
        parts = urlsplit(target)
        path = unquote(parts.path)
        where = f"{method} {path}"
        with self._lock:
            slow = self._take("slow", where)
        if slow is not None:
            time.sleep(slow.seconds)
        with self._lock:
            try:
                body = json.loads(raw) if raw else None
            except ValueError:
                body = None
            query = parse_qs(parts.query, keep_blank_values=True)
            self.requests.append(FakeRequest(method, path, query, dict(headers), body))
            failure = self._take("fail", where)
            self._calls += 1
            if failure is None and self._every is not None and self._calls % self._every[0] == 0:
                self.rate_limited += 1
                failure = _Trouble("fail", 1, None, 429, {"Retry-After": self._every[1]})
            if failure is not None:
                reply = self._failure_reply(failure)
            else:
                reply = self._serve(method, path, query, headers, body, raw)
                if self._take("drop", where) is not None:
                    return None
            reply.headers.update(self._limit_headers())
            reply.headers.setdefault("X-HubSpot-Correlation-Id", str(uuid.uuid4()))
            return reply

    def _failure_reply(self, failure: _Trouble) -> _Reply:
        body = failure.body
        if body is None:
            if failure.status == 429:
                body = self._rate_limit_body("TEN_SECONDLY_ROLLING")
            else:
                body = self._error_body(
                    HubSpotError(failure.status, f"Injected failure {failure.status}"),
                )
        return _Reply(failure.status, body, dict(failure.headers))

    def _limit_headers(self) -> dict[str, str]:
        used = len(self._window)
        return {
            "X-HubSpot-RateLimit-Daily": str(self.daily_limit),
            "X-HubSpot-RateLimit-Daily-Remaining": str(max(0, self.daily_limit - self._daily_used)),
            "X-HubSpot-RateLimit-Interval-Milliseconds": str(_INTERVAL_MS),
            "X-HubSpot-RateLimit-Max": str(self.interval_limit),
            "X-HubSpot-RateLimit-Remaining": str(max(0, self.interval_limit - used)),
        }

    @staticmethod
    def _error_body(error: HubSpotError) -> dict[str, Any]:
        body: dict[str, Any] = {
            "status": "error",
            "message": error.message,
            "correlationId": str(uuid.uuid4()),
            "category": _CATEGORIES.get(error.status, "INTERNAL_ERROR"),
        }
        if error.errors:
            body["errors"] = error.errors
        return body

    @staticmethod
    def _rate_limit_body(policy: str) -> dict[str, Any]:
        limit = "daily" if policy == "DAILY" else policy.lower()
        return {
            "status": "error",
            "message": f"You have reached your {limit} limit.",
            "errorType": "RATE_LIMIT",
            "correlationId": str(uuid.uuid4()),
            "policyName": policy,
        }

    def _serve(
        self,
        method: str,
        path: str,
        query: dict[str, list[str]],
        headers: Mapping[str, str],
        body: Any,
        raw: bytes,
    ) -> _Reply:
        auth = {k.lower(): v for k, v in headers.items()}.get("authorization", "")
        if auth != f"Bearer {self.token}":
            return _Reply(
                401,
                self._error_body(
                    HubSpotError(
                        401,
                        "Authentication credentials not found. This API supports OAuth 2.0 "
                        "authentication and you can find more details at "
                        "https://developers.hubspot.com/docs/methods/auth/oauth-overview",
                    )
                ),
            )
        if self._daily_used >= self.daily_limit:
            return _Reply(429, self._rate_limit_body("DAILY"))
        clock = time.monotonic()
        self._window = [t for t in self._window if clock - t < _INTERVAL_MS / 1000]
        if self.enforce_interval_limit and len(self._window) >= self.interval_limit:
            return _Reply(429, self._rate_limit_body("TEN_SECONDLY_ROLLING"))
        self._window.append(clock)
        self._daily_used += 1
        if raw and body is None:
            return _Reply(400, self._error_body(HubSpotError(400, "Invalid input JSON on line 1")))
        try:
            return self._route(method, path, query, body)
        except HubSpotError as error:
            return _Reply(error.status, self._error_body(error))

    def _route(self, method: str, path: str, query: dict[str, list[str]], body: Any) -> _Reply:
        path = path.rstrip("/") or "/"
        routes: list[tuple[str, str, Callable[..., _Reply]]] = [
            ("GET", r"/crm/v3/owners", self._list_owners),
            ("GET", r"/crm/v3/owners/(?P<owner_id>[^/]+)", self._get_owner),
            ("POST", r"/crm/v3/objects/(?P<kind>\w+)/search", self._search),
            ("POST", r"/crm/v3/objects/(?P<kind>\w+)/batch/read", self._batch_read),
            ("GET", r"/crm/v3/objects/(?P<kind>\w+)", self._list),
            ("POST", r"/crm/v3/objects/(?P<kind>\w+)", self._create),
            ("GET", r"/crm/v3/objects/(?P<kind>\w+)/(?P<record_id>[^/]+)", self._get),
            ("PATCH", r"/crm/v3/objects/(?P<kind>\w+)/(?P<record_id>[^/]+)", self._update),
            ("GET", r"/crm/v4/objects/(?P<kind>\w+)/(?P<record_id>[^/]+)/associations/(?P<to>\w+)", self._v4),
        ]
        known_path = False
        for route_method, pattern, handler in routes:
            match = re.fullmatch(pattern, path)
            if match is None:
                continue
            known_path = True
            if route_method == method:
                return handler(query=query, body=body, **match.groupdict())
        if known_path:
            raise HubSpotError(405, f"Method {method} not allowed on {path}")
        raise HubSpotError(404, f"Unknown path {path}")

    # -- objects --------------------------------------------------------------------------

    @staticmethod
    def _list_param(query: dict[str, list[str]], name: str) -> list[str]:
        # Documented comma-separated; the SDK repeats the key: accept both.
        return [item for value in query.get(name, []) for item in value.split(",") if item]

    def _public(
        self,
        kind: str,
        record: FakeRecord,
        properties: list[str],
        associations: Sequence[str] = (),
    ) -> dict[str, Any]:
        shown: dict[str, str | None] = {
            "hs_object_id": record.id,
            "createdate": _iso(record.created_at),
            "hs_lastmodifieddate": record.properties.get("hs_lastmodifieddate", _iso(record.updated_at)),
        }
        for name in properties:
            if name in self._properties[kind] or name in record.properties:
                shown[name] = record.properties.get(name)
        result: dict[str, Any] = {
            "id": record.id,
            "properties": shown,
            "createdAt": _iso(record.created_at),
            "updatedAt": _iso(record.updated_at),
            "archived": False,
        }
        embedded: dict[str, Any] = {}
        for to in associations:
            linked = list(record.associations.get(to, {}))
            if not linked:
                continue
            limit = self.embedded_association_limit
            entry: dict[str, Any] = {
                "results": [{"id": i, "type": f"{_SINGULAR[kind]}_to_{_SINGULAR[to]}"} for i in linked[:limit]]
            }
            if len(linked) > limit:
                entry["paging"] = {"next": {"after": str(limit), "link": f"?after={limit}"}}
            embedded[to] = entry
        if embedded:
            result["associations"] = embedded
        return result

    def _list(self, *, kind: str, query: dict[str, list[str]], body: Any) -> _Reply:
        store = self._store(kind)
        limit = int((query.get("limit") or ["10"])[0])
        if not 1 <= limit <= 100:
            raise HubSpotError(400, f"limit must be between 1 and 100; got {limit}")
        start = int((query.get("after") or ["0"])[0] or 0)
        ids = list(store)
        page = ids[start : start + limit]
        props = self._list_param(query, "properties")
        assoc = self._list_param(query, "associations")
        result: dict[str, Any] = {"results": [self._public(kind, store[i], props, assoc) for i in page]}
        if start + limit < len(ids):
            after = str(start + limit)
            result["paging"] = {"next": {"after": after, "link": f"{self.url}/crm/v3/objects/{kind}?after={after}"}}
        return _Reply(200, result)

    def _find(self, kind: str, record_id: str, query: dict[str, list[str]]) -> FakeRecord:
        store = self._store(kind)
        id_property = (query.get("idProperty") or [""])[0]
        if id_property and id_property != "hs_object_id":
            if id_property not in self._unique[kind]:
                raise HubSpotError(
                    400,
                    f"The property {id_property!r} is not a unique identifier property for {kind}",
                    errors=[
                        {
                            "message": f"{id_property} is not a unique property",
                            "code": "INVALID_ID_PROPERTY",
                            "context": {"propertyName": [id_property]},
                        }
                    ],
                )
            for record in store.values():
                if record.properties.get(id_property) == record_id:
                    return record
            raise HubSpotError(404, f"Object not found.  objectId are usually numeric. ({id_property}={record_id})")
        if record_id not in store:
            raise HubSpotError(404, f"Object not found.  objectId are usually numeric. (id={record_id})")
        return store[record_id]

    def _get(self, *, kind: str, record_id: str, query: dict[str, list[str]], body: Any) -> _Reply:
        record = self._find(kind, record_id, query)
        return _Reply(
            200,
            self._public(kind, record, self._list_param(query, "properties"), self._list_param(query, "associations")),
        )

    def _check_properties(self, kind: str, properties: Any, *, creating: bool) -> dict[str, str]:
        if not isinstance(properties, dict):
            raise HubSpotError(400, "Invalid input JSON: properties must be an object")
        for name, value in properties.items():
            if name in READ_ONLY:
                raise _invalid(f'Property "{name}" is read-only', prop=name, code="READ_ONLY_VALUE")
            if name not in self._properties[kind]:
                raise _invalid(f'Property "{name}" does not exist', prop=name, code="PROPERTY_DOESNT_EXIST")
            if not isinstance(value, str):
                # The wire format is strings (contract §1); the fake is strict to catch mistakes.
                raise _invalid(
                    f'Property "{name}" must be a string; got {type(value).__name__} {value!r}',
                    prop=name,
                    code="INVALID_TYPE",
                )
            allowed = _ENUMS.get((kind, name))
            if allowed and value and value not in allowed:
                raise _invalid(
                    f"{value} was not one of the allowed options: {sorted(allowed)}",
                    prop=name,
                    code="INVALID_OPTION",
                )
            if name == "hubspot_owner_id" and value and value not in self.owners:
                raise _invalid(f"{value} is not a valid owner id", prop=name, code="INVALID_OWNER_ID")
        if creating and kind in ("tasks", "notes") and not properties.get("hs_timestamp"):
            raise _invalid('Property "hs_timestamp" is required', prop="hs_timestamp", code="REQUIRED_PROPERTY")
        return dict(properties)

    def _check_unique(self, kind: str, properties: Mapping[str, str], *, except_id: str | None = None) -> None:
        for name in self._unique[kind]:
            value = properties.get(name)
            if not value:
                continue
            for record in self._store(kind).values():
                if record.id != except_id and record.properties.get(name) == value:
                    raise HubSpotError(
                        self.duplicate_status,
                        f"A {kind[:-1]} with {name}={value} already exists. Existing ID: {record.id}",
                    )

    def _create(self, *, kind: str, query: dict[str, list[str]], body: Any) -> _Reply:
        if not isinstance(body, dict):
            raise HubSpotError(400, "Invalid input JSON: expected an object")
        properties = self._check_properties(kind, body.get("properties", {}), creating=True)
        links: dict[str, dict[str, int]] = {}
        for association in body.get("associations") or []:
            to_id = str((association.get("to") or {}).get("id", ""))
            for spec in association.get("types") or []:
                type_id = spec.get("associationTypeId")
                targets = [to for (src, to), tid in ASSOCIATION_TYPES.items() if src == kind and tid == type_id]
                if spec.get("associationCategory") != "HUBSPOT_DEFINED" or not targets:
                    raise HubSpotError(400, f"Invalid association type {type_id} for {kind}")
                if to_id not in self._store(targets[0]):
                    raise HubSpotError(400, f"No {targets[0][:-1]} with id {to_id} exists to associate with")
                links.setdefault(targets[0], {})[to_id] = type_id
        self._check_unique(kind, properties)
        moment = _now()
        record = FakeRecord(self._new_id(), properties, moment, moment, links)
        record.properties.setdefault("hs_lastmodifieddate", _iso(moment))
        self._store(kind)[record.id] = record
        return _Reply(201, self._public(kind, record, list(properties)))

    def _update(self, *, kind: str, record_id: str, query: dict[str, list[str]], body: Any) -> _Reply:
        record = self._find(kind, record_id, query)
        if not isinstance(body, dict):
            raise HubSpotError(400, "Invalid input JSON: expected an object")
        properties = self._check_properties(kind, body.get("properties", {}), creating=False)
        self._check_unique(kind, properties, except_id=record.id)
        moment = _now()
        record.properties.update(properties)
        record.properties["hs_lastmodifieddate"] = _iso(moment)
        record.updated_at = moment
        return _Reply(200, self._public(kind, record, list(properties)))

    def _batch_read(self, *, kind: str, query: dict[str, list[str]], body: Any) -> _Reply:
        if not isinstance(body, dict) or not isinstance(body.get("inputs"), list):
            raise HubSpotError(400, "Invalid input JSON: inputs is required")
        inputs = body["inputs"]
        if len(inputs) > 100:
            raise HubSpotError(400, f"Batch input limit is 100; got {len(inputs)}")
        store = self._store(kind)
        ids = [str(item.get("id")) for item in inputs]
        missing = [i for i in ids if i not in store]
        moment = _iso(_now())
        result: dict[str, Any] = {
            "status": "COMPLETE",
            "results": [self._public(kind, store[i], list(body.get("properties") or [])) for i in ids if i in store],
            "startedAt": moment,
            "completedAt": moment,
        }
        if missing:
            result["numErrors"] = 1
            result["errors"] = [
                {
                    "status": "error",
                    "category": "OBJECT_NOT_FOUND",
                    "message": f"Could not get some {kind.upper()} objects, they may be deleted or not exist.",
                    "context": {"ids": missing},
                }
            ]
        return _Reply(207 if missing else 200, result)

    def _search(self, *, kind: str, query: dict[str, list[str]], body: Any) -> _Reply:
        if not isinstance(body, dict):
            raise HubSpotError(400, "Invalid input JSON: expected an object")
        groups = body.get("filterGroups") or []
        filters = [f for g in groups for f in g.get("filters", [])]
        if len(groups) > 5 or any(len(g.get("filters", [])) > 6 for g in groups) or len(filters) > 18:
            raise HubSpotError(400, "Too many filters: at most 5 filterGroups, 6 filters each, 18 in all")
        for item in filters:
            if item.get("operator") not in _SEARCH_OPERATORS:
                raise HubSpotError(400, f"Unsupported operator {item.get('operator')!r} in fake")
        limit = int(body.get("limit") or 10)
        if limit > 200:
            raise HubSpotError(400, f"limit must be at most 200; got {limit}")
        after = int(body.get("after") or 0)
        if after >= 10_000:
            raise HubSpotError(400, "Paging is limited to 10,000 results per search; narrow the filters")

        def matches(record: FakeRecord) -> bool:
            def value(name: str) -> str | None:
                if name == "hs_object_id":
                    return record.id
                return record.properties.get(name)

            return not groups or any(
                all(
                    _compare(value(f["propertyName"]), f["operator"], f.get("value"), f.get("values") or [])
                    for f in g.get("filters", [])
                )
                for g in groups
            )

        found = [r for r in self._store(kind).values() if matches(r)]
        sorts = body.get("sorts") or []
        if len(sorts) > 1:
            raise HubSpotError(400, "Only one sort rule is allowed")
        if sorts:
            sort = sorts[0]
            name = sort.get("propertyName", "")
            found.sort(
                key=lambda r: _sort_key(r.properties.get(name)),
                reverse=sort.get("direction") == "DESCENDING",
            )
        page = found[after : after + limit]
        result: dict[str, Any] = {
            "total": len(found),
            "results": [self._public(kind, r, list(body.get("properties") or [])) for r in page],
        }
        if after + limit < len(found):
            result["paging"] = {"next": {"after": str(after + limit)}}
        return _Reply(200, result)

    def _v4(self, *, kind: str, record_id: str, to: str, query: dict[str, list[str]], body: Any) -> _Reply:
        record = self._find(kind, record_id, {})
        limit = int((query.get("limit") or ["500"])[0])
        start = int((query.get("after") or ["0"])[0] or 0)
        linked = list(record.associations.get(to, {}).items())
        page = linked[start : start + limit]
        result: dict[str, Any] = {
            "results": [
                {
                    "toObjectId": int(i),
                    "associationTypes": [{"category": "HUBSPOT_DEFINED", "typeId": t, "label": None}],
                }
                for i, t in page
            ]
        }
        if start + limit < len(linked):
            result["paging"] = {"next": {"after": str(start + limit), "link": f"?after={start + limit}"}}
        return _Reply(200, result)

    # -- owners ---------------------------------------------------------------------------

    def _owner_json(self, owner: _Owner) -> dict[str, Any]:
        moment = _iso(_now())
        return {
            "id": owner.id,
            "email": owner.email,
            "firstName": owner.first_name,
            "lastName": owner.last_name,
            "userId": owner.user_id,
            "userIdIncludingInactive": owner.user_id,
            "type": "PERSON",
            "archived": False,
            "createdAt": moment,
            "updatedAt": moment,
        }

    def _list_owners(self, *, query: dict[str, list[str]], body: Any) -> _Reply:
        email = (query.get("email") or [""])[0].lower()
        limit = int((query.get("limit") or ["100"])[0])
        start = int((query.get("after") or ["0"])[0] or 0)
        owners = [o for o in self.owners.values() if not email or o.email.lower() == email]
        result: dict[str, Any] = {"results": [self._owner_json(o) for o in owners[start : start + limit]]}
        if start + limit < len(owners):
            result["paging"] = {"next": {"after": str(start + limit), "link": f"?after={start + limit}"}}
        return _Reply(200, result)

    def _get_owner(self, *, owner_id: str, query: dict[str, list[str]], body: Any) -> _Reply:
        if owner_id not in self.owners:
            raise HubSpotError(404, f"Owner {owner_id} not found")
        return _Reply(200, self._owner_json(self.owners[owner_id]))


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive, as HubSpot's edge does
    timeout = 10  # idle keep-alive connections close after this
    disable_nagle_algorithm = True  # headers and body go out in two writes: don't wait for ACKs
    server: _Server

    def do_GET(self) -> None:
        self._handle()

    do_POST = do_PATCH = do_PUT = do_DELETE = do_GET

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def _handle(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(length) if length else b""
        try:
            reply = self.server.fake.respond(self.command, self.path, dict(self.headers), raw)
        except Exception as exc:  # a bug in the fake: answer it rather than hang the client
            reply = _Reply(500, {"status": "error", "message": f"fake server bug: {exc!r}"})
        if reply is None:
            self.close_connection = True
            return
        if isinstance(reply.body, bytes):
            payload = reply.body
        elif isinstance(reply.body, str):
            payload = reply.body.encode()
        elif reply.body is None:
            payload = b""
        else:
            payload = json.dumps(reply.body).encode()
        self.send_response(reply.status)
        if payload and "Content-Type" not in reply.headers:
            self.send_header("Content-Type", "application/json;charset=utf-8")
        for name, value in reply.headers.items():
            self.send_header(name, value)
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        self.wfile.write(payload)


class _Server(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, fake: FakeHubSpot) -> None:
        super().__init__(("127.0.0.1", 0), _Handler)
        self.fake = fake

    def handle_error(self, request: Any, client_address: Any) -> None:
        pass  # clients hanging up (timeouts in tests) are expected


@contextlib.contextmanager
def run_hubspot_server(token: str = "pat-test-token", **options: Any) -> Iterator[FakeHubSpot]:
    """Run a fake HubSpot on a free port of 127.0.0.1 for the ``with`` block.

    Args:
        token: The only bearer token accepted.
        **options: Passed to ``FakeHubSpot`` (``unique_property=None`` for a portal
            without the ``touchpoint_key`` property).
    """
    fake = FakeHubSpot(token, **options)
    server = _Server(fake)
    fake.url = f"http://127.0.0.1:{server.server_address[1]}"
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    try:
        yield fake
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)
