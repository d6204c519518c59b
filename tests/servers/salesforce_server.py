"""A local Salesforce stand-in: the REST endpoints the connector uses, as documented.

It follows /work/shared/contracts/salesforce.md: bearer auth (401 ``INVALID_SESSION_ID``),
``GET …/query?q=`` for a small SOQL subset (fields, relationship fields such as
``Owner.Email``, one level of child subqueries such as ``(SELECT … FROM Contacts)``, WHERE
with AND/OR/NOT, = != < <= > >= LIKE, ORDER BY, LIMIT) paged by ``nextRecordsUrl`` in
batches set by ``Sforce-Query-Options: batchSize``, Task create (201), Account update (204,
404), Task upsert by external id (201 created, 200 updated, 300 several matches, 404 for a
field that is not an External ID), JSON-array error bodies, field validation (unknown
fields, picklists, dates, references), ``Sforce-Limit-Info: api-usage=N/M`` on every
answer, and programmable trouble::

    with run_salesforce_server("00Dtoken") as sf:
        acct = sf.add_account("Acme", Seats_Licensed__c=400)
        sf.drop_next_response(match="PATCH")       # write, then hang up
        sf.exhaust_api_limit()                      # 403 REQUEST_LIMIT_EXCEEDED from now on
        ...

All state is in memory; one lock serializes requests.
"""

from __future__ import annotations

import contextlib
import itertools
import json
import re
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

__all__ = ["FakeRequest", "FakeSalesforce", "SoqlError", "run_salesforce_server"]

_PREFIX = {"Account": "001", "Contact": "003", "User": "005", "Task": "00T"}
_OBJECT_BY_PREFIX = {prefix: name for name, prefix in _PREFIX.items()}
_STANDARD_FIELDS: dict[str, dict[str, str]] = {
    "Account": {
        "Id": "id",
        "Name": "string",
        "AnnualRevenue": "double",
        "BillingCountry": "string",
        "Industry": "string",
        "OwnerId": "reference",
        "CreatedDate": "datetime",
        "LastModifiedDate": "datetime",
    },
    "Contact": {
        "Id": "id",
        "AccountId": "reference",
        "Email": "email",
        "FirstName": "string",
        "LastName": "string",
        "Name": "string",
        "Title": "string",
        "MailingCountry": "string",
        "OwnerId": "reference",
        "CreatedDate": "datetime",
        "LastModifiedDate": "datetime",
    },
    "User": {
        "Id": "id",
        "Name": "string",
        "Email": "email",
        "Username": "string",
        "IsActive": "boolean",
    },
    "Task": {
        "Id": "id",
        "Subject": "string",
        "Description": "textarea",
        "ActivityDate": "date",
        "Priority": "picklist",
        "Status": "picklist",
        "WhatId": "reference",
        "WhoId": "reference",
        "OwnerId": "reference",
        "IsClosed": "boolean",
        "CompletedDateTime": "datetime",
        "CreatedDate": "datetime",
        "LastModifiedDate": "datetime",
    },
}
_READ_ONLY = {"Id", "CreatedDate", "LastModifiedDate", "IsClosed", "CompletedDateTime", "Name@Contact"}
_PICKLISTS = {
    ("Task", "Status"): ("Not Started", "In Progress", "Completed", "Waiting on someone else", "Deferred"),
    ("Task", "Priority"): ("High", "Normal", "Low"),
}
_LIMITS = {("Task", "Subject"): 255, ("Task", "Description"): 32_000}
# (object, reference field) → target object; relationship name is the field minus "Id".
_LOOKUPS = {
    ("Account", "OwnerId"): "User",
    ("Contact", "AccountId"): "Account",
    ("Contact", "OwnerId"): "User",
    ("Task", "OwnerId"): "User",
    ("Task", "WhatId"): "Account",
    ("Task", "WhoId"): "Contact",
}
# (parent object, child relationship) → (child object, field pointing at the parent).
_CHILDREN = {("Account", "Contacts"): ("Contact", "AccountId"), ("Account", "Tasks"): ("Task", "WhatId")}
_DEFAULT_CODES = {
    400: "INVALID_INPUT",
    401: "INVALID_SESSION_ID",
    403: "INSUFFICIENT_ACCESS",
    404: "NOT_FOUND",
    500: "UNKNOWN_EXCEPTION",
    503: "SERVER_UNAVAILABLE",
}


def sf_datetime(moment: datetime) -> str:
    """Salesforce's dateTime format: ``2026-11-23T07:00:00.000+0000``."""
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.") + f"{moment.microsecond // 1000:03d}+0000"


def _now() -> datetime:
    return datetime.now(UTC)


@dataclass(frozen=True)
class FakeRequest:
    """A request as the fake received it."""

    method: str
    path: str
    query: dict[str, list[str]]
    headers: dict[str, str]
    body: Any


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


class SalesforceError(Exception):
    """Raised by route handlers; becomes a JSON-array error body."""

    def __init__(self, status: int, code: str, message: str, fields: list[str] | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.body: Any = [{"message": message, "errorCode": code, **({"fields": fields} if fields is not None else {})}]


class SoqlError(SalesforceError):
    """A query the fake cannot parse or whose fields do not exist."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(400, code, message)


# -- SOQL subset ---------------------------------------------------------------------------

_TOKEN = re.compile(
    r"""\s*(?:
        (?P<string>'(?:\\.|[^'\\])*')
      | (?P<datetime>\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(?:\.\d+)?(?:Z|[+-]\d{2}:?\d{2}))
      | (?P<date>\d{4}-\d{2}-\d{2})
      | (?P<number>-?\d+(?:\.\d+)?)
      | (?P<op><=|>=|!=|<>|=|<|>)
      | (?P<punct>[(),])
      | (?P<name>[A-Za-z_][A-Za-z0-9_]*(?:\.[A-Za-z_][A-Za-z0-9_]*)*)
    )""",
    re.VERBOSE,
)
_ESCAPES = {"n": "\n", "r": "\r", "t": "\t", "b": "\b", "f": "\f", '"': '"', "'": "'", "\\": "\\"}
_KEYWORDS = {"SELECT", "FROM", "WHERE", "AND", "OR", "NOT", "LIKE", "ORDER", "BY", "ASC", "DESC", "LIMIT", "NULLS"}


@dataclass
class _Query:
    fields: list[str]
    children: list[_Query]
    object: str
    where: Any
    order_by: tuple[str, bool] | None
    limit: int | None


class _Parser:
    def __init__(self, text: str) -> None:
        self.text = text
        self.tokens: list[tuple[str, Any]] = []
        pos = 0
        while pos < len(text):
            if text[pos:].strip() == "":
                break
            match = _TOKEN.match(text, pos)
            if match is None:
                raise SoqlError("MALFORMED_QUERY", f"unexpected token at {text[pos : pos + 20]!r}")
            kind = match.lastgroup or ""
            raw = match.group(kind)
            value: Any = raw
            if kind == "string":
                value = re.sub(r"\\(.)", lambda m: _ESCAPES.get(m[1], m[1]), raw[1:-1])
            elif kind == "datetime":
                value = datetime.fromisoformat(raw.replace("Z", "+00:00"))
            elif kind == "date":
                value = date.fromisoformat(raw)
            elif kind == "number":
                value = float(raw)
            elif kind == "name" and raw.upper() in _KEYWORDS:
                kind, value = "keyword", raw.upper()
            elif kind == "name" and raw.lower() in ("null", "true", "false"):
                kind, value = "literal", {"null": None, "true": True, "false": False}[raw.lower()]
            self.tokens.append((kind, value))
            pos = match.end()
        self.pos = 0

    def peek(self, kind: str, value: Any = None) -> bool:
        if self.pos >= len(self.tokens):
            return False
        k, v = self.tokens[self.pos]
        return k == kind and (value is None or v == value)

    def take(self, kind: str, value: Any = None) -> Any:
        if not self.peek(kind, value):
            found = self.tokens[self.pos][1] if self.pos < len(self.tokens) else "end of query"
            raise SoqlError("MALFORMED_QUERY", f"expecting {value or kind}, found {found!r} in: {self.text}")
        self.pos += 1
        return self.tokens[self.pos - 1][1]

    def query(self) -> _Query:
        self.take("keyword", "SELECT")
        fields: list[str] = []
        children: list[_Query] = []
        while True:
            if self.peek("punct", "("):
                self.take("punct", "(")
                children.append(self.query())
                self.take("punct", ")")
            else:
                fields.append(self.take("name"))
            if not self.peek("punct", ","):
                break
            self.take("punct", ",")
        self.take("keyword", "FROM")
        obj = self.take("name")
        where = None
        if self.peek("keyword", "WHERE"):
            self.take("keyword", "WHERE")
            where = self.disjunction()
        order_by = None
        if self.peek("keyword", "ORDER"):
            self.take("keyword", "ORDER")
            self.take("keyword", "BY")
            name = self.take("name")
            descending = False
            if self.peek("keyword", "ASC") or self.peek("keyword", "DESC"):
                descending = self.take("keyword") == "DESC"
            order_by = (name, descending)
        limit = None
        if self.peek("keyword", "LIMIT"):
            self.take("keyword", "LIMIT")
            limit = int(self.take("number"))
        return _Query(fields, children, obj, where, order_by, limit)

    def disjunction(self) -> Any:
        terms = [self.conjunction()]
        while self.peek("keyword", "OR"):
            self.take("keyword", "OR")
            terms.append(self.conjunction())
        return ("or", terms) if len(terms) > 1 else terms[0]

    def conjunction(self) -> Any:
        terms = [self.negation()]
        while self.peek("keyword", "AND"):
            self.take("keyword", "AND")
            terms.append(self.negation())
        return ("and", terms) if len(terms) > 1 else terms[0]

    def negation(self) -> Any:
        if self.peek("keyword", "NOT"):
            self.take("keyword", "NOT")
            return ("not", self.negation())
        if self.peek("punct", "("):
            self.take("punct", "(")
            inner = self.disjunction()
            self.take("punct", ")")
            return inner
        name = self.take("name")
        if self.peek("keyword", "LIKE"):
            self.take("keyword", "LIKE")
            return ("cmp", name, "LIKE", self.take("string"))
        op = self.take("op")
        for kind in ("string", "datetime", "date", "number", "literal"):
            if self.peek(kind):
                return ("cmp", name, "!=" if op == "<>" else op, self.take(kind))
        raise SoqlError("MALFORMED_QUERY", f"expecting a value after {name} {op} in: {self.text}")

    def parse(self) -> _Query:
        query = self.query()
        if self.pos != len(self.tokens):
            raise SoqlError("MALFORMED_QUERY", f"unexpected {self.tokens[self.pos][1]!r} in: {self.text}")
        return query


def _coerce(value: Any, literal: Any) -> Any:
    """The stored ``value`` in the literal's type, or None when it has no such form."""
    if value is None:
        return None
    try:
        if isinstance(literal, datetime):
            return datetime.fromisoformat(str(value).replace("+0000", "+00:00").replace("Z", "+00:00"))
        if isinstance(literal, date):
            return date.fromisoformat(str(value)[:10])
        if isinstance(literal, bool):
            return bool(value)
        if isinstance(literal, float):
            return float(value)
    except ValueError:
        return None
    return str(value).lower()


def _matches(op: str, value: Any, literal: Any) -> bool:
    if op == "LIKE":
        pattern = "".join(".*" if c == "%" else "." if c == "_" else re.escape(c) for c in str(literal))
        return value is not None and re.fullmatch(pattern, str(value), re.IGNORECASE | re.DOTALL) is not None
    if literal is None:
        return (value is None) == (op == "=")
    left = _coerce(value, literal)
    right = literal.lower() if isinstance(literal, str) else literal
    if left is None:
        return op == "!="
    comparisons: dict[str, Callable[[Any, Any], bool]] = {
        "=": lambda a, b: a == b,
        "!=": lambda a, b: a != b,
        "<": lambda a, b: a < b,
        "<=": lambda a, b: a <= b,
        ">": lambda a, b: a > b,
        ">=": lambda a, b: a >= b,
    }
    return comparisons[op](left, right)


class FakeSalesforce:
    """State and behaviour of the fake; reach it through ``run_salesforce_server``.

    Attributes:
        url: The instance URL to give the connector (``http://127.0.0.1:PORT``).
        records: Records by object (``Account``, ``Contact``, ``User``, ``Task``), then Id.
        requests: Every request received, in order.
        api_used, api_max: The org's daily API usage, sent as ``Sforce-Limit-Info``.
        child_batch_size: Child subquery rows returned inline before paging.
    """

    def __init__(self, token: str, *, touchpoint_fields: bool = True) -> None:
        self._lock = threading.Lock()
        self.token = token
        self.url = ""
        self.api_used = 0
        self.api_max = 15_000
        self.child_batch_size = 200
        self.records: dict[str, dict[str, dict[str, Any]]] = {name: {} for name in _PREFIX}
        self.requests: list[FakeRequest] = []
        self._fields = {name: dict(fields) for name, fields in _STANDARD_FIELDS.items()}
        self._external_ids: dict[str, set[str]] = {name: set() for name in _PREFIX}
        self._lookups = dict(_LOOKUPS)
        self._trouble: list[_Trouble] = []
        self._cursors: dict[str, list[dict[str, Any]]] = {}
        self._ids = itertools.count(1)
        if touchpoint_fields:
            for name in ("Seats_Licensed__c", "Seats_Active__c"):
                self.add_field("Account", name, kind="double")
            self.add_field("Account", "Renewal_Date__c", kind="date")
            self.add_field("Task", "Touchpoint_Key__c", external_id=True)

    @property
    def tasks(self) -> dict[str, dict[str, Any]]:
        """Task records by Id."""
        return self.records["Task"]

    @property
    def accounts(self) -> dict[str, dict[str, Any]]:
        """Account records by Id."""
        return self.records["Account"]

    # -- seeding and control --------------------------------------------------------------

    def add_field(
        self, obj: str, name: str, *, kind: str = "string", external_id: bool = False, lookup: str | None = None
    ) -> None:
        """Define a custom field (``kind``: string, double, date, datetime, boolean, reference)."""
        with self._lock:
            self._fields[obj][name] = "reference" if lookup else kind
            if external_id:
                self._external_ids[obj].add(name)
            if lookup:
                self._lookups[(obj, name)] = lookup

    def add_user(self, email: str, /, *, name: str = "", active: bool = True) -> str:
        """Create a User; returns its Id."""
        return self._insert("User", {"Email": email, "Name": name or email, "Username": email, "IsActive": active})

    def add_account(self, name: str, /, *, owner_id: str | None = None, **fields: Any) -> str:
        """Create an Account; unknown custom fields are defined from the values' types."""
        return self._insert("Account", {"Name": name, "OwnerId": owner_id, **fields})

    def add_contact(self, email: str | None, /, *, account_id: str, name: str = "", **fields: Any) -> str:
        """Create a Contact of ``account_id``."""
        first, _, last = name.partition(" ")
        return self._insert(
            "Contact",
            {"Email": email, "AccountId": account_id, "FirstName": first, "LastName": last, "Name": name, **fields},
        )

    def add_task(self, **fields: Any) -> str:
        """Create a Task directly (as a person would), skipping uniqueness checks."""
        return self._insert("Task", {"Status": "Not Started", "Priority": "Normal", **fields})

    def complete_task(self, task_id: str, *, at: datetime | None = None) -> None:
        """Mark a Task completed, as a person would."""
        moment = at or _now()
        with self._lock:
            task = self.records["Task"][task_id]
            task.update(
                Status="Completed",
                IsClosed=True,
                CompletedDateTime=sf_datetime(moment),
                LastModifiedDate=sf_datetime(moment),
            )

    def exhaust_api_limit(self) -> None:
        """Use up the org's daily API requests: 403 ``REQUEST_LIMIT_EXCEEDED`` from now on."""
        with self._lock:
            self.api_used = self.api_max

    def reset_api_limit(self) -> None:
        """Start a fresh day of API requests."""
        with self._lock:
            self.api_used = 0

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
            headers: Extra response headers.
            body: JSON body (or ``str``/``bytes`` verbatim); default a one-error array.
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

    # -- storage --------------------------------------------------------------------------

    def _new_id(self, obj: str) -> str:
        return f"{_PREFIX[obj]}{next(self._ids):012d}AAA"

    def _insert(self, obj: str, fields: Mapping[str, Any]) -> str:
        with self._lock:
            moment = sf_datetime(_now())
            record: dict[str, Any] = {"CreatedDate": moment, "LastModifiedDate": moment}
            for name, value in fields.items():
                if name not in self._fields[obj]:
                    self._fields[obj][name] = (
                        "double" if isinstance(value, int | float) and not isinstance(value, bool) else "string"
                    )
                record[name] = self._stored(obj, name, value)
            record["Id"] = self._new_id(obj)
            if obj == "Task":
                record["IsClosed"] = record.get("Status") == "Completed"
            self.records[obj][record["Id"]] = record
            return str(record["Id"])

    def _stored(self, obj: str, name: str, value: Any) -> Any:
        kind = self._fields[obj].get(name)
        if value is None:
            return None
        if kind == "double":
            return float(value)
        if isinstance(value, datetime):
            return sf_datetime(value)
        if isinstance(value, date):
            return value.isoformat()
        return value

    # -- request handling -----------------------------------------------------------------

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
        where = f"{method} {unquote(parts.path)}"
        with self._lock:
            slow = self._take("slow", where)
        if slow is not None:
            time.sleep(slow.seconds)
        with self._lock:
            try:
                body = json.loads(raw) if raw else None
            except ValueError:
                body = ...
            query = parse_qs(parts.query, keep_blank_values=True)
            lowered = {k.lower(): v for k, v in headers.items()}
            self.requests.append(FakeRequest(method, unquote(parts.path), query, dict(headers), body))
            failure = self._take("fail", where)
            if failure is not None:
                reply = _Reply(
                    failure.status,
                    failure.body
                    if failure.body is not None
                    else [
                        {
                            "message": f"Injected failure {failure.status}",
                            "errorCode": _DEFAULT_CODES.get(failure.status, "UNKNOWN_EXCEPTION"),
                        }
                    ],
                    dict(failure.headers),
                )
            else:
                reply = self._serve(method, parts.path, query, lowered, body)
                if self._take("drop", where) is not None:
                    return None
            reply.headers.setdefault("Sforce-Limit-Info", f"api-usage={self.api_used}/{self.api_max}")
            return reply

    def _serve(
        self, method: str, raw_path: str, query: dict[str, list[str]], headers: Mapping[str, str], body: Any
    ) -> _Reply:
        if headers.get("authorization") != f"Bearer {self.token}":
            return _Reply(401, [{"message": "Session expired or invalid", "errorCode": "INVALID_SESSION_ID"}])
        if self.api_used >= self.api_max:
            return _Reply(403, [{"message": "TotalRequests Limit exceeded.", "errorCode": "REQUEST_LIMIT_EXCEEDED"}])
        self.api_used += 1
        if body is ...:
            return _Reply(400, [{"message": "Unexpected character in JSON body", "errorCode": "JSON_PARSER_ERROR"}])
        try:
            return self._route(method, raw_path.rstrip("/"), query, headers, body)
        except SalesforceError as error:
            return _Reply(error.status, error.body)

    def _route(
        self, method: str, path: str, query: dict[str, list[str]], headers: Mapping[str, str], body: Any
    ) -> _Reply:
        match = re.fullmatch(r"/services/data/v(?P<version>\d+\.\d)(?P<rest>/.*)?", path)
        if match is None:
            raise SalesforceError(404, "NOT_FOUND", "The requested resource does not exist")
        version, rest = match["version"], match["rest"] or ""
        parts = [unquote(p) for p in rest.split("/") if p]
        if parts == ["query"] and method == "GET":
            soql = (query.get("q") or [""])[0]
            return self._query(version, soql, headers)
        if len(parts) == 2 and parts[0] == "query" and method == "GET":
            return self._query_more(version, parts[1], headers)
        if len(parts) == 2 and parts[0] == "sobjects" and method == "POST":
            return self._create(version, parts[1], body)
        if len(parts) == 3 and parts[0] == "sobjects" and method == "PATCH":
            return self._update(parts[1], parts[2], body)
        if len(parts) == 4 and parts[0] == "sobjects" and method == "PATCH":
            return self._upsert(version, parts[1], parts[2], parts[3], body)
        raise SalesforceError(404, "NOT_FOUND", "The requested resource does not exist")

    # -- query ----------------------------------------------------------------------------

    def _batch_size(self, headers: Mapping[str, str]) -> int:
        options = headers.get("sforce-query-options", "")
        found = re.search(r"batchSize=(\d+)", options)
        return max(200, min(2000, int(found[1]))) if found else 2000

    def _check_field(self, obj: str, path: str) -> None:
        parts = path.split(".")
        current = obj
        for relationship in parts[:-1]:
            ref = relationship[:-3] + "__c" if relationship.endswith("__r") else relationship + "Id"
            target = self._lookups.get((current, ref))
            if target is None:
                raise SoqlError(
                    "INVALID_FIELD",
                    f"Didn't understand relationship '{relationship}' in field path. If you are attempting "
                    "to use a custom relationship, be sure to append the '__r' after the custom "
                    "relationship name.",
                )
            current = target
        if parts[-1] not in self._fields[current]:
            raise SoqlError(
                "INVALID_FIELD",
                f"No such column '{parts[-1]}' on entity '{current}'. If you are attempting to use a "
                "custom field, be sure to append the '__c' after the custom field name. Please "
                "reference your WSDL or the describe call for the appropriate names.",
            )

    def _check_query(self, q: _Query, obj: str) -> None:
        if obj not in self._fields:
            raise SoqlError("INVALID_TYPE", f"sObject type '{obj}' is not supported.")
        for path in q.fields:
            self._check_field(obj, path)

        def walk(cond: Any) -> None:
            if cond is None:
                return
            if cond[0] in ("and", "or"):
                for term in cond[1]:
                    walk(term)
            elif cond[0] == "not":
                walk(cond[1])
            else:
                self._check_field(obj, cond[1])

        walk(q.where)
        if q.order_by:
            self._check_field(obj, q.order_by[0])

    def _value(self, obj: str, record: Mapping[str, Any], path: str) -> Any:
        current_obj, current = obj, record
        parts = path.split(".")
        for relationship in parts[:-1]:
            ref = relationship[:-3] + "__c" if relationship.endswith("__r") else relationship + "Id"
            target_id = current.get(ref)
            current_obj = self._lookups[(current_obj, ref)]
            target = self.records[current_obj].get(target_id) if target_id else None
            if target is None:
                return None
            current = target
        return current.get(parts[-1])

    def _test(self, obj: str, record: Mapping[str, Any], cond: Any) -> bool:
        if cond is None:
            return True
        if cond[0] == "and":
            return all(self._test(obj, record, c) for c in cond[1])
        if cond[0] == "or":
            return any(self._test(obj, record, c) for c in cond[1])
        if cond[0] == "not":
            return not self._test(obj, record, cond[1])
        _, path, op, literal = cond
        return _matches(op, self._value(obj, record, path), literal)

    def _attributes(self, version: str, obj: str, record_id: str) -> dict[str, str]:
        return {"type": obj, "url": f"/services/data/v{version}/sobjects/{obj}/{record_id}"}

    def _shape(
        self,
        version: str,
        obj: str,
        record: Mapping[str, Any],
        q: _Query,
        children: Mapping[str, Mapping[str, list[dict[str, Any]]]] | None = None,
    ) -> dict[str, Any]:
        row: dict[str, Any] = {"attributes": self._attributes(version, obj, record["Id"])}
        for path in q.fields:
            parts = path.split(".")
            if len(parts) == 1:
                row[path] = record.get(path)
                continue
            ref = parts[0][:-3] + "__c" if parts[0].endswith("__r") else parts[0] + "Id"
            target_obj = self._lookups[(obj, ref)]
            target = self.records[target_obj].get(record.get(ref) or "")
            if target is None:
                row[parts[0]] = None
                continue
            nested = row.get(parts[0]) or {"attributes": self._attributes(version, target_obj, target["Id"])}
            nested[parts[1]] = self._value(target_obj, target, ".".join(parts[1:]))
            row[parts[0]] = nested
        for child in q.children:
            rows = (children or {}).get(child.object, {}).get(record["Id"], [])
            row[child.object] = self._children(version, obj, rows, child)
        return row

    def _child_index(self, obj: str, child: _Query) -> dict[str, list[dict[str, Any]]]:
        """The child rows of a subquery by parent Id, filtered and ordered."""
        child_obj, parent_field = _CHILDREN[(obj, child.object)]
        index: dict[str, list[dict[str, Any]]] = {}
        for row in self.records[child_obj].values():
            if row.get(parent_field) and self._test(child_obj, row, child.where):
                index.setdefault(row[parent_field], []).append(row)
        return {parent: self._ordered(child_obj, rows, child) for parent, rows in index.items()}

    def _children(self, version: str, obj: str, rows: list[dict[str, Any]], child: _Query) -> Any:
        child_obj = _CHILDREN[(obj, child.object)][0]
        if not rows:
            return None
        shaped = [self._shape(version, child_obj, r, child) for r in rows]
        first = shaped[: self.child_batch_size]
        result: dict[str, Any] = {
            "totalSize": len(shaped),
            "done": len(shaped) <= self.child_batch_size,
            "records": first,
        }
        if not result["done"]:
            cursor = f"01g{next(self._ids):012d}"
            self._cursors[cursor] = shaped
            result["nextRecordsUrl"] = f"/services/data/v{version}/query/{cursor}-{self.child_batch_size}"
        return result

    def _ordered(self, obj: str, rows: list[dict[str, Any]], q: _Query) -> list[dict[str, Any]]:
        if q.order_by:
            path, descending = q.order_by

            def key(r: Mapping[str, Any]) -> tuple[int, str]:
                value = self._value(obj, r, path)
                if isinstance(value, float | int):
                    return (1, f"{value:030.6f}")
                return (0, "") if value is None else (1, str(value))

            rows = sorted(rows, key=key, reverse=descending)
        return rows[: q.limit] if q.limit is not None else rows

    def _query(self, version: str, soql: str, headers: Mapping[str, str]) -> _Reply:
        if not soql:
            raise SoqlError("MALFORMED_QUERY", "A query string has to be specified")
        q = _Parser(soql).parse()
        self._check_query(q, q.object)
        for child in q.children:
            if (q.object, child.object) not in _CHILDREN:
                raise SoqlError(
                    "INVALID_TYPE",
                    f"Didn't understand relationship '{child.object}' in FROM part of query call.",
                )
            self._check_query(child, _CHILDREN[(q.object, child.object)][0])
        rows = [r for r in self.records[q.object].values() if self._test(q.object, r, q.where)]
        rows = self._ordered(q.object, rows, q)
        children = {child.object: self._child_index(q.object, child) for child in q.children}
        shaped = [self._shape(version, q.object, r, q, children) for r in rows]
        cursor = f"01g{next(self._ids):012d}"
        self._cursors[cursor] = shaped
        return self._page(version, cursor, 0, self._batch_size(headers))

    def _page(self, version: str, cursor: str, start: int, size: int) -> _Reply:
        rows = self._cursors[cursor]
        end = start + size
        result: dict[str, Any] = {"totalSize": len(rows), "done": end >= len(rows), "records": rows[start:end]}
        if not result["done"]:
            result["nextRecordsUrl"] = f"/services/data/v{version}/query/{cursor}-{end}"
        else:
            self._cursors.pop(cursor, None)
        return _Reply(200, result)

    def _query_more(self, version: str, locator: str, headers: Mapping[str, str]) -> _Reply:
        cursor, _, start = locator.rpartition("-")
        if cursor not in self._cursors or not start.isdigit():
            raise SalesforceError(400, "INVALID_QUERY_LOCATOR", "invalid query locator")
        return self._page(version, cursor, int(start), self._batch_size(headers))

    # -- writes ---------------------------------------------------------------------------

    def _validate(self, obj: str, body: Any) -> dict[str, Any]:
        if not isinstance(body, dict):
            raise SalesforceError(400, "JSON_PARSER_ERROR", "The request body must be a JSON object")
        fields: dict[str, Any] = {}
        for name, value in body.items():
            kind = self._fields[obj].get(name)
            if kind is None:
                raise SalesforceError(400, "INVALID_FIELD", f"No such column '{name}' on sobject of type {obj}", [])
            if name in _READ_ONLY or f"{name}@{obj}" in _READ_ONLY:
                raise SalesforceError(
                    400,
                    "INVALID_FIELD_FOR_INSERT_UPDATE",
                    f"Unable to create/update fields: {name}. Please check the security settings of this "
                    "field and verify that it is read/write for your profile or permission set.",
                    [name],
                )
            if value is not None:
                self._check_value(obj, name, kind, value)
            fields[name] = self._stored(obj, name, value)
        return fields

    def _check_value(self, obj: str, name: str, kind: str, value: Any) -> None:
        def bad(code: str, message: str) -> SalesforceError:
            return SalesforceError(400, code, message, [name])

        if kind == "double" and (isinstance(value, bool) or not isinstance(value, int | float)):
            raise bad("JSON_PARSER_ERROR", f"Cannot deserialize instance of double from {value!r} for {name}")
        if kind == "date":
            try:
                date.fromisoformat(str(value))
            except ValueError:
                raise bad("JSON_PARSER_ERROR", f"Cannot deserialize instance of date from {value!r}") from None
        if kind == "picklist" and value not in _PICKLISTS[(obj, name)]:
            raise bad(
                "INVALID_OR_NULL_FOR_RESTRICTED_PICKLIST",
                f"{name}: bad value for restricted picklist field: {value}",
            )
        if kind == "reference":
            target = self._lookups.get((obj, name))
            if not isinstance(value, str) or _OBJECT_BY_PREFIX.get(value[:3]) is None:
                raise bad("MALFORMED_ID", f"{name}: id value of incorrect type: {value}")
            if target is not None and value not in self.records[target] and name != "WhatId":
                raise bad("INVALID_CROSS_REFERENCE_KEY", f"invalid cross reference id: {value}")
            if name == "WhatId" and not any(value in self.records[o] for o in self.records):
                raise bad("INVALID_CROSS_REFERENCE_KEY", f"invalid cross reference id: {value}")
        limit = _LIMITS.get((obj, name))
        if limit is not None and len(str(value)) > limit:
            raise bad("STRING_TOO_LONG", f"{name}: data value too large: {str(value)[:40]}... (max length={limit})")

    def _write(self, obj: str, record: dict[str, Any], fields: Mapping[str, Any]) -> None:
        moment = _now()
        record.update(fields)
        record["LastModifiedDate"] = sf_datetime(moment)
        if obj == "Task":
            closed = record.get("Status") == "Completed"
            if closed and not record.get("IsClosed"):
                record["CompletedDateTime"] = sf_datetime(moment)
            record["IsClosed"] = closed

    def _new(self, obj: str, fields: Mapping[str, Any]) -> dict[str, Any]:
        moment = sf_datetime(_now())
        record: dict[str, Any] = {"Id": self._new_id(obj), "CreatedDate": moment}
        if obj == "Task":
            record.update(Status="Not Started", Priority="Normal", IsClosed=False)
        self._write(obj, record, fields)
        self.records[obj][record["Id"]] = record
        return record

    def _create(self, version: str, obj: str, body: Any) -> _Reply:
        if obj not in self._fields:
            raise SalesforceError(404, "NOT_FOUND", "The requested resource does not exist")
        fields = self._validate(obj, body)
        self._check_unique(obj, fields)
        record = self._new(obj, fields)
        return _Reply(201, {"id": record["Id"], "success": True, "errors": []})

    def _check_unique(self, obj: str, fields: Mapping[str, Any], *, except_id: str | None = None) -> None:
        for name in self._external_ids[obj]:
            value = fields.get(name)
            for record in self.records[obj].values():
                if value and record["Id"] != except_id and record.get(name) == value:
                    raise SalesforceError(
                        400,
                        "DUPLICATE_VALUE",
                        f"duplicate value found: {name} duplicates value on record with id: {record['Id']}",
                        [name],
                    )

    def _update(self, obj: str, record_id: str, body: Any) -> _Reply:
        if obj not in self._fields or record_id not in self.records[obj]:
            raise SalesforceError(404, "NOT_FOUND", "The requested resource does not exist")
        fields = self._validate(obj, body)
        self._check_unique(obj, fields, except_id=record_id)
        self._write(obj, self.records[obj][record_id], fields)
        return _Reply(204)

    def _upsert(self, version: str, obj: str, ext_field: str, value: str, body: Any) -> _Reply:
        if obj not in self._fields or ext_field not in self._external_ids[obj]:
            raise SalesforceError(404, "NOT_FOUND", "The requested resource does not exist")
        fields = self._validate(obj, body)
        if ext_field in fields and fields[ext_field] != value:
            raise SalesforceError(
                400, "INVALID_FIELD", f"{ext_field} in the body does not match the URL's value", [ext_field]
            )
        found = [r for r in self.records[obj].values() if r.get(ext_field) == value]
        if len(found) > 1:
            return _Reply(300, [f"/services/data/v{version}/sobjects/{obj}/{r['Id']}" for r in found])
        if found:
            self._write(obj, found[0], fields)
            return _Reply(200, {"id": found[0]["Id"], "success": True, "errors": [], "created": False})
        record = self._new(obj, {**fields, ext_field: value})
        return _Reply(201, {"id": record["Id"], "success": True, "errors": [], "created": True})


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
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
            reply = _Reply(500, [{"message": f"fake server bug: {exc!r}", "errorCode": "UNKNOWN_EXCEPTION"}])
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
            self.send_header("Content-Type", "application/json;charset=UTF-8")
        for name, value in reply.headers.items():
            self.send_header(name, value)
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        self.wfile.write(payload)


class _Server(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, fake: FakeSalesforce) -> None:
        super().__init__(("127.0.0.1", 0), _Handler)
        self.fake = fake

    def handle_error(self, request: Any, client_address: Any) -> None:
        pass  # clients hanging up (timeouts in tests) are expected


@contextlib.contextmanager
def run_salesforce_server(token: str = "00D-test-token", **options: Any) -> Iterator[FakeSalesforce]:
    """Run a fake Salesforce org on a free port of 127.0.0.1 for the ``with`` block.

    Args:
        token: The only bearer token accepted.
        **options: Passed to ``FakeSalesforce`` (``touchpoint_fields=False`` for an org
            without the custom fields Touchpoint's defaults use).
    """
    fake = FakeSalesforce(token, **options)
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
