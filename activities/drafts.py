"""The `draft` step's side effect: the prompt rendered here (never in workflow code), the model asked.

A draft is no message to anyone, so it keeps no ledger: a retry asks the model again. Errors are
Temporal's to handle: a missing or refused key is a configuration error (the run pauses), a rate
limit, a 5xx or a timeout is retried with back-off and the provider's retry hint, and a prompt
that does not render fails the step. A refusal, an empty answer or a rejected request comes back
as the fallback with a note.
"""

from __future__ import annotations

import asyncio
from datetime import timedelta

from temporalio import activity
from temporalio.exceptions import ApplicationError

from activities.deps import Deps
from activities.email import materialize_templates
from activities.store import write_carried
from touchpoint.ai.base import AiConfigurationError, AiTransientError
from touchpoint.ai.drafts import write_draft
from touchpoint.dsl.runtime import DraftInput, DraftResult
from workflows import names


class DraftActivities:
    """`draft_text`."""

    def __init__(self, deps: Deps) -> None:
        self.deps = deps

    @activity.defn(name=names.DRAFT_TEXT)
    async def draft_text(self, input: DraftInput) -> DraftResult:
        """Render the prompt and fallback, ask the configured backend, answer the text."""
        from touchpoint.email.errors import TemplateError

        await write_carried(self.deps, input)
        templates = materialize_templates(self.deps, input.run.playbook, input.run.version)
        try:
            backend = self.deps.ai_backend() if input.use_model else None
            return await asyncio.to_thread(write_draft, input, templates, backend, self.deps.settings.ai_backend)
        except TemplateError as exc:
            # Name the file as the playbook folder does (`templates/x.txt.j2`), not the worker's copy.
            message = str(exc).replace(f"{templates.name}/", "templates/")
            raise ApplicationError(message, type="Rejected", non_retryable=True) from None
        except AiConfigurationError as exc:
            raise ApplicationError(str(exc), type=names.CONFIGURATION_ERROR, non_retryable=True) from None
        except AiTransientError as exc:
            delay = timedelta(seconds=exc.retry_after) if exc.retry_after is not None else None
            raise ApplicationError(str(exc), type="AiTransient", next_retry_delay=delay) from None
