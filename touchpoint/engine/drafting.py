"""The `draft` step: a text from the configured AI backend, kept in `run.vars.<into>`.

The step asks its host for a `draft_text` effect (an activity, or in memory under `simulate`):
the prompt template is rendered there, never here, and sent to the backend. Its answer is kept
in `run.vars` and on the timeline with the rendered prompt, the model, the token counts and the
number of words (never a key: the backend's credentials stay in the worker's settings).

What happens when the model does not write the text:

- a configuration error (401/403, a missing key) pauses the run, as for any provider; resuming
  it asks again;
- a refusal or an empty answer comes back as the fallback with a ``note`` (the activity decides);
- a failure after the activity's retries (rate limits, 5xx and timeouts past the retry window)
  asks the host once more without the model: the text is then the rendered fallback, else the
  rendered prompt, with a note saying why. Only a template that cannot render fails the step.
"""

from __future__ import annotations

from touchpoint.dsl.runtime import DraftInput, DraftResult
from touchpoint.dsl.schema import DraftStep
from touchpoint.engine.base import Base
from touchpoint.engine.program import EffectDone
from touchpoint.engine.state import Frame, PathPart, Thread

TEMPLATE_FAILED = "Rejected"
"""`EffectDone.error_type` of a prompt or fallback that does not render: the step fails."""


class Drafting(Base):
    """The draft step of the interpreter (the interpreter's `Steps` build on it)."""

    def _draft(self, thread: Thread, frame: Frame, step: DraftStep, path: list[PathPart], name: str, *, note: str | None = None) -> None:
        spec = step.draft
        request = DraftInput(
            **self._effect_fields(thread, path, name),
            prompt=spec.prompt,
            into=spec.into,
            fallback=spec.fallback,
            max_words=spec.max_words,
            use_model=note is None,
            note=note,
        )
        self._effect(thread, frame, "draft_text", request)

    def _draft_done(self, thread: Thread, frame: Frame, step: DraftStep, path: list[PathPart], name: str, done: EffectDone) -> None:
        """Keep the text, or (the model failed for good) ask for the fallback once."""
        if done.error is not None:
            asked_model = frame.recorded is False
            if done.error_type != TEMPLATE_FAILED and asked_model:
                frame.recorded = True  # the fallback is asked for: do not ask again
                self._draft(thread, frame, step, path, name, note=f"the model failed after retries: {done.error}")
                return
            self._failed(thread, frame, step, name, done.error)
            return
        result = DraftResult.model_validate(done.result)
        self.state.vars[step.draft.into] = result.text
        detail: dict[str, object] = {"into": step.draft.into, "backend": result.backend, "words": result.words, "source": result.source}
        if result.model:
            detail["model"] = result.model
        if result.input_tokens is not None or result.output_tokens is not None:
            detail["tokens"] = {"input": result.input_tokens, "output": result.output_tokens}
        if result.note:
            detail["note"] = result.note
        detail.update(prompt=result.prompt, text=result.text)
        self._record(name, "draft", **detail)
        if result.note:
            self._warn(f"step {name}: {result.note}; {step.draft.into} is the {result.source} text")
        frame.phase = "after"
