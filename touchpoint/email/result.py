"""What a backend reports after a successful send."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict

__all__ = ["SendResult"]


class SendResult(BaseModel):
    """The provider's answer to an accepted message.

    Attributes:
        provider_message_id: The provider's id (SendGrid's ``X-Message-Id``; our message id
            for the outbox and SMTP), or None when the provider gave none.
        status_code: The provider's status (202, 250, ...), None for the outbox.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    provider_message_id: str | None
    status_code: int | None
