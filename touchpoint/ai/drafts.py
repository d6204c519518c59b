"""One `draft` step's text: the prompt rendered, the backend asked, the fallback kept when it must be.

Shared by the `draft_text` activity and `simulate` (`touchpoint.engine.effects`), so a simulated
draft is the one a run would get from the same backend.
"""

from __future__ import annotations

from pathlib import Path

from touchpoint.ai.base import AiBackend, AiRejected, Question
from touchpoint.dsl.runtime import DraftInput, DraftResult
from touchpoint.engine.effects import context_of

PROMPT_KEPT = 20_000
"""Characters of the rendered prompt kept in the run's history (the model gets all of it)."""


def prompt_file(name: str) -> str:
    """The file of a prompt or fallback template: `plan_prompt` is `plan_prompt.txt.j2`."""
    return f"{name}.txt.j2"


def render_draft_templates(input: DraftInput, templates: Path) -> tuple[str, str | None]:
    """The rendered prompt and fallback (None without one).

    Raises:
        TemplateRenderError: either does not render (the step fails: retrying cannot help).
    """
    from touchpoint.email.render import render_text_file

    context = context_of(input)
    prompt = render_text_file(templates, prompt_file(input.prompt), context)
    fallback = render_text_file(templates, prompt_file(input.fallback), context) if input.fallback else None
    return prompt, fallback


def write_draft(input: DraftInput, templates: Path, backend: AiBackend | None, backend_name: str) -> DraftResult:
    """The draft for ``input``: the model's text, else the fallback (else the prompt) with a note.

    Raises:
        TemplateRenderError: the prompt or the fallback does not render.
        AiConfigurationError: the backend refused the key (the run pauses).
        AiTransientError: worth retrying (its ``retry_after`` is the provider's hint).
    """
    prompt, fallback = render_draft_templates(input, templates)
    kept = prompt[:PROMPT_KEPT] + (" [...]" if len(prompt) > PROMPT_KEPT else "")

    def without_model(note: str | None, model: str | None = None, **tokens: int | None) -> DraftResult:
        text = fallback if fallback is not None else prompt
        return DraftResult(
            text=text, backend=backend_name, source="fallback" if fallback is not None else "prompt", prompt=kept,
            model=model, words=len(text.split()), note=note, **tokens,
        )

    if backend is None or not input.use_model:
        return without_model(input.note)
    try:
        answer = backend.ask(Question(prompt=prompt, max_words=input.max_words))
    except AiRejected as exc:
        return without_model(str(exc))
    tokens = {"input_tokens": answer.input_tokens, "output_tokens": answer.output_tokens}
    if answer.refusal:
        return without_model(f"the model refused: {answer.refusal}", answer.model, **tokens)
    if not answer.text:
        return without_model("the model answered with no text", answer.model, **tokens)
    return DraftResult(text=answer.text, backend=backend_name, source="model", prompt=kept, model=answer.model, words=len(answer.text.split()), **tokens)
