"""The `webhook` step: JSON from templates, `${ENV}` secrets resolved at send time, never stored."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import httpx
from sqlalchemy.orm import Session
from temporalio import activity
from temporalio.exceptions import ApplicationError

from activities.deps import Deps
from activities.render import context_of, render, render_tree, resolve_secrets
from activities.store import write_carried
from touchpoint.dsl.runtime import EffectResult, WebhookInput
from touchpoint.observability.metrics import provider_call
from touchpoint.store import repo
from workflows import names


class WebhookActivities:
    """Calls out over one shared httpx client."""

    def __init__(self, deps: Deps, client: httpx.AsyncClient | None = None) -> None:
        self.deps = deps
        self._client = client

    @property
    def client(self) -> httpx.AsyncClient:
        """The shared client, made on first use: its TLS context costs ~0.1 s of every worker's
        start (a simulation, which never calls out, starts one each time)."""
        if self._client is None:
            self._client = httpx.AsyncClient(timeout=httpx.Timeout(10.0), limits=httpx.Limits(max_connections=20))
        return self._client

    @activity.defn(name=names.CALL_WEBHOOK)
    async def call_webhook(self, input: WebhookInput) -> EffectResult:
        """POST (or the given method) once per ledger key; retry on 429/5xx honouring Retry-After."""
        await write_carried(self.deps, input)
        return await self.deliver(input, context_of(input))

    async def deliver(self, input: WebhookInput, context: dict[str, Any]) -> EffectResult:
        """Render with ``context`` and call once per ledger key (shared with schedule runs)."""
        done = await self.deps.db(lambda s: repo.ledger_get(s, input.key))
        if done is not None and done.status == "done":
            return EffectResult(detail=dict(done.result or {}))
        url_template = render(input.url, context)
        body = render_tree(input.json_body, context) if input.json_body is not None else None
        headers = {k: render(v, context) for k, v in input.headers.items()}
        if input.simulation:
            detail: dict[str, object] = {"url": url_template, "status": None, "simulated": True}
            return EffectResult(detail=detail)
        try:
            with provider_call("webhook") as call:
                response = await self.client.request(
                    input.method,
                    resolve_secrets(url_template),
                    json=resolve_secrets(body),
                    headers={**resolve_secrets(headers), "Idempotency-Key": input.key},
                )
                call.status = response.status_code
        except httpx.TransportError as exc:
            raise ApplicationError(f"webhook {url_template} unreachable: {exc!r}", type="WebhookTransient") from None
        if response.status_code == 429 or response.status_code >= 500:
            retry_after = response.headers.get("Retry-After")
            delay = timedelta(seconds=float(retry_after)) if retry_after and retry_after.isdigit() else None
            raise ApplicationError(f"webhook {url_template} answered {response.status_code}", type="WebhookTransient", next_retry_delay=delay)
        if response.status_code in (401, 403):
            raise ApplicationError(f"webhook {url_template} answered {response.status_code}: check its credentials", type=names.CONFIGURATION_ERROR, non_retryable=True)
        if response.status_code >= 400:
            raise ApplicationError(f"webhook {url_template} answered {response.status_code}: {response.text[:200]}", type="Rejected", non_retryable=True)
        # The template URL, not the resolved one: secrets never reach the store or the history.
        detail = {"url": url_template, "status": response.status_code, "simulated": False}

        def work(s: Session) -> None:
            repo.ledger_reserve(s, input.key, "webhook")
            repo.ledger_finish(s, input.key, "done", detail)

        await self.deps.db(work)
        return EffectResult(detail=detail)
