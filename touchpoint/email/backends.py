"""The email backend interface, and a factory that picks a backend by name.

Every backend is synchronous: Temporal activities call ``send`` from a worker thread.
Backends raise the errors of :mod:`touchpoint.email.errors` and nothing else for anything
the provider or the network did.
"""

from __future__ import annotations

from pathlib import Path
from typing import Protocol, runtime_checkable

from touchpoint.email.errors import EmailConfigurationError
from touchpoint.email.message import EmailMessage
from touchpoint.email.outbox import OutboxBackend
from touchpoint.email.result import SendResult
from touchpoint.email.sendgrid_backend import DEFAULT_SENDGRID_HOST, SendGridBackend
from touchpoint.email.smtp_backend import SmtpBackend

__all__ = [
    "BACKEND_NAMES",
    "EmailBackend",
    "OutboxBackend",
    "SendGridBackend",
    "SendResult",
    "SmtpBackend",
    "make_backend",
]

BACKEND_NAMES = ("outbox", "sendgrid", "smtp")


@runtime_checkable
class EmailBackend(Protocol):
    """Something that delivers one :class:`EmailMessage`."""

    name: str

    def send(self, msg: EmailMessage) -> SendResult:
        """Deliver ``msg``; blocking, so call it from a thread.

        Raises:
            TransientEmailError: Retry later (``retry_after`` when the provider said).
            RecipientRejected: The provider refused this recipient.
            EmailConfigurationError: Settings must be fixed before anything can be sent.
            PermanentEmailError: The provider refused this message for good.
        """
        ...


def make_backend(
    name: str,
    *,
    outbox_dir: Path,
    sendgrid_api_key: str | None,
    sendgrid_url: str | None,
    smtp_url: str | None,
) -> EmailBackend:
    """Build the backend named by ``TOUCHPOINT_EMAIL_BACKEND``.

    Args:
        name: ``outbox``, ``sendgrid`` or ``smtp`` (case-insensitive).
        outbox_dir: Where the outbox backend writes ``<message id>.eml`` files.
        sendgrid_api_key: ``SENDGRID_API_KEY``; a missing key is reported when sending, so
            runs pause with a clear message instead of the worker failing to start.
        sendgrid_url: ``TOUCHPOINT_SENDGRID_URL``; None for ``https://api.sendgrid.com``.
        smtp_url: ``TOUCHPOINT_SMTP_URL``, e.g. ``smtp+starttls://user:pass@host:587``.

    Returns:
        The backend.

    Raises:
        EmailConfigurationError: Unknown name, or a missing/malformed SMTP or SendGrid URL.
    """
    key = name.strip().lower()
    if key == "outbox":
        return OutboxBackend(outbox_dir)
    if key == "sendgrid":
        return SendGridBackend(sendgrid_api_key, host=sendgrid_url or DEFAULT_SENDGRID_HOST)
    if key == "smtp":
        if not smtp_url:
            raise EmailConfigurationError(
                "TOUCHPOINT_SMTP_URL is not set: the smtp email backend needs a server, e.g."
                " smtp+starttls://user:password@smtp.example.com:587 (or smtps://... for"
                " implicit TLS, smtp://... for a local relay)"
            )
        return SmtpBackend(smtp_url)
    raise EmailConfigurationError(
        f"unknown email backend {name!r} (TOUCHPOINT_EMAIL_BACKEND); known backends: {', '.join(BACKEND_NAMES)}"
    )
