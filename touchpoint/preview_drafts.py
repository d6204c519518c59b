"""`touchpoint preview` for `draft` steps: the prompt a model would get, and the offline draft.

For each draft step the prompt and fallback are rendered for the account (`run.vars` as
`touchpoint.preview.preview_vars` guesses them) and written to ``<out>/<account id>/<step>.draft.txt``;
the draft shown is what the `none` backend keeps (the fallback, else the prompt), which is also
what later emails of the preview see in `run.vars.<into>`.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from touchpoint.dsl.accounts import AccountDoc
from touchpoint.dsl.schema import DraftStep
from touchpoint.dsl.validate import LoadedPlaybook
from touchpoint.dsl.walk import all_steps, step_name
from touchpoint.dsl.workspace import Workspace


@dataclass(frozen=True)
class DraftPreview:
    """One draft step of a preview: the variable, the file written, the words of the offline draft."""

    step: str
    into: str
    path: Path
    words: int
    error: str | None = None


def draft_text(step: DraftStep, templates_dir: Path, context: dict[str, Any]) -> tuple[str, str | None]:
    """The rendered prompt and the offline draft (the fallback, else the prompt).

    Raises:
        TemplateRenderError: the prompt or the fallback does not render.
    """
    from touchpoint.email.render import render_text_file

    prompt = render_text_file(templates_dir, f"{step.draft.prompt}.txt.j2", context)
    fallback = render_text_file(templates_dir, f"{step.draft.fallback}.txt.j2", context) if step.draft.fallback else None
    return prompt, fallback


def preview_drafts(
    loaded: LoadedPlaybook, account: AccountDoc, workspace: Workspace, templates_dir: Path, out_dir: Path, *, now: datetime | None = None
) -> list[DraftPreview]:
    """Write each draft step's prompt and offline draft; ``out_dir`` is the account's folder."""
    from touchpoint.email.errors import TemplateError
    from touchpoint.preview import preview_context, preview_vars

    moment = now or datetime.now(UTC)
    found: list[DraftPreview] = []
    for path, step in all_steps(loaded.playbook):
        if not isinstance(step, DraftStep):
            continue
        name = step_name(step, path)
        run_vars = preview_vars(loaded, account, workspace, now=moment, path=path)
        context = preview_context(loaded, account, workspace, now=moment, run_vars=run_vars)
        target = out_dir / f"{_stem(name)}.draft.txt"
        try:
            prompt, fallback = draft_text(step, templates_dir, context)
        except TemplateError as exc:
            found.append(DraftPreview(name, step.draft.into, target, 0, str(exc)))
            continue
        draft = fallback if fallback is not None else prompt
        source = "the fallback" if fallback is not None else "the prompt (no fallback)"
        target.write_text(
            f"draft {name} -> run.vars.{step.draft.into} (at most {step.draft.max_words} words)\n\n"
            f"== the prompt the model gets\n{prompt}\n\n== the draft without a model: {source}\n{draft}\n",
            encoding="utf-8",
        )
        found.append(DraftPreview(name, step.draft.into, target, len(draft.split())))
    return found


def _stem(step: str) -> str:
    import re

    return re.sub(r"[^A-Za-z0-9_.-]+", "_", step).strip("_") or "step"
