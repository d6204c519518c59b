"""The AI backends against local stand-ins of the providers' APIs, through the real `openai` and
`anthropic` clients: what is sent, what is read back, and how each failure is classified."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.servers.ai_server import DEFAULT_REPLY, FakeAI, run_ai_server
from touchpoint.ai.base import (
    AiBackend,
    AiConfigurationError,
    AiRejected,
    AiTransientError,
    Question,
    backend_from_settings,
    retry_hint,
)
from touchpoint.ai.drafts import write_draft
from touchpoint.config import load_settings
from touchpoint.dsl.accounts import AccountDoc
from touchpoint.dsl.runtime import DraftInput, EventIn, RunView

KEY = "sk-stand-in-key-0123456789"
PROVIDERS = ("openai", "anthropic")


_OPEN: list[AiBackend] = []


@pytest.fixture(params=PROVIDERS)
def ai(request: pytest.FixtureRequest) -> Iterator[FakeAI]:
    with run_ai_server(str(request.param), KEY) as server:
        yield server
        while _OPEN:
            _OPEN.pop().close()


def backend_for(ai: FakeAI, tmp_path: Path, *, timeout: float = 10.0, key: str = KEY, model: str = "test-model") -> AiBackend:
    keys = {"ai_key": key} if ai.provider == "openai" else {"anthropic_api_key": key}
    settings = load_settings(home=tmp_path, ai_backend=ai.provider, ai_url=ai.base_url, ai_model=model, ai_timeout=timeout, **keys)
    backend = backend_from_settings(settings)
    assert backend is not None
    _OPEN.append(backend)
    return backend


def test_ai_backends_answer_with_the_text_the_model_and_the_tokens(ai: FakeAI, tmp_path: Path) -> None:
    answer = backend_for(ai, tmp_path).ask(Question(prompt="Write a plan for Acme in five words", max_words=50))
    assert (answer.text, answer.model, answer.refusal) == (DEFAULT_REPLY, "test-model", None)
    assert answer.input_tokens == 8 and answer.output_tokens == len(DEFAULT_REPLY.split())
    (sent,) = ai.requests
    assert sent.body["model"] == "test-model"
    assert sent.body["messages"] == [{"role": "user", "content": "Write a plan for Acme in five words"}]
    if ai.provider == "openai":
        assert sent.headers["authorization"] == f"Bearer {KEY}"
        assert sent.body["max_completion_tokens"] == 100  # max_words bounds the request
    else:
        assert KEY in (sent.headers.get("x-api-key"), sent.headers.get("authorization", "").removeprefix("Bearer ")) and sent.headers["anthropic-version"]
        assert sent.body["max_tokens"] == 100


def test_ai_backends_max_words_cuts_a_long_answer(ai: FakeAI, tmp_path: Path) -> None:
    ai.reply = " ".join(f"w{i}" for i in range(500))
    answer = backend_for(ai, tmp_path).ask(Question(prompt="p", max_words=20))
    assert len(answer.text.split()) == 40


@pytest.mark.parametrize(
    ("headers", "expected"),
    [({"retry-after": "2"}, 2.0), ({"retry-after-ms": "1500"}, 1.5), ({}, None)],
)
def test_ai_backends_429_is_transient_with_the_providers_retry_hint(ai: FakeAI, tmp_path: Path, headers: dict[str, str], expected: float | None) -> None:
    ai.fail_next(429, headers=headers)
    with pytest.raises(AiTransientError) as caught:
        backend_for(ai, tmp_path).ask(Question(prompt="p", max_words=10))
    assert caught.value.retry_after == expected
    assert "429" in str(caught.value)
    assert len(ai.requests) == 1  # the client's own retries are off: Temporal retries


@pytest.mark.parametrize("status", [500, 503, 529])
def test_ai_backends_5xx_is_transient(ai: FakeAI, tmp_path: Path, status: int) -> None:
    ai.fail_next(status)
    with pytest.raises(AiTransientError, match=str(status)):
        backend_for(ai, tmp_path).ask(Question(prompt="p", max_words=10))
    assert len(ai.requests) == 1


@pytest.mark.parametrize("status", [401, 403])
def test_ai_backends_401_and_403_are_configuration_errors(ai: FakeAI, tmp_path: Path, status: int) -> None:
    backend = backend_for(ai, tmp_path, key="sk-wrong" if status == 401 else KEY)
    if status == 403:
        ai.fail_next(403)
    with pytest.raises(AiConfigurationError, match=str(status)) as caught:
        backend.ask(Question(prompt="p", max_words=10))
    assert "sk-wrong" not in str(caught.value) and KEY not in str(caught.value)


def test_ai_backends_a_bad_request_is_rejected(ai: FakeAI, tmp_path: Path) -> None:
    ai.fail_next(400)
    with pytest.raises(AiRejected, match="400"):
        backend_for(ai, tmp_path).ask(Question(prompt="p", max_words=10))


def test_ai_backends_a_timeout_is_transient(ai: FakeAI, tmp_path: Path) -> None:
    ai.delay_next(3.0)
    with pytest.raises(AiTransientError, match="did not answer within 0.3 s"):
        backend_for(ai, tmp_path, timeout=0.3).ask(Question(prompt="p", max_words=10))


def test_ai_backends_a_refusal_and_an_empty_answer_are_read_as_such(ai: FakeAI, tmp_path: Path) -> None:
    backend = backend_for(ai, tmp_path)
    ai.refuse()
    refused = backend.ask(Question(prompt="p", max_words=10))
    assert refused.refusal and refused.text == ""
    ai.answer_empty()
    empty = backend.ask(Question(prompt="p", max_words=10))
    assert (empty.text, empty.refusal) == ("", None)


def test_ai_backends_need_a_model_and_a_key(tmp_path: Path) -> None:
    with pytest.raises(AiConfigurationError, match="TOUCHPOINT_AI_MODEL"):
        backend_from_settings(load_settings(home=tmp_path, ai_backend="openai", ai_key=KEY))
    with pytest.raises(AiConfigurationError, match="TOUCHPOINT_AI_KEY"):
        backend_from_settings(load_settings(home=tmp_path, ai_backend="openai", ai_model="m"))
    with pytest.raises(AiConfigurationError, match="ANTHROPIC_API_KEY"):
        backend_from_settings(load_settings(home=tmp_path, ai_backend="anthropic", ai_model="m"))
    assert backend_from_settings(load_settings(home=tmp_path)) is None
    # A local OpenAI-compatible server (Ollama, vLLM) needs no key.
    local = backend_from_settings(load_settings(home=tmp_path, ai_backend="openai", ai_model="llama3", ai_url="http://127.0.0.1:11434/v1"))
    assert local is not None
    local.close()


def test_ai_backends_retry_hint_reads_seconds_milliseconds_and_dates() -> None:
    from datetime import UTC, datetime

    now = datetime(2026, 12, 1, 12, 0, 0, tzinfo=UTC)
    assert retry_hint({"Retry-After": "7"}) == 7.0
    assert retry_hint({"retry-after-ms": "250", "retry-after": "9"}) == 0.25
    assert retry_hint({"retry-after": "Tue, 01 Dec 2026 12:00:30 GMT"}, now=now) == 30.0
    assert retry_hint({"retry-after": "soon"}) is None and retry_hint(None) is None


# ---------------------------------------------------------------------------- the draft itself


def draft_input(*, fallback: str | None = "plan_fallback", use_model: bool = True, note: str | None = None) -> DraftInput:
    from datetime import UTC, datetime

    now = datetime(2026, 12, 1, tzinfo=UTC)
    account = AccountDoc(id="acme", name="Acme", seats={"licensed": 100, "active": 80})  # type: ignore[arg-type]
    run = RunView(id="r1", playbook="p", version="v1", started_at=now, vars={"objective": "Ship 30% faster"})
    return DraftInput(
        key="r1|steps[0]|-|1", run=run, step="plan", path="steps[0]", account=account, event=EventIn(type="manual"), now=now,
        prompt="plan_prompt", into="plan", fallback=fallback, max_words=100, use_model=use_model, note=note,
    )


@pytest.fixture
def templates(tmp_path: Path) -> Path:
    folder = tmp_path / "templates"
    folder.mkdir()
    (folder / "plan_prompt.txt.j2").write_text("Plan for {{ account.name }} ({{ account.seats.active }} active): {{ run.vars.objective }}\n")
    (folder / "plan_fallback.txt.j2").write_text("Fallback plan for {{ account.name }}.\n")
    return folder


def test_ai_backends_a_draft_is_the_models_text_with_its_prompt(ai: FakeAI, tmp_path: Path, templates: Path) -> None:
    result = write_draft(draft_input(), templates, backend_for(ai, tmp_path), ai.provider)
    assert (result.text, result.source, result.backend, result.note) == (DEFAULT_REPLY, "model", ai.provider, None)
    assert result.prompt == "Plan for Acme (80 active): Ship 30% faster"
    assert result.words == len(DEFAULT_REPLY.split()) and result.model == "test-model"
    assert ai.requests[0].body["messages"][0]["content"] == result.prompt


@pytest.mark.parametrize("case", ["refuse", "empty", "rejected"])
def test_ai_backends_a_refusal_an_empty_answer_or_a_rejection_keep_the_fallback_with_a_note(ai: FakeAI, tmp_path: Path, templates: Path, case: str) -> None:
    {"refuse": ai.refuse, "empty": ai.answer_empty, "rejected": lambda: ai.fail_next(400)}[case]()
    result = write_draft(draft_input(), templates, backend_for(ai, tmp_path), ai.provider)
    assert (result.text, result.source) == ("Fallback plan for Acme.", "fallback")
    assert result.note is not None
    assert {"refuse": "refused", "empty": "no text", "rejected": "400"}[case] in result.note


def test_ai_backends_none_writes_the_fallback_else_the_prompt(templates: Path) -> None:
    result = write_draft(draft_input(), templates, None, "none")
    assert (result.text, result.source, result.backend, result.words) == ("Fallback plan for Acme.", "fallback", "none", 4)
    bare = write_draft(draft_input(fallback=None), templates, None, "none")
    assert (bare.text, bare.source) == ("Plan for Acme (80 active): Ship 30% faster", "prompt")


# ---------------------------------------------------------------------------- simulate with a backend


def test_ai_backends_simulate_asks_the_backend_the_environment_names(ai: FakeAI, tmp_path: Path) -> None:
    import json

    from tests.conftest import invoke_cli, write_folder

    folder = write_folder(tmp_path / "pb", {
        "workspace.yaml": "timezone: UTC\n",
        "p.yaml": "playbook: p\ntrigger: manual\nsteps:\n  - draft: {prompt: plan_prompt, into: plan, fallback: plan_fallback}\n    id: plan\n",
        "templates/plan_prompt.txt.j2": "Plan for {{ account.name }}\n",
        "templates/plan_fallback.txt.j2": "Fallback for {{ account.name }}\n",
    })
    (tmp_path / "acme.yaml").write_text("id: acme\nname: Acme\n")
    keys = {"TOUCHPOINT_AI_KEY": KEY} if ai.provider == "openai" else {"ANTHROPIC_API_KEY": KEY}
    env = {"TOUCHPOINT_AI_BACKEND": ai.provider, "TOUCHPOINT_AI_URL": ai.base_url, "TOUCHPOINT_AI_MODEL": "sim-model", "TOUCHPOINT_HOME": str(tmp_path / "home"), **keys}
    ai.fail_next(429, headers={"retry-after-ms": "50"})  # tried again after the hint
    args = ["simulate", str(folder / "p.yaml"), "--account", str(tmp_path / "acme.yaml"), "--json"]
    result = invoke_cli(args, env)
    assert result.exit_code == 0, result.output
    draft, outcome = (json.loads(line) for line in result.stdout.splitlines())
    assert (draft["backend"], draft["source"], draft["model"], draft["text"]) == (ai.provider, "model", "sim-model", DEFAULT_REPLY)
    assert outcome["outcome"] == "completed" and len(ai.requests) == 2
    # Without the environment's backend, simulate writes the fallback and calls nobody.
    offline = invoke_cli(args, {"TOUCHPOINT_HOME": str(tmp_path / "home")})
    assert json.loads(offline.stdout.splitlines()[0])["text"] == "Fallback for Acme" and len(ai.requests) == 2


def test_ai_backends_a_server_without_max_completion_tokens_gets_max_tokens(tmp_path: Path) -> None:
    from tests.servers.ai_server import FakeOpenAI

    with run_ai_server("openai", KEY) as ai:
        assert isinstance(ai, FakeOpenAI)
        ai.knows_max_completion_tokens = False
        backend = backend_for(ai, tmp_path)
        try:
            answer = backend.ask(Question(prompt="p", max_words=30))
        finally:
            backend.close()
            _OPEN.remove(backend)
    assert answer.text == DEFAULT_REPLY
    first, second = (r.body for r in ai.requests)
    assert first["max_completion_tokens"] == 60 and "max_tokens" not in first
    assert second["max_tokens"] == 60 and "max_completion_tokens" not in second
