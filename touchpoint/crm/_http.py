"""The HTTP plumbing both connectors share: one client per backend, transport errors.

Status codes are translated by each provider module (their error bodies differ); this module
only turns "no answer at all" into ``CrmTransientError`` and a bad URL into
``CrmConfigurationError``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from typing import Any

import httpx

from touchpoint.crm.errors import CrmConfigurationError, CrmTransientError
from touchpoint.observability.metrics import provider_call

__all__ = ["build_client", "check_base_url", "parse_retry_after", "send"]

Params = Sequence[tuple[str, str]]


def check_base_url(url: str, *, setting: str, provider: str) -> str:
    """Return ``url`` without a trailing slash, or raise if it is not http(s)://host.

    Raises:
        CrmConfigurationError: The URL has no scheme or host.
    """
    try:
        parsed = httpx.URL(url)
    except httpx.InvalidURL as exc:
        raise CrmConfigurationError(
            f"{setting}={url!r} is not a URL ({exc}); set it to e.g. https://host",
            provider=provider,
        ) from None
    if parsed.scheme not in ("http", "https") or not parsed.host:
        raise CrmConfigurationError(
            f"{setting}={url!r} is not an http(s) URL; set it to e.g. https://host",
            provider=provider,
        )
    return url.rstrip("/")


def build_client(
    *,
    base_url: str,
    headers: Mapping[str, str],
    timeout: float,
    max_connections: int,
) -> httpx.AsyncClient:
    """The backend's one client: explicit timeouts and pool limits, no redirects."""
    return httpx.AsyncClient(
        base_url=base_url,
        headers=dict(headers),
        timeout=httpx.Timeout(timeout, connect=min(timeout, 5.0)),
        limits=httpx.Limits(
            max_connections=max_connections,
            max_keepalive_connections=max_connections,
            keepalive_expiry=30.0,
        ),
        # A redirect from a CRM API means a wrong base URL; following it would hide that
        # (and Salesforce's 300 "several matches" is an answer, not a redirect).
        follow_redirects=False,
    )


async def send(
    client: httpx.AsyncClient,
    method: str,
    url: str,
    *,
    provider: str,
    params: Params | None = None,
    json: Any = None,
    headers: Mapping[str, str] | None = None,
) -> httpx.Response:
    """Send one request; a missing answer becomes a ``CrmTransientError``.

    Raises:
        CrmTransientError: Timeout, refused or dropped connection: retry later.
        CrmConfigurationError: The base URL's scheme is not http(s).
    """
    where = f"{method} {url.split('?', 1)[0]}"
    try:
        with provider_call(provider.lower()) as call:
            response = await client.request(method, url, params=list(params) if params else None, json=json, headers=headers)
            call.status = response.status_code
        return response
    except httpx.TimeoutException as exc:
        raise CrmTransientError(
            f"{provider} did not answer {where} in time ({type(exc).__name__}); the call "
            "will be retried. If this persists, raise the backend's timeout or check the "
            "provider's status page.",
            provider=provider.lower(),
        ) from exc
    except httpx.UnsupportedProtocol as exc:
        raise CrmConfigurationError(
            f"{provider} base URL {str(client.base_url)!r} is not http(s) ({exc}); fix it.",
            provider=provider.lower(),
        ) from exc
    except httpx.TransportError as exc:
        raise CrmTransientError(
            f"{provider} connection failed on {where}: {type(exc).__name__}: {exc or 'no detail'}."
            " The call will be retried; if this persists, check network access to "
            f"{client.base_url.host}.",
            provider=provider.lower(),
        ) from exc


def parse_retry_after(value: str | None, *, now: datetime | None = None) -> float | None:
    """Seconds from a ``Retry-After`` header (delta-seconds or HTTP-date), or None."""
    if not value:
        return None
    text = value.strip()
    try:
        return max(0.0, float(text))
    except ValueError:
        pass
    try:
        when = parsedate_to_datetime(text)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return max(0.0, (when - (now or datetime.now(UTC))).total_seconds())
