"""Errors raised while rendering and delivering email.

The hierarchy::

    EmailError                      delivery failed; never caught as a template problem
    ├── TransientEmailError         timeouts, connection errors, 429, 5xx: retry later
    │                               (``retry_after`` seconds when the provider said so)
    ├── RecipientRejected           the provider refused this recipient (SendGrid 400 on a
    │                               personalization, SMTP 5xx): skip them, record why
    ├── EmailConfigurationError     401/403, a missing API key or SMTP URL, an unverified
    │                               sender: pause until an operator fixes the settings
    └── PermanentEmailError         any other refusal (other 4xx): retrying will not help

    TemplateError                   an email template could not be turned into a message
    ├── TemplateNotFound            the subject or HTML part does not exist
    └── TemplateRenderError         syntax error, undefined name, sandbox violation, ...

Callers decide what to do by class only: Temporal activities let ``TransientEmailError``
propagate (so it is retried) and turn everything else into a non-retryable failure.
"""

from __future__ import annotations

from collections.abc import Sequence

__all__ = [
    "EmailConfigurationError",
    "EmailError",
    "PermanentEmailError",
    "RecipientRejected",
    "TemplateError",
    "TemplateNotFound",
    "TemplateRenderError",
    "TransientEmailError",
]


class EmailError(Exception):
    """Base class of every delivery error.

    Attributes:
        status_code: The provider's HTTP or SMTP status code, when there was one.
        provider_message: The provider's own explanation, verbatim, when there was one.
    """

    def __init__(
        self,
        message: str,
        *,
        status_code: int | None = None,
        provider_message: str | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.status_code = status_code
        self.provider_message = provider_message


class TransientEmailError(EmailError):
    """A failure that may go away by itself; retry, honouring ``retry_after``.

    Attributes:
        retry_after: Seconds the provider asked us to wait, or None when it gave no hint.
        maybe_delivered: The request left us and no answer came back (a read timeout, a
            connection dropped mid-response): the provider may have accepted the message, so a
            caller that must not send twice does not retry it.
    """

    def __init__(
        self,
        message: str,
        *,
        retry_after: float | None = None,
        status_code: int | None = None,
        provider_message: str | None = None,
        maybe_delivered: bool = False,
    ) -> None:
        super().__init__(message, status_code=status_code, provider_message=provider_message)
        self.retry_after = retry_after
        self.maybe_delivered = maybe_delivered


class RecipientRejected(EmailError):
    """The provider refused this recipient; other recipients may still be fine.

    Attributes:
        recipient: The refused address.
        field: The request field the provider blamed (SendGrid's ``errors[].field``), if any.
    """

    def __init__(
        self,
        message: str,
        *,
        recipient: str,
        field: str | None = None,
        status_code: int | None = None,
        provider_message: str | None = None,
    ) -> None:
        super().__init__(message, status_code=status_code, provider_message=provider_message)
        self.recipient = recipient
        self.field = field


class EmailConfigurationError(EmailError):
    """The settings are wrong (key, URL, sender); nothing will work until they are fixed."""


class PermanentEmailError(EmailError):
    """The provider refused the message for a reason retrying cannot fix.

    Attributes:
        field: The request field the provider blamed, if any.
    """

    def __init__(
        self,
        message: str,
        *,
        field: str | None = None,
        status_code: int | None = None,
        provider_message: str | None = None,
    ) -> None:
        super().__init__(message, status_code=status_code, provider_message=provider_message)
        self.field = field


class TemplateError(Exception):
    """Base class of template errors; the message names the template file."""


class TemplateNotFound(TemplateError):
    """A required template part is missing.

    Attributes:
        name: The template name as written in the playbook (``welcome``).
        looked_for: Every file name that was tried, in order.
    """

    def __init__(self, message: str, *, name: str, looked_for: Sequence[str] = ()) -> None:
        super().__init__(message)
        self.name = name
        self.looked_for = tuple(looked_for)


class TemplateRenderError(TemplateError):
    """A template failed to compile or render.

    Attributes:
        template: The template file, relative to the templates folder's parent
            (``templates/welcome.html.j2``), when known.
        lineno: The line in that file, when known.
        detail: The problem itself, without the location.
    """

    def __init__(
        self,
        message: str,
        *,
        template: str | None = None,
        lineno: int | None = None,
        detail: str | None = None,
    ) -> None:
        super().__init__(message)
        self.template = template
        self.lineno = lineno
        self.detail = detail if detail is not None else message
