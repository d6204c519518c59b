"""Local stand-ins for the two AI APIs the `draft` step uses, written from their published references.

- ``FakeOpenAI``: ``POST /v1/chat/completions`` of the OpenAI API reference (Chat Completions):
  ``Authorization: Bearer <key>`` (else 401 ``invalid_api_key``), a body with ``model``,
  non-empty ``messages`` and ``max_completion_tokens`` (or the deprecated ``max_tokens``), an
  answer ``{"object": "chat.completion", "choices": [{"message": {"role", "content", "refusal"},
  "finish_reason"}], "usage": {"prompt_tokens", "completion_tokens", "total_tokens"}}``, errors
  as ``{"error": {"message", "type", "param", "code"}}``.
- ``FakeAnthropic``: ``POST /v1/messages`` of the Anthropic API reference (Messages):
  ``x-api-key`` (or, as the 2.x client sends it, ``Authorization: Bearer``; else 401
  ``authentication_error``) and ``anthropic-version`` headers, a body
  with ``model``, ``max_tokens`` and ``messages``, an answer ``{"type": "message", "role":
  "assistant", "content": [{"type": "text", "text"}], "stop_reason", "usage": {"input_tokens",
  "output_tokens"}}``, errors as ``{"type": "error", "error": {"type", "message"}}``.

Both answer with ``reply`` (cut to the token bound, one token a word, with the reason the API
gives for that), or as told: ``refuse()``, ``answer_empty()``, a queue of failures
(``fail_next(429, headers={"retry-after": "2"})``) and of delays (``delay_next(5.0)``)::

    with run_ai_server("openai", "sk-test") as ai:
        ai.fail_next(429, headers={"retry-after-ms": "1500"})
        ...
        assert ai.requests[-1].body["max_completion_tokens"] == 800
"""

from __future__ import annotations

import contextlib
import json
import threading
import time
from collections import deque
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

DEFAULT_REPLY = "A plan in three steps: map the work, automate one workflow, measure the time saved."


@dataclass
class Received:
    """One request as the stand-in read it."""

    path: str
    headers: dict[str, str]
    body: Any
    at: float = field(default_factory=time.monotonic)


@dataclass
class _Failure:
    status: int
    headers: dict[str, str]
    body: bytes | None


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True

    def handle_error(self, request: Any, client_address: Any) -> None:
        pass  # a client that gave up (a timeout test) closes its socket mid-answer


class FakeAI:
    """What both stand-ins share: the key, the queued behaviours, the requests received."""

    provider = ""
    path = ""

    def __init__(self, api_key: str) -> None:
        self.api_key = api_key
        self.reply = DEFAULT_REPLY
        self.model_name: str | None = None
        self.requests: list[Received] = []
        self._failures: deque[_Failure] = deque()
        self._delays: deque[float] = deque()
        self._mode: deque[str] = deque()
        self._lock = threading.Lock()
        self._stop = threading.Event()
        stand_in = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, format: str, *args: Any) -> None:
                pass

            def do_POST(self) -> None:
                raw = self.rfile.read(int(self.headers.get("Content-Length", 0) or 0))
                status, headers, body = stand_in._handle(self.path, {k.lower(): v for k, v in self.headers.items()}, raw)
                self.send_response(status)
                for name, value in {"Content-Type": "application/json", **headers, "Content-Length": str(len(body))}.items():
                    self.send_header(name, value)
                self.end_headers()
                try:
                    self.wfile.write(body)
                except OSError:
                    pass

        self.server = _Server(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        """Where the stand-in listens."""
        return f"http://127.0.0.1:{self.server.server_address[1]}"

    @property
    def base_url(self) -> str:
        """The base URL its client is given (`TOUCHPOINT_AI_URL`)."""
        return self.url

    def start(self) -> None:
        self.thread.start()

    def close(self) -> None:
        self._stop.set()
        self.server.shutdown()
        self.server.server_close()
        self.thread.join(timeout=5)

    # ------------------------------------------------------------------ programming it

    def fail_next(self, status: int, *, headers: Mapping[str, str] | None = None, body: Mapping[str, Any] | None = None, times: int = 1) -> None:
        """Answer the next ``times`` requests with ``status`` (the API's error body unless given)."""
        payload = json.dumps(dict(body)).encode() if body is not None else None
        with self._lock:
            self._failures.extend(_Failure(status, dict(headers or {}), payload) for _ in range(times))

    def delay_next(self, seconds: float, *, times: int = 1) -> None:
        """Hold the next ``times`` answers this long (a client with a shorter timeout gives up)."""
        with self._lock:
            self._delays.extend([seconds] * times)

    def refuse(self, times: int = 1) -> None:
        """The next answers are the model declining."""
        with self._lock:
            self._mode.extend(["refuse"] * times)

    def answer_empty(self, times: int = 1) -> None:
        """The next answers carry no text."""
        with self._lock:
            self._mode.extend(["empty"] * times)

    # ------------------------------------------------------------------ answering

    def _handle(self, path: str, headers: dict[str, str], raw: bytes) -> tuple[int, dict[str, str], bytes]:
        try:
            body = json.loads(raw or b"null")
        except ValueError:
            body = None
        with self._lock:
            self.requests.append(Received(path, headers, body))
            delay = self._delays.popleft() if self._delays else 0.0
        if delay:
            self._stop.wait(delay)
        if path.split("?", 1)[0] != self.path:
            return 404, {}, self._error(404, "not_found_error", f"no route {path}")
        if not self._authorized(headers):
            return 401, {}, self._error(401, "authentication_error", "invalid API key")
        with self._lock:
            failure = self._failures.popleft() if self._failures else None
        if failure is not None:
            return failure.status, failure.headers, failure.body or self._error(failure.status, _ERROR_TYPES.get(failure.status, "api_error"), f"stand-in failure {failure.status}")
        problem = self._invalid(headers, body)
        if problem is not None:
            return 400, {}, self._error(400, "invalid_request_error", problem)
        with self._lock:
            mode = self._mode.popleft() if self._mode else "text"
        return 200, {}, json.dumps(self._answer(body, mode)).encode()

    def _authorized(self, headers: dict[str, str]) -> bool:
        raise NotImplementedError

    def _invalid(self, headers: dict[str, str], body: Any) -> str | None:
        raise NotImplementedError

    def _answer(self, body: dict[str, Any], mode: str) -> dict[str, Any]:
        raise NotImplementedError

    def _error(self, status: int, kind: str, message: str) -> bytes:
        raise NotImplementedError

    def _cut(self, limit: int) -> tuple[str, bool]:
        """``reply`` within ``limit`` tokens (a word a token here), and whether it was cut."""
        words = self.reply.split()
        return " ".join(words[:limit]), len(words) > limit


_ERROR_TYPES = {400: "invalid_request_error", 401: "authentication_error", 403: "permission_error", 404: "not_found_error", 429: "rate_limit_error", 500: "api_error", 529: "overloaded_error"}


def _prompt_words(body: dict[str, Any]) -> int:
    return sum(len(str(m.get("content", "")).split()) for m in body.get("messages", []) if isinstance(m, dict))


def _messages_problem(body: Any) -> str | None:
    if not isinstance(body, dict):
        return "the body must be a JSON object"
    if not isinstance(body.get("model"), str) or not body["model"]:
        return "model: field required"
    messages = body.get("messages")
    if not isinstance(messages, list) or not messages:
        return "messages: at least one message is required"
    for i, message in enumerate(messages):
        if not isinstance(message, dict) or message.get("role") not in ("system", "developer", "user", "assistant") or "content" not in message:
            return f"messages.{i}: expected {{role, content}}"
    return None


class FakeOpenAI(FakeAI):
    """OpenAI's Chat Completions (see the module docstring)."""

    provider = "openai"
    path = "/v1/chat/completions"
    knows_max_completion_tokens = True
    """False: answer like a server that predates `max_completion_tokens` (400 naming it)."""

    @property
    def base_url(self) -> str:
        return f"{self.url}/v1"

    def _authorized(self, headers: dict[str, str]) -> bool:
        return headers.get("authorization") == f"Bearer {self.api_key}"

    def _invalid(self, headers: dict[str, str], body: Any) -> str | None:
        problem = _messages_problem(body)
        if problem is not None:
            return problem
        if "max_completion_tokens" in body and not self.knows_max_completion_tokens:
            return "Unrecognized request argument supplied: max_completion_tokens"
        if "max_completion_tokens" in body and "max_tokens" in body:
            return "max_tokens and max_completion_tokens cannot both be set"
        bound = body.get("max_completion_tokens", body.get("max_tokens"))
        if bound is not None and (not isinstance(bound, int) or bound < 1):
            return "max_completion_tokens: expected an integer of at least 1"
        return None

    def _answer(self, body: dict[str, Any], mode: str) -> dict[str, Any]:
        limit = body.get("max_completion_tokens") or body.get("max_tokens") or 4096
        text, cut = self._cut(int(limit))
        message: dict[str, Any] = {"role": "assistant", "content": text, "refusal": None}
        finish = "length" if cut else "stop"
        if mode == "refuse":
            message.update(content=None, refusal="I can't help with that request.")
        elif mode == "empty":
            message["content"] = ""
        completion_tokens = len((message["content"] or message["refusal"] or "").split())
        prompt_tokens = _prompt_words(body)
        return {
            "id": f"chatcmpl-{len(self.requests)}",
            "object": "chat.completion",
            "created": int(time.time()),
            "model": self.model_name or body["model"],
            "choices": [{"index": 0, "message": message, "logprobs": None, "finish_reason": finish}],
            "usage": {"prompt_tokens": prompt_tokens, "completion_tokens": completion_tokens, "total_tokens": prompt_tokens + completion_tokens},
        }

    def _error(self, status: int, kind: str, message: str) -> bytes:
        code = {401: "invalid_api_key", 429: "rate_limit_exceeded"}.get(status)
        return json.dumps({"error": {"message": message, "type": kind, "param": None, "code": code}}).encode()


class FakeAnthropic(FakeAI):
    """Anthropic's Messages API (see the module docstring)."""

    provider = "anthropic"
    path = "/v1/messages"

    @property
    def base_url(self) -> str:
        return self.url

    def _authorized(self, headers: dict[str, str]) -> bool:
        # The reference documents `x-api-key`; `anthropic` 2.x clients send the key as a bearer token.
        return self.api_key in (headers.get("x-api-key"), headers.get("authorization", "").removeprefix("Bearer "))

    def _invalid(self, headers: dict[str, str], body: Any) -> str | None:
        if not headers.get("anthropic-version"):
            return "anthropic-version: header is required"
        problem = _messages_problem(body)
        if problem is not None:
            return problem
        if not isinstance(body.get("max_tokens"), int) or body["max_tokens"] < 1:
            return "max_tokens: field required (an integer of at least 1)"
        if body["messages"][0].get("role") != "user":
            return "messages: the first message must use the user role"
        return None

    def _answer(self, body: dict[str, Any], mode: str) -> dict[str, Any]:
        text, cut = self._cut(int(body["max_tokens"]))
        content: list[dict[str, Any]] = [{"type": "text", "text": text}]
        stop = "max_tokens" if cut else "end_turn"
        if mode == "refuse":
            content, stop = [], "refusal"
        elif mode == "empty":
            content = []
        return {
            "id": f"msg_{len(self.requests):024d}",
            "type": "message",
            "role": "assistant",
            "model": self.model_name or body["model"],
            "content": content,
            "stop_reason": stop,
            "stop_sequence": None,
            "usage": {"input_tokens": _prompt_words(body), "output_tokens": sum(len(c["text"].split()) for c in content)},
        }

    def _error(self, status: int, kind: str, message: str) -> bytes:
        return json.dumps({"type": "error", "error": {"type": kind, "message": message}, "request_id": f"req_{len(self.requests)}"}).encode()


@contextlib.contextmanager
def run_ai_server(provider: str, api_key: str) -> Iterator[FakeAI]:
    """Run ``FakeOpenAI`` (``provider="openai"``) or ``FakeAnthropic`` on 127.0.0.1 for the block."""
    server: FakeAI = FakeOpenAI(api_key) if provider == "openai" else FakeAnthropic(api_key)
    server.start()
    try:
        yield server
    finally:
        server.close()
