"""Deliver through SendGrid's v3 Mail Send API with the official ``sendgrid`` package."""

from __future__ import annotations

import http.client
import json
import re
import ssl
import time
import urllib.error
import urllib.parse
from collections.abc import Mapping
from email.utils import parsedate_to_datetime
from typing import Any

from python_http_client.exceptions import HTTPError
from sendgrid import SendGridAPIClient
from sendgrid.helpers.mail.exceptions import ApiKeyIncludedException
from sendgrid.helpers.mail.validators import ValidateApiKey

from touchpoint.email.errors import (
    EmailConfigurationError,
    EmailError,
    PermanentEmailError,
    RecipientRejected,
    TransientEmailError,
)
from touchpoint.email.message import EmailMessage
from touchpoint.email.result import SendResult
from touchpoint.observability.metrics import provider_call

__all__ = [
    "DEFAULT_SENDGRID_HOST",
    "MESSAGE_ID_ARG",
    "SendGridBackend",
    "retry_after_seconds",
    "sendgrid_request_body",
]

DEFAULT_SENDGRID_HOST = "https://api.sendgrid.com"
# Custom arg carrying our message id: SendGrid copies it into every webhook event.
MESSAGE_ID_ARG = "touchpoint_message_id"
_NAME_FORBIDDEN = re.compile(r"[;,]")  # SendGrid rejects these in recipient names


def _address(email: str, name: str, *, recipient: bool) -> dict[str, str]:
    if recipient:
        name = " ".join(_NAME_FORBIDDEN.sub(" ", name).split())
    return {"email": email, "name": name} if name else {"email": email}


def sendgrid_request_body(msg: EmailMessage) -> dict[str, Any]:
    """Build the ``POST /v3/mail/send`` body for one message.

    Text comes before HTML (SendGrid requires ``text/plain`` first). Our message id is
    added to ``custom_args`` as ``touchpoint_message_id`` so delivery events can be matched
    to the message. Commas and semicolons are removed from the recipient's name, which
    SendGrid would reject.

    Args:
        msg: The message.

    Returns:
        The JSON-ready body.
    """
    body: dict[str, Any] = {
        "personalizations": [{"to": [_address(msg.to_email, msg.to_name, recipient=True)]}],
        "from": _address(msg.from_email, msg.from_name, recipient=False),
        "subject": msg.subject,
        "content": [
            {"type": "text/plain", "value": msg.text},
            {"type": "text/html", "value": msg.html},
        ],
        "custom_args": {**msg.custom_args, MESSAGE_ID_ARG: msg.message_id},
    }
    if msg.categories:
        body["categories"] = list(msg.categories)
    if msg.unsubscribe_group_id is not None:
        body["asm"] = {"group_id": msg.unsubscribe_group_id}
    if msg.headers:
        body["headers"] = dict(msg.headers)
    return body


def _header(headers: Any, name: str) -> str | None:
    if headers is None or not hasattr(headers, "get"):
        return None
    value = headers.get(name)
    return str(value).strip() if value is not None else None


def retry_after_seconds(headers: Any, *, now: float | None = None) -> float | None:
    """Read the provider's wait hint from response headers.

    ``Retry-After`` (seconds or an HTTP date) wins; else ``X-RateLimit-Reset`` (Unix epoch
    seconds) is turned into a delay from now.

    Args:
        headers: The response headers (anything with a case-insensitive ``get``).
        now: The current Unix time; ``time.time()`` when omitted.

    Returns:
        Seconds to wait (never negative), or None when the headers say nothing usable.
    """
    current = time.time() if now is None else now
    retry_after = _header(headers, "Retry-After")
    if retry_after:
        try:
            return max(0.0, float(retry_after))
        except ValueError:
            try:
                return max(0.0, parsedate_to_datetime(retry_after).timestamp() - current)
            except (TypeError, ValueError):
                pass
    reset = _header(headers, "X-RateLimit-Reset")
    if reset:
        try:
            return max(0.0, float(reset) - current)
        except ValueError:
            pass
    return None


def _provider_error(body: Any) -> tuple[str | None, str | None]:
    """SendGrid's first ``errors[]`` entry as (message, field); tolerates any body."""
    raw = body.decode("utf-8", "replace") if isinstance(body, bytes) else str(body or "")
    try:
        data = json.loads(raw)
    except ValueError:
        data = None
    if isinstance(data, Mapping):
        errors = data.get("errors")
        if isinstance(errors, list) and errors and isinstance(errors[0], Mapping):
            message, field = errors[0].get("message"), errors[0].get("field")
            return (
                str(message) if message is not None else None,
                str(field) if field is not None else None,
            )
    # A proxy's HTML error page or plain text: keep a short, single-line excerpt.
    text = " ".join(re.sub(r"<[^>]*>", " ", raw).split())
    return (text[:200] or None), None


def _http_error(exc: Any, msg: EmailMessage) -> EmailError:
    status = int(exc.status_code)
    message, field = _provider_error(exc.body)
    said = message or str(exc.reason or "no explanation")
    quoted = f"{status}: {said}" + (f" (field {field})" if field else "")
    if status == 400:
        if field and field.startswith(("from", "reply_to")):
            return EmailConfigurationError(
                f"SendGrid refused the sender {msg.from_email} ({quoted}); fix the sender in workspace.yaml",
                status_code=status,
                provider_message=message,
            )
        if field is None or field.startswith("personalizations"):
            return RecipientRejected(
                f"SendGrid rejected {msg.to_email} ({quoted})",
                recipient=msg.to_email,
                field=field,
                status_code=status,
                provider_message=message,
            )
        return PermanentEmailError(
            f"SendGrid rejected the message to {msg.to_email} ({quoted})",
            field=field,
            status_code=status,
            provider_message=message,
        )
    if status == 401:
        return EmailConfigurationError(
            f"SendGrid refused the API key ({quoted}); set SENDGRID_API_KEY to a valid key"
            " with the Mail Send permission",
            status_code=status,
            provider_message=message,
        )
    if status == 403:
        return EmailConfigurationError(
            f"SendGrid refused to send from {msg.from_email} ({quoted}); verify this sender"
            " in SendGrid (Settings > Sender Authentication) and check that the API key has"
            " the Mail Send permission",
            status_code=status,
            provider_message=message,
        )
    if status in (408, 429) or status >= 500:
        return TransientEmailError(
            f"SendGrid is unavailable for now ({quoted})",
            retry_after=retry_after_seconds(exc.headers),
            status_code=status,
            provider_message=message,
        )
    return PermanentEmailError(
        f"SendGrid refused the message to {msg.to_email} ({quoted})",
        field=field,
        status_code=status,
        provider_message=message,
    )


class SendGridBackend:
    """Sends through SendGrid's ``POST /v3/mail/send``.

    One client is shared by all threads; the ``sendgrid`` package builds a fresh request
    per call.
    """

    name: str = "sendgrid"

    def __init__(
        self,
        api_key: str | None,
        host: str = DEFAULT_SENDGRID_HOST,
        timeout: float = 10.0,
    ) -> None:
        """Create the backend.

        Args:
            api_key: The SendGrid API key; None or empty makes every send raise
                :class:`EmailConfigurationError` (so runs pause until it is set).
            host: The API base URL without ``/v3`` (``https://api.eu.sendgrid.com`` for EU
                subusers, a loopback URL in tests).
            timeout: Seconds to wait for SendGrid's answer.

        Raises:
            EmailConfigurationError: ``host`` is not an http(s) URL.
        """
        parsed = urllib.parse.urlsplit(host.strip())
        if parsed.scheme not in ("http", "https") or not parsed.netloc:
            raise EmailConfigurationError(
                f"TOUCHPOINT_SENDGRID_URL {host!r} is not an http(s) URL; use e.g. {DEFAULT_SENDGRID_HOST}"
            )
        # The client appends /v3 itself; accept a URL copied with it.
        self.host = re.sub(r"/v3/?$", "", host.strip().rstrip("/"))
        self.timeout = timeout
        self._client: Any = None
        if api_key and api_key.strip():
            self._client = SendGridAPIClient(api_key=api_key.strip(), host=self.host)
            # The package has no default timeout; without one a stalled call blocks forever.
            self._client.client.timeout = timeout

    def send(self, msg: EmailMessage) -> SendResult:
        """Send ``msg``; see :class:`~touchpoint.email.backends.EmailBackend` for errors."""
        if self._client is None:
            raise EmailConfigurationError(
                "SENDGRID_API_KEY is not set: the sendgrid email backend needs an API key with"
                " the Mail Send permission. Set SENDGRID_API_KEY, or use"
                " TOUCHPOINT_EMAIL_BACKEND=outbox to write emails to files instead."
            )
        body = sendgrid_request_body(msg)
        try:
            # The same guard the package's Mail helpers apply: never mail out an API key.
            ValidateApiKey().validate_message_dict(body)
            with provider_call("sendgrid") as call:
                response = self._client.send(body)
                call.status = int(response.status_code)
        except ApiKeyIncludedException:
            raise PermanentEmailError(
                f"the email to {msg.to_email} was not sent: its content looks like a SendGrid"
                " API key (SG.xxx.yyy), which the sendgrid package refuses to send. Check the"
                " template and the data it renders."
            ) from None
        except HTTPError as exc:
            raise _http_error(exc, msg) from exc
        except TimeoutError as exc:
            raise TransientEmailError(
                f"SendGrid at {self.host} did not answer within {self.timeout:g}s", maybe_delivered=True
            ) from exc
        except urllib.error.URLError as exc:
            if isinstance(exc.reason, ssl.SSLCertVerificationError):
                raise EmailConfigurationError(
                    f"the TLS certificate of {self.host} is not trusted ({exc.reason}); check TOUCHPOINT_SENDGRID_URL"
                ) from exc
            raise TransientEmailError(f"could not reach SendGrid at {self.host}: {exc.reason}") from exc
        except (http.client.HTTPException, OSError) as exc:
            raise TransientEmailError(
                f"the connection to SendGrid at {self.host} failed: {exc!r}", maybe_delivered=True
            ) from exc
        return SendResult(
            provider_message_id=_header(response.headers, "X-Message-Id"),
            status_code=int(response.status_code),
        )
