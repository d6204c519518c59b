"""Errors raised by the CRM connectors.

The hierarchy::

    CrmError                        a CRM call failed
    ├── CrmTransientError           timeouts, connection errors, 429, 5xx, Salesforce 403
    │                               REQUEST_LIMIT_EXCEEDED: retry later (``retry_after``
    │                               seconds when the provider gave a hint)
    ├── CrmConfigurationError       401, 403 (missing scopes or permissions), a missing token
    │                               or URL, a missing custom property: an operator must fix
    │                               the settings, then the call can be retried
    ├── CrmNotFound                 404: the record (account, task) does not exist
    └── CrmRejected                 400/409 and other refusals of the data sent: retrying the
        │                           same call will not help
        └── CrmUnknownOwner         no active CRM user has the task owner's email

Callers decide by class only: Temporal activities let ``CrmTransientError`` propagate (so it
is retried, honouring ``retry_after``), pause the run on ``CrmConfigurationError``, and turn
the rest into non-retryable failures. Messages quote the provider's own words.
"""

from __future__ import annotations

from collections.abc import Sequence

__all__ = [
    "CrmConfigurationError",
    "CrmError",
    "CrmNotFound",
    "CrmRejected",
    "CrmTransientError",
    "CrmUnknownOwner",
]


class CrmError(Exception):
    """Base class of every CRM connector error.

    Attributes:
        message: The full explanation, including what to do about it.
        provider: ``"hubspot"`` or ``"salesforce"``.
        status_code: The provider's HTTP status, when there was an answer.
        code: The provider's error code (HubSpot ``category``, Salesforce ``errorCode``).
        provider_message: The provider's own message, verbatim.
        fields: The properties or fields the provider blamed, if it named any.
    """

    def __init__(
        self,
        message: str,
        *,
        provider: str,
        status_code: int | None = None,
        code: str | None = None,
        provider_message: str | None = None,
        fields: Sequence[str] = (),
    ) -> None:
        super().__init__(message)
        self.message = message
        self.provider = provider
        self.status_code = status_code
        self.code = code
        self.provider_message = provider_message
        self.fields = tuple(fields)


class CrmTransientError(CrmError):
    """A failure that may go away by itself: retry later.

    Attributes:
        retry_after: Seconds to wait before retrying, from the provider's hints (a
            ``Retry-After`` header, rate-limit headers, a daily limit), or None without one.
    """

    def __init__(
        self,
        message: str,
        *,
        provider: str,
        retry_after: float | None = None,
        status_code: int | None = None,
        code: str | None = None,
        provider_message: str | None = None,
        fields: Sequence[str] = (),
    ) -> None:
        super().__init__(
            message,
            provider=provider,
            status_code=status_code,
            code=code,
            provider_message=provider_message,
            fields=fields,
        )
        self.retry_after = retry_after


class CrmConfigurationError(CrmError):
    """The connector is not set up right (credentials, URL, scopes, custom fields)."""


class CrmNotFound(CrmError):
    """The record named in the call does not exist in the CRM (HTTP 404)."""


class CrmRejected(CrmError):
    """The CRM refused the data sent; the same call will be refused again."""


class CrmUnknownOwner(CrmRejected):
    """No active CRM user has the task owner's email.

    Callers may retry the task with a fallback owner (``crm.fallback_owner``).

    Attributes:
        email: The owner email that was looked up.
    """

    def __init__(self, message: str, *, provider: str, email: str) -> None:
        super().__init__(message, provider=provider)
        self.email = email
