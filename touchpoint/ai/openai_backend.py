"""Any OpenAI-compatible chat-completions server, through the official `openai` client.

OpenAI itself (no URL), Azure OpenAI (`https://<resource>.openai.azure.com/openai/v1/`, the
deployment as the model), vLLM, Ollama, LiteLLM and others (their `/v1` URL). The client's own
retries are off: Temporal retries the activity, honouring the provider's retry hint.
"""

from __future__ import annotations

from typing import Any

import openai

from touchpoint.ai.base import AiError, AiRejected, AiTransientError, Answer, Question, status_error

PROVIDER = "the OpenAI-compatible server"


class OpenAIBackend:
    """`TOUCHPOINT_AI_BACKEND=openai`."""

    name = "openai"

    def __init__(self, *, model: str, api_key: str | None, base_url: str | None, timeout: float) -> None:
        self.model = model
        # Local servers (Ollama, vLLM) take no key; the client insists on one.
        self.client = openai.OpenAI(api_key=api_key or "no-key", base_url=base_url or None, timeout=timeout, max_retries=0)

    def close(self) -> None:
        """Release the client's connections."""
        self.client.close()

    def ask(self, question: Question) -> Answer:
        """One chat completion with the prompt as the user's message."""
        messages: Any = [{"role": "user", "content": question.prompt}]
        try:
            try:
                completion = self.client.chat.completions.create(model=self.model, messages=messages, max_completion_tokens=question.max_tokens)
            except openai.BadRequestError as exc:
                # Servers that predate `max_completion_tokens` (older vLLM, some proxies) know `max_tokens` only.
                if "max_completion_tokens" not in str(exc):
                    raise
                completion = self.client.chat.completions.create(model=self.model, messages=messages, max_tokens=question.max_tokens)
        except openai.APITimeoutError:
            raise AiTransientError(f"{PROVIDER} did not answer within {self.client.timeout} s") from None
        except openai.APIConnectionError as exc:
            raise AiTransientError(f"{PROVIDER} could not be reached: {exc}") from None
        except openai.APIStatusError as exc:
            raise status_error(PROVIDER, exc.status_code, _message(exc.body, exc.message), exc.response.headers) from None
        except openai.APIError as exc:  # a body the client could not read
            raise AiTransientError(f"{PROVIDER} answered something unreadable: {exc}") from None
        return _answer(completion, self.model)


def _answer(completion: Any, model: str) -> Answer:
    if not completion.choices:
        raise AiRejected(f"{PROVIDER} answered no choice")
    choice = completion.choices[0]
    message = choice.message
    usage = completion.usage
    tokens = {"input_tokens": usage.prompt_tokens, "output_tokens": usage.completion_tokens} if usage else {}
    refusal = getattr(message, "refusal", None)
    if not refusal and choice.finish_reason == "content_filter":
        refusal = "the content filter stopped the answer"
    return Answer(text=(message.content or "").strip(), model=completion.model or model, refusal=refusal or None, **tokens)


def _message(body: object, fallback: str) -> str:
    """The provider's own error message (`{"error": {"message": ...}}`), else the client's."""
    if isinstance(body, dict):
        inner = body.get("error", body)
        if isinstance(inner, dict) and isinstance(inner.get("message"), str):
            return str(inner["message"])[:300]
    return fallback[:300]


__all__ = ["AiError", "OpenAIBackend"]
