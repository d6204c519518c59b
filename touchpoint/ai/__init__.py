"""AI backends for the `draft` step: OpenAI-compatible chat completions, Anthropic messages, none.

Error tree (`touchpoint.ai.base`)::

    AiError
    ├── AiConfigurationError   a missing key or model, 401/403: the run pauses until fixed
    ├── AiTransientError       429 (with its retry hint), 5xx, a timeout, no connection: retried
    └── AiRejected             any other 4xx: the request itself is wrong; the fallback is kept

A refusal or an empty answer is not an error: `Answer.refusal` says so, and the draft keeps its
fallback with a note (`touchpoint.ai.drafts`).
"""

from __future__ import annotations

from touchpoint.ai.base import AiBackend, AiConfigurationError, AiError, AiRejected, AiTransientError, Answer, Question

__all__ = ["AiBackend", "AiConfigurationError", "AiError", "AiRejected", "AiTransientError", "Answer", "Question"]
