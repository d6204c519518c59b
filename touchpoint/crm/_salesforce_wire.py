"""Salesforce's wire format: query pages, error arrays, the limit header, SOQL literals."""

from __future__ import annotations

import math
import re
from datetime import UTC, date, datetime
from decimal import Decimal
from typing import Any

import httpx
from pydantic import BaseModel, ConfigDict, Field

from touchpoint.crm._http import parse_retry_after
from touchpoint.crm._values import iso_utc
from touchpoint.crm.errors import (
    CrmConfigurationError,
    CrmError,
    CrmNotFound,
    CrmRejected,
    CrmTransientError,
)

__all__ = [
    "ApiUsage",
    "QueryPage",
    "UpsertResult",
    "error_from_response",
    "parse_limit_info",
    "soql_datetime",
    "soql_string",
    "to_field_value",
]

PROVIDER = "salesforce"


class _Wire(BaseModel):
    model_config = ConfigDict(extra="ignore")


class QueryPage(_Wire):
    totalSize: int = 0
    done: bool = True
    nextRecordsUrl: str | None = None
    records: list[dict[str, Any]] = Field(default_factory=list)


class UpsertResult(_Wire):
    id: str
    created: bool | None = None


class _SfError(_Wire):
    message: str | None = None
    errorCode: str | None = None
    fields: list[str] = Field(default_factory=list)


class ApiUsage(BaseModel):
    """The org's API request usage from the last ``Sforce-Limit-Info`` header.

    Attributes:
        used: Requests used in the rolling 24 hours.
        max: The org's daily allowance.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    used: int
    max: int

    @property
    def remaining(self) -> int:
        """Requests left before Salesforce answers 403 ``REQUEST_LIMIT_EXCEEDED``."""
        return max(0, self.max - self.used)


_API_USAGE = re.compile(r"api-usage=(\d+)/(\d+)")


def parse_limit_info(value: str | None) -> ApiUsage | None:
    """``api-usage=25/15000; per-app-api-usage=...`` → ``ApiUsage(used=25, max=15000)``."""
    match = _API_USAGE.search(value or "")
    return ApiUsage(used=int(match[1]), max=int(match[2])) if match else None


def _errors(response: httpx.Response) -> list[_SfError]:
    try:
        body = response.json()
    except ValueError:
        text = response.text.strip()[:300]
        return [_SfError(message=text)] if text else []
    # Always an array on the REST API; the OAuth endpoints answer {error, error_description}.
    items = body if isinstance(body, list) else [body]
    errors: list[_SfError] = []
    for item in items:
        if isinstance(item, dict):
            message = item.get("message") or item.get("error_description")
            code = item.get("errorCode") or item.get("error")
            fields = item.get("fields")
            errors.append(
                _SfError(
                    message=str(message) if message is not None else None,
                    errorCode=str(code) if code is not None else None,
                    fields=[str(f) for f in fields] if isinstance(fields, list) else [],
                )
            )
        elif isinstance(item, str):
            errors.append(_SfError(message=item))
    return errors


def error_from_response(
    response: httpx.Response,
    *,
    where: str,
    hint: str = "",
    limit_retry_after: float,
    usage: ApiUsage | None,
) -> CrmError:
    """The ``CrmError`` for a Salesforce answer that was not the expected success.

    Args:
        response: Salesforce's answer.
        where: ``METHOD /path`` of the request, quoted in the message.
        hint: What to check, appended to refusals and 404s.
        limit_retry_after: Seconds to wait after 403 ``REQUEST_LIMIT_EXCEEDED``.
        usage: The org's API usage from this answer's header, quoted for limit errors.
    """
    errors = _errors(response)
    status = response.status_code
    first = errors[0] if errors else _SfError()
    parts = []
    for err in errors[:5]:
        part = f'{err.errorCode}: "{err.message}"' if err.errorCode else f'"{err.message}"'
        if err.fields:
            part += f" (fields: {', '.join(err.fields)})"
        parts.append(part)
    said = "; ".join(parts) or "no message"
    message = f"Salesforce answered {status} to {where}: {said}"
    common: dict[str, Any] = {
        "provider": PROVIDER,
        "status_code": status,
        "code": first.errorCode,
        "provider_message": first.message,
        "fields": [f for err in errors for f in err.fields],
    }
    if status == 403 and first.errorCode == "REQUEST_LIMIT_EXCEEDED":
        used = f" (api-usage {usage.used}/{usage.max})" if usage else ""
        return CrmTransientError(
            f"{message}. The org's daily API request limit is used up{used}; it frees up as "
            f"the rolling 24 hours move on, so retry in about {limit_retry_after / 3600:g} h, "
            "or ask Salesforce for a higher limit.",
            retry_after=limit_retry_after,
            **common,
        )
    if status == 401:
        return CrmConfigurationError(
            f"{message}. The access token expired or was revoked: fetch a new one (OAuth "
            "token endpoint) and set SALESFORCE_ACCESS_TOKEN.",
            **common,
        )
    if status == 403:
        return CrmConfigurationError(
            f"{message}. The integration user lacks a permission: give it API Enabled and "
            "read/edit access to Account, Contact, Task and read access to User.",
            **common,
        )
    if status in (408, 429) or status >= 500:
        return CrmTransientError(
            f"{message}. Salesforce had a problem on its side; the call will be retried.",
            retry_after=parse_retry_after(response.headers.get("Retry-After")),
            **common,
        )
    if status == 300:
        return CrmRejected(
            f"Salesforce answered 300 to {where}: {len(errors)} records have this external "
            f"id ({said}); nothing was written. Mark the external id field Unique and merge "
            "or delete the duplicates.",
            **common,
        )
    suffix = f". {hint}" if hint else "."
    if status == 404:
        return CrmNotFound(message + suffix, **common)
    return CrmRejected(message + suffix, **common)


def soql_string(value: str) -> str:
    """A SOQL string literal: quoted, with quotes, backslashes and controls escaped."""
    escaped = (
        value.replace("\\", "\\\\").replace("'", "\\'").replace("\n", "\\n").replace("\r", "\\r").replace("\t", "\\t")
    )
    return f"'{escaped}'"


def soql_datetime(value: datetime) -> str:
    """A SOQL dateTime literal (unquoted, UTC, whole seconds: rounded down)."""
    return value.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def to_field_value(name: str, value: object) -> object:
    """Encode one Account field value as JSON Salesforce accepts.

    None clears the field; dates are ``YYYY-MM-DD``; datetimes ISO 8601 UTC; lists become
    ``a;b`` (multi-select picklists).

    Raises:
        CrmRejected: The value has no JSON form Salesforce would accept.
    """
    if value is None or isinstance(value, bool | str | int):
        return value
    if isinstance(value, float | Decimal):
        number = float(value)
        if not math.isfinite(number):
            raise _unencodable(name, value, "a finite number")
        return number
    if isinstance(value, datetime):
        if value.tzinfo is None:
            raise _unencodable(name, value, "a timezone-aware datetime")
        return iso_utc(value)
    if isinstance(value, date):
        return value.isoformat()
    if isinstance(value, list | tuple | set | frozenset):
        return ";".join(str(to_field_value(name, item)) for item in value)
    raise _unencodable(name, value, "a string, number, boolean, date or list")


def _unencodable(name: str, value: object, expected: str) -> CrmRejected:
    return CrmRejected(
        f"Salesforce field {name!r} cannot take {value!r} ({type(value).__name__}); it "
        f"needs {expected}. Fix the update step's value.",
        provider=PROVIDER,
        fields=[name],
    )
