"""Deliver through an SMTP server (a company relay, Mailpit, Postmark's SMTP, ...)."""

from __future__ import annotations

import smtplib
import ssl
import urllib.parse
from dataclasses import dataclass

from touchpoint.email.errors import (
    EmailConfigurationError,
    EmailError,
    PermanentEmailError,
    RecipientRejected,
    TransientEmailError,
)
from touchpoint.email.message import EmailMessage, to_mime
from touchpoint.email.result import SendResult
from touchpoint.observability.metrics import provider_call

__all__ = ["SmtpBackend", "SmtpSettings", "parse_smtp_url"]

_DEFAULT_PORTS = {"smtp": 25, "smtps": 465, "smtp+starttls": 587}
_TLS_HINT = (
    "check the URL scheme: smtps:// for implicit TLS (usually port 465), smtp+starttls://"
    " for STARTTLS (usually 587), smtp:// for no TLS"
)


@dataclass(frozen=True)
class SmtpSettings:
    """A parsed ``TOUCHPOINT_SMTP_URL``."""

    scheme: str
    host: str
    port: int
    username: str | None
    password: str | None

    def __repr__(self) -> str:
        # Never print the password (logs, error reports).
        user = f"{self.username}@" if self.username else ""
        return f"SmtpSettings({self.scheme}://{user}{self.host}:{self.port})"


def parse_smtp_url(url: str) -> SmtpSettings:
    """Parse ``smtp://``, ``smtps://`` or ``smtp+starttls://[user[:password]@]host[:port]``.

    User and password are percent-decoded (write ``@`` in a password as ``%40``).

    Raises:
        EmailConfigurationError: The URL is malformed; the message says how to write it.
    """
    example = "e.g. smtp+starttls://user:password@smtp.example.com:587"
    parsed = urllib.parse.urlsplit(url.strip())
    scheme = parsed.scheme.lower()
    if scheme not in _DEFAULT_PORTS:
        raise EmailConfigurationError(
            f"TOUCHPOINT_SMTP_URL has scheme {parsed.scheme!r}; use one of"
            f" {', '.join(s + '://' for s in _DEFAULT_PORTS)} ({example})"
        )
    try:
        port = parsed.port or _DEFAULT_PORTS[scheme]
    except ValueError:
        raise EmailConfigurationError(f"TOUCHPOINT_SMTP_URL has an invalid port; {example}") from None
    if not parsed.hostname:
        raise EmailConfigurationError(f"TOUCHPOINT_SMTP_URL has no host; {example}")
    return SmtpSettings(
        scheme=scheme,
        host=parsed.hostname,
        port=port,
        username=urllib.parse.unquote(parsed.username) if parsed.username else None,
        password=urllib.parse.unquote(parsed.password) if parsed.password is not None else None,
    )


def _reply(code: int, text: bytes | str) -> str:
    said = text.decode("utf-8", "replace") if isinstance(text, bytes) else text
    return f"{code} {' '.join(said.split())}"


class SmtpBackend:
    """Sends each message over a new SMTP connection (simple, and safe across threads)."""

    name: str = "smtp"

    def __init__(self, url: str, timeout: float = 10.0, *, ssl_context: ssl.SSLContext | None = None) -> None:
        """Create the backend.

        Args:
            url: ``smtp://``, ``smtps://`` (implicit TLS) or ``smtp+starttls://`` URL with
                optional ``user:password@``.
            timeout: Seconds for connecting and for each server reply.
            ssl_context: TLS settings; the system's trusted CAs when omitted.

        Raises:
            EmailConfigurationError: The URL is malformed.
        """
        self.settings = parse_smtp_url(url)
        self.timeout = timeout
        self._ssl_context = ssl_context or ssl.create_default_context()

    def _connect(self) -> smtplib.SMTP:
        s = self.settings
        if s.scheme == "smtps":
            return smtplib.SMTP_SSL(s.host, s.port, timeout=self.timeout, context=self._ssl_context)
        return smtplib.SMTP(s.host, s.port, timeout=self.timeout)

    def send(self, msg: EmailMessage) -> SendResult:
        """Send ``msg``; see :class:`~touchpoint.email.backends.EmailBackend` for errors."""
        mime = to_mime(msg)
        try:
            with provider_call("smtp"), self._connect() as smtp:
                if self.settings.scheme == "smtp+starttls":
                    smtp.starttls(context=self._ssl_context)
                if self.settings.username:
                    smtp.login(self.settings.username, self.settings.password or "")
                refused = smtp.send_message(mime, from_addr=msg.from_email, to_addrs=[msg.to_email])
            if refused:  # only possible with several recipients, kept for safety
                raise smtplib.SMTPRecipientsRefused(refused)
        except EmailError:
            raise
        except Exception as exc:  # mapped one by one below; anything unknown is transient
            raise self._map_error(exc, msg) from exc
        return SendResult(provider_message_id=msg.message_id, status_code=250)

    def _map_error(self, exc: Exception, msg: EmailMessage) -> EmailError:
        server = f"{self.settings.host}:{self.settings.port}"
        if isinstance(exc, smtplib.SMTPRecipientsRefused):
            code, text = exc.recipients.get(msg.to_email) or next(
                iter(exc.recipients.values()), (550, b"recipient refused")
            )
            said = _reply(code, text)
            if 400 <= code < 500:
                return TransientEmailError(
                    f"{server} deferred {msg.to_email} ({said})",
                    status_code=code,
                    provider_message=said,
                )
            return RecipientRejected(
                f"{server} rejected {msg.to_email} ({said})",
                recipient=msg.to_email,
                status_code=code,
                provider_message=said,
            )
        if isinstance(exc, smtplib.SMTPAuthenticationError):
            said = _reply(exc.smtp_code, exc.smtp_error)
            return EmailConfigurationError(
                f"{server} refused the login for {self.settings.username!r} ({said}); check"
                " the user and password in TOUCHPOINT_SMTP_URL",
                status_code=exc.smtp_code,
                provider_message=said,
            )
        if isinstance(exc, smtplib.SMTPNotSupportedError):
            return EmailConfigurationError(
                f"{server} does not support what TOUCHPOINT_SMTP_URL asks for ({exc}); {_TLS_HINT},"
                " and leave out user:password if the server takes no login"
            )
        if isinstance(exc, smtplib.SMTPResponseException):
            code, said = exc.smtp_code, _reply(exc.smtp_code, exc.smtp_error)
            if 400 <= code < 500:
                return TransientEmailError(
                    f"{server} deferred the message to {msg.to_email} ({said})",
                    status_code=code,
                    provider_message=said,
                )
            if isinstance(exc, smtplib.SMTPSenderRefused):
                return EmailConfigurationError(
                    f"{server} refused the sender {msg.from_email} ({said}); fix the sender"
                    " in workspace.yaml or allow it on the SMTP server",
                    status_code=code,
                    provider_message=said,
                )
            if isinstance(exc, smtplib.SMTPDataError):
                return RecipientRejected(
                    f"{server} rejected the message to {msg.to_email} ({said})",
                    recipient=msg.to_email,
                    status_code=code,
                    provider_message=said,
                )
            return PermanentEmailError(
                f"{server} refused the session ({said})",
                status_code=code,
                provider_message=said,
            )
        if isinstance(exc, ssl.SSLCertVerificationError):
            return EmailConfigurationError(
                f"the TLS certificate of {server} is not trusted ({exc.verify_message});"
                " check the host in TOUCHPOINT_SMTP_URL"
            )
        if isinstance(exc, ssl.SSLError):
            return EmailConfigurationError(f"TLS with {server} failed ({exc}); {_TLS_HINT}")
        if isinstance(exc, smtplib.SMTPServerDisconnected):
            return TransientEmailError(f"{server} closed the connection ({exc})")
        if isinstance(exc, TimeoutError):
            return TransientEmailError(f"{server} did not answer within {self.timeout:g}s")
        if isinstance(exc, OSError):
            return TransientEmailError(f"could not reach the SMTP server {server}: {exc}")
        if isinstance(exc, smtplib.SMTPException):
            return PermanentEmailError(f"sending through {server} failed: {exc}")
        return TransientEmailError(f"sending through {server} failed: {exc!r}")
