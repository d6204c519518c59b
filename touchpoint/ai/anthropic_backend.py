"""Anthropic's Messages API through the official `anthropic` client (`TOUCHPOINT_AI_URL` for a proxy).

The client's own retries are off: Temporal retries the activity, honouring the `retry-after`
hint of a 429 or 529.
"""

from __future__ import annotations

from typing import Any

import anthropic

from touchpoint.ai.base import AiTransientError, Answer, Question, status_error
from touchpoint.ai.openai_backend import _message

PROVIDER = "Anthropic"


class AnthropicBackend:
    """`TOUCHPOINT_AI_BACKEND=anthropic`."""

    name = "anthropic"

    def __init__(self, *, model: str, api_key: str, base_url: str | None, timeout: float) -> None:
        self.model = model
        self.timeout = timeout
        self.client = anthropic.Anthropic(api_key=api_key, base_url=base_url or None, timeout=timeout, max_retries=0)

    def close(self) -> None:
        """Release the client's connections."""
        self.client.close()

    def ask(self, question: Question) -> Answer:
        """One message with the prompt as the user's turn."""
        messages: Any = [{"role": "user", "content": question.prompt}]
        try:
            message = self.client.messages.create(model=self.model, max_tokens=question.max_tokens, messages=messages)
        except anthropic.APITimeoutError:
            raise AiTransientError(f"{PROVIDER} did not answer within {self.timeout} s") from None
        except anthropic.APIConnectionError as exc:
            raise AiTransientError(f"{PROVIDER} could not be reached: {exc}") from None
        except anthropic.APIStatusError as exc:
            raise status_error(PROVIDER, exc.status_code, _message(exc.body, exc.message), exc.response.headers) from None
        except anthropic.APIError as exc:
            raise AiTransientError(f"{PROVIDER} answered something unreadable: {exc}") from None
        text = "".join(block.text for block in message.content if isinstance(block, anthropic.types.TextBlock)).strip()
        refusal = "the model declined to answer (stop_reason: refusal)" if message.stop_reason == "refusal" else None
        usage = message.usage
        return Answer(
            text=text, model=message.model or self.model, refusal=refusal,
            input_tokens=usage.input_tokens if usage else None, output_tokens=usage.output_tokens if usage else None,
        )
