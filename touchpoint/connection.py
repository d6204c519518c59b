"""Connecting to Temporal: a local dev server, a self-hosted cluster (TLS, mTLS) or Temporal Cloud.

Settings (see `touchpoint.config`): `TOUCHPOINT_TEMPORAL_ADDRESS`, `TOUCHPOINT_TEMPORAL_NAMESPACE`,
and for TLS `TOUCHPOINT_TEMPORAL_TLS=1`, mTLS `TOUCHPOINT_TEMPORAL_TLS_CERT` +
`TOUCHPOINT_TEMPORAL_TLS_KEY` (PEM paths, optionally `TOUCHPOINT_TEMPORAL_TLS_CA` and
`TOUCHPOINT_TEMPORAL_TLS_SERVER_NAME`), or a Temporal Cloud API key `TOUCHPOINT_TEMPORAL_API_KEY`.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from typing import TypeVar

from temporalio.client import Client
from temporalio.service import TLSConfig

from touchpoint.config import Settings
from touchpoint.converter import DATA_CONVERTER

log = logging.getLogger("touchpoint.connection")
T = TypeVar("T")


def tls_config(config: Settings) -> TLSConfig | bool:
    """The client's TLS: False, True (system roots) or a `TLSConfig` with the PEM files."""
    if not config.temporal_tls_enabled:
        return False
    if config.temporal_tls_cert is None and config.temporal_tls_ca is None and config.temporal_tls_server_name is None:
        return True
    return TLSConfig(
        client_cert=config.temporal_tls_cert.read_bytes() if config.temporal_tls_cert else None,
        client_private_key=config.temporal_tls_key.read_bytes() if config.temporal_tls_key else None,
        server_root_ca_cert=config.temporal_tls_ca.read_bytes() if config.temporal_tls_ca else None,
        domain=config.temporal_tls_server_name,
    )


async def connect(config: Settings, *, lazy: bool = False) -> Client:
    """A client with the pydantic data converter (the same on every client and worker), the
    settings' namespace and credentials, and this process's interceptors.

    Raises:
        RuntimeError: The server cannot be reached (unless ``lazy``: then at first use).
    """
    from touchpoint.observability import interceptors

    api_key = config.temporal_api_key.get_secret_value() if config.temporal_api_key else None
    return await Client.connect(
        config.temporal_address,
        namespace=config.temporal_namespace,
        data_converter=DATA_CONVERTER,
        tls=tls_config(config),
        api_key=api_key,
        interceptors=interceptors(),
        lazy=lazy,
    )


async def with_backoff(
    what: str,
    attempt: Callable[[], Awaitable[T]],
    *,
    first: float = 0.5,
    limit: float = 15.0,
    stop: asyncio.Event | None = None,
    errors: tuple[type[BaseException], ...] = (Exception,),
) -> T | None:
    """Call ``attempt`` until it succeeds, waiting ``first`` seconds, then twice as long each
    time up to ``limit``, and logging each failure with ``what`` (e.g. "Temporal at host:port").
    Returns None when ``stop`` is set while waiting."""
    delay = first
    failures = 0
    while True:
        try:
            result = await attempt()
        except errors as exc:
            failures += 1
            log.warning("waiting for %s (attempt %d failed: %s); retrying in %.1fs", what, failures, _short(exc), delay)
        else:
            if failures:
                log.info("%s is reachable again after %d failed attempts", what, failures)
            return result
        if stop is None:
            await asyncio.sleep(delay)
        else:
            try:
                await asyncio.wait_for(stop.wait(), delay)
                return None
            except TimeoutError:
                pass
        delay = min(limit, delay * 2)


def _short(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0][:200]}" if text else type(exc).__name__


__all__ = ["connect", "tls_config", "with_backoff"]


