"""What every AI backend takes and answers, its errors, and how one is chosen from the settings."""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from typing import TYPE_CHECKING, Protocol

if TYPE_CHECKING:
    from touchpoint.config import Settings

TOKENS_PER_WORD = 2
"""`max_words` becomes the request's token bound at this rate: English prose runs about 1.3
tokens a word, German and markup more; the bound is a ceiling, the prompt asks for the length."""
MAX_RETRY_HINT = 3600.0
"""A retry hint beyond an hour is not believed: Temporal's back-off takes over."""


@dataclass(frozen=True)
class Question:
    """One request: the rendered prompt and the bound on the answer's length."""

    prompt: str
    max_words: int

    @property
    def max_tokens(self) -> int:
        """The token bound sent to the model for ``max_words`` words."""
        return max(16, self.max_words * TOKENS_PER_WORD)


@dataclass(frozen=True)
class Answer:
    """What the model answered: its text (empty when it wrote none), or its refusal."""

    text: str
    model: str
    input_tokens: int | None = None
    output_tokens: int | None = None
    refusal: str | None = None
    """Why the model declined (a refusal, a content filter), when it did."""


class AiError(Exception):
    """A backend could not answer (see the tree in `touchpoint.ai`)."""


class AiConfigurationError(AiError):
    """Only a person can fix this: a missing key or model, or the provider refused the key."""


class AiTransientError(AiError):
    """Worth another try later; ``retry_after`` is the provider's hint in seconds, if it gave one."""

    def __init__(self, message: str, *, retry_after: float | None = None) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class AiRejected(AiError):
    """The provider refused the request itself (a 4xx other than 401, 403 and 429)."""


class AiBackend(Protocol):
    """Asks one provider for one text."""

    name: str

    def ask(self, question: Question) -> Answer:
        """The model's answer.

        Raises:
            AiConfigurationError, AiTransientError, AiRejected: see `touchpoint.ai`.
        """
        ...

    def close(self) -> None:
        """Release its connections."""
        ...


def retry_hint(headers: Mapping[str, str] | None, *, now: datetime | None = None) -> float | None:
    """Seconds to wait from a response's ``retry-after-ms`` or ``retry-after`` (seconds or an HTTP date)."""
    if not headers:
        return None
    lowered = {k.lower(): v for k, v in headers.items()}
    for name, scale in (("retry-after-ms", 1000.0), ("retry-after", 1.0)):
        raw = lowered.get(name)
        if raw is None:
            continue
        try:
            seconds = float(raw) / scale
        except ValueError:
            if name != "retry-after":
                continue
            try:
                when = parsedate_to_datetime(raw)
            except (TypeError, ValueError):
                continue
            seconds = (when - (now or datetime.now(UTC))).total_seconds()
        if math.isfinite(seconds) and seconds >= 0:
            return min(seconds, MAX_RETRY_HINT)
    return None


def status_error(provider: str, status: int, message: str, headers: Mapping[str, str] | None) -> AiError:
    """The error for an HTTP status from ``provider`` (the client's own errors carry it)."""
    if status in (401, 403):
        what = "refused the key" if status == 401 else "does not let this key use the model"
        return AiConfigurationError(f"{provider} {what} ({status}: {message}): check the key and model settings, then resume the run")
    if status in (408, 409, 429) or status >= 500:
        return AiTransientError(f"{provider} answered {status}: {message}", retry_after=retry_hint(headers))
    return AiRejected(f"{provider} refused the request ({status}: {message})")


def backend_from_settings(settings: Settings) -> AiBackend | None:
    """The backend `TOUCHPOINT_AI_BACKEND` names (None for `none`).

    Raises:
        AiConfigurationError: a key or the model is missing (the run pauses and says which).
    """
    kind = settings.ai_backend
    if kind == "none":
        return None
    model = settings.ai_model
    if not model:
        raise AiConfigurationError(
            f"TOUCHPOINT_AI_BACKEND={kind} needs TOUCHPOINT_AI_MODEL (the model, or the Azure deployment, to ask): set it and resume the run"
        )
    if kind == "openai":
        from touchpoint.ai.openai_backend import OpenAIBackend

        key = settings.ai_key.get_secret_value() if settings.ai_key else None
        if not key and not settings.ai_url:
            raise AiConfigurationError("TOUCHPOINT_AI_BACKEND=openai needs TOUCHPOINT_AI_KEY (or TOUCHPOINT_AI_URL for a local server without keys): set it and resume the run")
        return OpenAIBackend(model=model, api_key=key, base_url=settings.ai_url, timeout=settings.ai_timeout)
    from touchpoint.ai.anthropic_backend import AnthropicBackend

    key = settings.anthropic_api_key.get_secret_value() if settings.anthropic_api_key else None
    if not key:
        raise AiConfigurationError("TOUCHPOINT_AI_BACKEND=anthropic needs ANTHROPIC_API_KEY: set it and resume the run")
    return AnthropicBackend(model=model, api_key=key, base_url=settings.ai_url, timeout=settings.ai_timeout)
