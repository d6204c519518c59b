"""HubSpot's wire format: response shapes, error translation, rate-limit hints, strings.

Response models ignore unknown keys and default every optional one: HubSpot's docs say to
treat every field as optional, and new fields appear without notice.
"""

from __future__ import annotations

import math
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from typing import Any

import httpx
from pydantic import BaseModel, ConfigDict, Field

from touchpoint.crm._http import parse_retry_after
from touchpoint.crm._values import iso_utc, parse_number
from touchpoint.crm.errors import (
    CrmConfigurationError,
    CrmError,
    CrmNotFound,
    CrmRejected,
    CrmTransientError,
)

__all__ = [
    "AssocList",
    "Owner",
    "OwnerPage",
    "Page",
    "Paging",
    "Record",
    "V4Page",
    "next_after",
    "error_from_response",
    "rate_limit_retry_after",
    "to_property_value",
]

PROVIDER = "hubspot"


class _Wire(BaseModel):
    model_config = ConfigDict(extra="ignore")


class _Next(_Wire):
    after: str


class Paging(_Wire):
    next: _Next | None = None


def next_after(paging: Paging | None) -> str | None:
    """The ``after`` cursor of the next page, or None on the last page."""
    return paging.next.after if paging and paging.next else None


class _AssocRef(_Wire):
    id: str


class AssocList(_Wire):
    results: list[_AssocRef] = Field(default_factory=list)
    paging: Paging | None = None


class Record(_Wire):
    id: str
    properties: dict[str, Any] = Field(default_factory=dict)
    associations: dict[str, AssocList] = Field(default_factory=dict)


class Page(_Wire):
    results: list[Record] = Field(default_factory=list)
    paging: Paging | None = None


class _V4Assoc(_Wire):
    toObjectId: int | str


class V4Page(_Wire):
    results: list[_V4Assoc] = Field(default_factory=list)
    paging: Paging | None = None


class Owner(_Wire):
    id: str
    email: str | None = None
    firstName: str | None = None
    lastName: str | None = None

    @property
    def full_name(self) -> str | None:
        """First and last name, or None when HubSpot has neither."""
        return " ".join(p for p in (self.firstName, self.lastName) if p) or None


class OwnerPage(_Wire):
    results: list[Owner] = Field(default_factory=list)
    paging: Paging | None = None


class _ErrorDetail(_Wire):
    message: str | None = None
    code: str | None = None
    # A map of lists in most answers, a plain string ("{missingScopes=[...]}") in some.
    context: Any = None


class _ErrorBody(_Wire):
    message: str | None = None
    category: str | None = None
    subCategory: str | None = None
    correlationId: str | None = None
    errors: list[_ErrorDetail] = Field(default_factory=list)
    policyName: str | None = None
    errorType: str | None = None


def _error_body(response: httpx.Response) -> _ErrorBody:
    try:
        return _ErrorBody.model_validate(response.json())
    except ValueError:
        # Proxies and load balancers answer with HTML or nothing at all.
        return _ErrorBody(message=response.text.strip()[:300] or None)


def _blamed_fields(body: _ErrorBody) -> list[str]:
    names: list[str] = []
    for detail in body.errors:
        if not isinstance(detail.context, dict):
            continue
        for key in ("propertyName", "properties", "property"):
            value = detail.context.get(key)
            if isinstance(value, list):
                names.extend(str(v) for v in value)
            elif isinstance(value, str):
                names.append(value)
    return list(dict.fromkeys(names))


def _seconds_to_utc_midnight(now: datetime) -> float:
    tomorrow = (now.astimezone(UTC) + timedelta(days=1)).replace(hour=0, minute=0, second=0, microsecond=0)
    return (tomorrow - now).total_seconds()


def rate_limit_retry_after(
    response: httpx.Response, *, policy: str | None, now: datetime | None = None
) -> float | None:
    """Seconds to wait after a HubSpot 429, from the best hint available.

    In order: ``Retry-After``; a daily limit (the ``DAILY`` policy, or
    ``X-HubSpot-RateLimit-Daily-Remaining: 0``) waits until the next midnight UTC, an
    approximation since HubSpot resets at midnight in the account's time zone; an exhausted
    interval (``X-HubSpot-RateLimit-Remaining: 0``) waits one
    ``X-HubSpot-RateLimit-Interval-Milliseconds``; else the policy name
    (``TEN_SECONDLY_ROLLING`` 10 s, ``SECONDLY`` 1 s); else None.
    """
    headers = response.headers
    retry = parse_retry_after(headers.get("Retry-After"), now=now)
    if retry is not None:
        return retry
    policy = (policy or "").upper()
    if policy == "DAILY" or headers.get("X-HubSpot-RateLimit-Daily-Remaining") == "0":
        return _seconds_to_utc_midnight(now or datetime.now(UTC))
    interval = parse_number(headers.get("X-HubSpot-RateLimit-Interval-Milliseconds"))
    if headers.get("X-HubSpot-RateLimit-Remaining") == "0" and interval:
        return interval / 1000
    return {"TEN_SECONDLY_ROLLING": 10.0, "SECONDLY": 1.0}.get(policy)


def error_from_response(response: httpx.Response, *, where: str, hint: str = "") -> CrmError:
    """The ``CrmError`` for a HubSpot answer that was not the expected success.

    Args:
        response: HubSpot's answer.
        where: ``METHOD /path`` of the request, quoted in the message.
        hint: What to check, appended to refusals and 404s.
    """
    body = _error_body(response)
    status = response.status_code
    code = body.category or body.errorType
    said = f'"{body.message}"' if body.message else "no message"
    details = [d.message for d in body.errors if d.message and d.message != body.message]
    if details:
        said += " (" + "; ".join(f'"{d}"' for d in details[:5]) + ")"
    message = f"HubSpot answered {status}{' ' + code if code else ''} to {where}: {said}"
    if body.correlationId:
        message += f" [correlationId {body.correlationId}]"
    common: dict[str, Any] = {
        "provider": PROVIDER,
        "status_code": status,
        "code": code,
        "provider_message": body.message,
        "fields": _blamed_fields(body),
    }
    if status == 429:
        retry = rate_limit_retry_after(response, policy=body.policyName)
        wait = f"retry in {retry:.0f} s" if retry is not None else "retry with back-off"
        return CrmTransientError(
            f"{message}. HubSpot's rate limit is reached: {wait}; if this is frequent, "
            "lower the number of workers or buy HubSpot's API limit increase.",
            retry_after=retry,
            **common,
        )
    if status >= 500 or status == 408:
        return CrmTransientError(
            f"{message}. HubSpot had a problem on its side; the call will be retried.",
            retry_after=parse_retry_after(response.headers.get("Retry-After")),
            **common,
        )
    if status == 401:
        return CrmConfigurationError(
            f"{message}. Check HUBSPOT_TOKEN: it must be a current access token of a HubSpot "
            "private app (or OAuth app) installed in this portal.",
            **common,
        )
    if status == 403:
        return CrmConfigurationError(
            f"{message}. The token lacks a scope: grant the app crm.objects.companies.read/"
            "write, crm.objects.contacts.read/write and crm.objects.owners.read, then "
            "reinstall it.",
            **common,
        )
    suffix = f". {hint}" if hint else "."
    if status == 404:
        return CrmNotFound(message + suffix, **common)
    return CrmRejected(message + suffix, **common)


def to_property_value(name: str, value: object) -> str:
    """Encode one value as HubSpot wants every property value: a string.

    None clears the property (``""``); booleans are ``true``/``false``; dates are
    ``YYYY-MM-DD``; datetimes ISO 8601 UTC; lists become ``a;b`` (multiple checkboxes).

    Raises:
        CrmRejected: The value has no string form HubSpot would accept.
    """
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return value
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float | Decimal):
        number = float(value)
        if not math.isfinite(number):
            raise _unencodable(name, value, "a finite number")
        if number.is_integer():
            return str(int(number))
        text = format(value, "f") if isinstance(value, Decimal) else f"{number:.10f}"
        return text.rstrip("0").rstrip(".")
    if isinstance(value, datetime):
        if value.tzinfo is None:
            raise _unencodable(name, value, "a timezone-aware datetime")
        return iso_utc(value)
    if isinstance(value, date):
        return value.isoformat()
    if isinstance(value, list | tuple | set | frozenset):
        return ";".join(to_property_value(name, item) for item in value)
    raise _unencodable(name, value, "a string, number, boolean, date or list")


def _unencodable(name: str, value: object, expected: str) -> CrmRejected:
    return CrmRejected(
        f"HubSpot property {name!r} cannot take {value!r} ({type(value).__name__}); "
        f"it needs {expected}. Fix the update step's value.",
        provider=PROVIDER,
        fields=[name],
    )
