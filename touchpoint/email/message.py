"""The message every backend sends, and its MIME form."""

from __future__ import annotations

import json
import uuid
from datetime import UTC, datetime
from email import charset as _charset
from email.header import Header
from email.message import Message as MimeMessage
from email.mime.multipart import MIMEMultipart
from email.mime.text import MIMEText
from email.policy import compat32
from email.utils import format_datetime, formataddr
from typing import Any, cast

from pydantic import BaseModel, ConfigDict, Field, field_validator

__all__ = ["EmailMessage", "message_id_header", "new_message_id", "to_mime"]

# Headers the message builds itself; a caller-supplied copy would be a duplicate.
_RESERVED_HEADERS = frozenset(
    {
        "from",
        "to",
        "subject",
        "date",
        "message-id",
        "mime-version",
        "content-type",
        "content-transfer-encoding",
        "cc",
        "bcc",
        "reply-to",
    }
)


def new_message_id() -> str:
    """Return a fresh message id (32 hex digits)."""
    return uuid.uuid4().hex


def message_id_header(message_id: str) -> str:
    """Return the ``Message-ID`` header value for one of our ids: ``<id@touchpoint>``."""
    return f"<{message_id}@touchpoint>"


class EmailMessage(BaseModel):
    """One email to one recipient, as handed to a backend.

    Attributes:
        message_id: Our id for this message; also the outbox file name and the
            ``Message-ID`` header (``<id@touchpoint>``). Reuse it when retrying a send so
            backends that can be idempotent are.
        from_email: Sender address.
        from_name: Sender display name ("" for none).
        to_email: Recipient address.
        to_name: Recipient display name ("" for none).
        subject: One line.
        html: The HTML part.
        text: The plain-text part.
        categories: Provider categories (SendGrid: at most 10).
        custom_args: Provider custom arguments, echoed back in delivery events.
        unsubscribe_group_id: SendGrid unsubscribe group (``asm.group_id``), if any.
        headers: Extra headers such as ``List-Unsubscribe``.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    message_id: str = Field(default_factory=new_message_id, pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]{0,199}$")
    from_email: str = Field(min_length=3)
    from_name: str = ""
    to_email: str = Field(min_length=3)
    to_name: str = ""
    subject: str = Field(min_length=1)
    html: str
    text: str
    categories: list[str] = Field(default_factory=list)
    custom_args: dict[str, str] = Field(default_factory=dict)
    unsubscribe_group_id: int | None = None
    headers: dict[str, str] = Field(default_factory=dict)

    @field_validator("from_email", "from_name", "to_email", "to_name", "subject")
    @classmethod
    def _single_line(cls, value: str) -> str:
        # A newline in a header value would let content inject headers.
        if "\r" in value or "\n" in value:
            raise ValueError(f"must be a single line, got {value!r}")
        return value

    @field_validator("headers")
    @classmethod
    def _plain_headers(cls, value: dict[str, str]) -> dict[str, str]:
        for key, text in value.items():
            if key.lower() in _RESERVED_HEADERS:
                raise ValueError(f"header {key!r} is set from the message's own fields; remove it from headers")
            if not key or any(c in key for c in ": \r\n") or "\r" in text or "\n" in text:
                raise ValueError(f"invalid header {key!r}: {text!r}")
        return value


# UTF-8 bodies in quoted-printable: outbox files stay readable (base64 would hide the text).
_UTF8_QP = _charset.Charset("utf-8")
_UTF8_QP.header_encoding = _charset.QP
_UTF8_QP.body_encoding = _charset.QP


def _header(name: str, value: str) -> Any:
    """A header value as is when ASCII, else a `Header` that the generator writes as RFC 2047
    encoded words, folded with the header's name (typeshed types header values as str only)."""
    return value if value.isascii() else Header(value, "utf-8", header_name=name)


class _Policy(type(compat32)):  # type: ignore[misc]
    """`compat32`, except that an ASCII header value is written on one line when it fits the
    998 characters RFC 5322 allows: compat32 would move a long unbreakable token (an unsubscribe
    link) to a continuation line, which modern parsers read back with a leading space."""

    def _fold(self, name: str, value: Any, sanitize: bool) -> str:
        if isinstance(value, str) and value.isascii() and "\n" not in value and len(name) + len(value) + 2 <= 998:
            return f"{name}: {value}{self.linesep}"
        return str(super()._fold(name, value, sanitize))


_POLICY = _Policy()


def to_mime(msg: EmailMessage, *, date: datetime | None = None, metadata_headers: bool = False) -> MimeMessage:
    """Build the MIME form of a message: multipart/alternative, text first, then HTML.

    Built with the standard library's `email.mime` classes, whose headers are stored as given
    (non-ASCII ones as RFC 2047 encoded words): about a quarter of the CPU of the modern
    `email.message.EmailMessage` API, which parses and refolds every header, for the same bytes
    on the wire (a parser with either policy reads them back alike).

    Args:
        msg: The message.
        date: The ``Date`` header; now (UTC) when omitted.
        metadata_headers: Also record categories, custom args and the unsubscribe group as
            ``X-Touchpoint-*`` headers (for the outbox; keep them out of real mail).

    Returns:
        A standard-library :class:`email.message.Message` (``as_bytes()``, ``smtplib.send_message``).
    """
    mime = MIMEMultipart("alternative", policy=_POLICY)
    mime["From"] = formataddr((msg.from_name, msg.from_email), charset="utf-8")
    mime["To"] = formataddr((msg.to_name, msg.to_email), charset="utf-8")
    mime["Subject"] = _header("Subject", msg.subject)
    mime["Date"] = format_datetime(date or datetime.now(UTC))
    mime["Message-ID"] = message_id_header(msg.message_id)
    for key, value in msg.headers.items():
        mime[key] = _header(key, value)
    if metadata_headers:
        if msg.categories:
            mime["X-Touchpoint-Categories"] = _header("X-Touchpoint-Categories", ", ".join(msg.categories))
        if msg.custom_args:
            mime["X-Touchpoint-Custom-Args"] = _header("X-Touchpoint-Custom-Args", json.dumps(msg.custom_args, sort_keys=True))
        if msg.unsubscribe_group_id is not None:
            mime["X-Touchpoint-Unsubscribe-Group"] = str(msg.unsubscribe_group_id)
    for body, subtype in ((msg.text, "plain"), (msg.html, "html")):
        part = MIMEText(body, subtype, cast(Any, _UTF8_QP), policy=_POLICY)  # a Charset is accepted (typeshed says str)
        del part["MIME-Version"]  # belongs on the top-level message only
        mime.attach(part)
    return mime
