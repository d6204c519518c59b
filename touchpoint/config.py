"""Settings from the environment (contract section 11) and an optional `touchpoint.env` file.

Secrets (API keys, tokens) come from the environment only, never from YAML, and none has a
default in this file: `touchpoint dev` generates its own secret key under `.touchpoint/`, and
a worker or API process outside `dev` refuses to start without `TOUCHPOINT_SECRET_KEY`.
"""

from __future__ import annotations

import ipaddress
import os
import secrets
from functools import lru_cache
from pathlib import Path
from typing import Any, Literal
from urllib.parse import urlsplit, urlunsplit

from pydantic import Field, SecretStr, ValidationError, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

MIN_SECRET_KEY = 32
"""Characters `TOUCHPOINT_SECRET_KEY` needs at least (it signs unsubscribe links)."""
LOOPBACK_NAMES = ("localhost",)


class Settings(BaseSettings):
    """Touchpoint's configuration; every field is `TOUCHPOINT_<NAME>` unless noted."""

    model_config = SettingsConfigDict(
        env_prefix="TOUCHPOINT_",
        env_file="touchpoint.env",
        extra="ignore",
        frozen=True,
        populate_by_name=True,
    )

    home: Path = Path(".touchpoint")
    database_url: str | None = None
    temporal_address: str = "localhost:7233"
    temporal_namespace: str = "default"
    task_queue: str = "touchpoint"
    worker_cache: int = 1000
    """Workflows a worker keeps in memory (bounds RSS; evicted runs replay from history)."""
    secret_key: SecretStr = SecretStr("")
    """Signs unsubscribe links; empty unless set (one-shot commands need none)."""
    public_url: str = "http://127.0.0.1:8000"
    api_bind: str = "127.0.0.1:8000"
    api_token: SecretStr | None = None
    email_backend: Literal["outbox", "sendgrid", "smtp"] = "outbox"
    sendgrid_api_key: SecretStr | None = Field(default=None, validation_alias="SENDGRID_API_KEY")
    sendgrid_url: str | None = None
    sendgrid_webhook_key: str | None = None
    smtp_url: SecretStr | None = None
    crm_backend: Literal["local", "hubspot", "salesforce"] = "local"
    hubspot_token: SecretStr | None = Field(default=None, validation_alias="HUBSPOT_TOKEN")
    hubspot_url: str = "https://api.hubapi.com"
    salesforce_instance_url: str | None = Field(default=None, validation_alias="SALESFORCE_INSTANCE_URL")
    salesforce_access_token: SecretStr | None = Field(default=None, validation_alias="SALESFORCE_ACCESS_TOKEN")
    ai_backend: Literal["none", "openai", "anthropic"] = "none"
    """Who writes `draft` steps' texts: `none` (the rendered fallback, offline), `openai` (any
    OpenAI-compatible chat-completions server) or `anthropic`."""
    ai_url: str | None = None
    """The OpenAI-compatible server's base URL (Azure OpenAI, vLLM, Ollama, LiteLLM), or an Anthropic proxy."""
    ai_key: SecretStr | None = None
    """The OpenAI-compatible server's key (none needed for a local server)."""
    ai_model: str | None = None
    """The model (for Azure OpenAI: the deployment) the `draft` steps ask."""
    anthropic_api_key: SecretStr | None = Field(default=None, validation_alias="ANTHROPIC_API_KEY")
    ai_timeout: float = Field(default=120.0, gt=0, le=280)
    """Seconds one model call may take (the activity allows 300)."""
    temporal_api_key: SecretStr | None = None
    """Temporal Cloud API key (implies TLS)."""
    temporal_tls: bool = False
    """TLS to the frontend with the system's trust store (implied by a client cert or an API key)."""
    temporal_tls_cert: Path | None = None
    """mTLS client certificate (PEM); needs `temporal_tls_key`."""
    temporal_tls_key: Path | None = None
    temporal_tls_ca: Path | None = None
    """A CA bundle for the server's certificate (self-hosted clusters)."""
    temporal_tls_server_name: str | None = None
    max_concurrent_activities: int = Field(default=200, ge=1)
    shutdown_grace: float = Field(default=30.0, ge=0)
    """Seconds a stopping worker lets running activities finish before cancelling them."""
    workflow_sandbox: bool = False
    """Run workflows in the SDK's sandbox (the tests always do; off by default for speed: see `worker.build_worker`)."""
    metrics_bind: str | None = None
    """host:port of a worker's `/metrics`, `/healthz` and `/readyz` (none unless set)."""
    log_format: Literal["json", "human"] | None = None
    """Default: human lines under `dev`, JSON lines in every other long-running process."""
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"
    otel_endpoint: str | None = Field(default=None, validation_alias="OTEL_EXPORTER_OTLP_ENDPOINT")
    """Traces go over OTLP/HTTP there when set (the OpenTelemetry SDK's own variable)."""

    @field_validator("api_bind", "metrics_bind")
    @classmethod
    def _bind(cls, value: str | None) -> str | None:
        if value is None:
            return None
        host, _, port = value.rpartition(":")
        if not host or not port.isdigit():
            raise ValueError(f"expected host:port like 127.0.0.1:8000, found {value!r}")
        return value

    @field_validator("temporal_tls_cert", "temporal_tls_key", "temporal_tls_ca")
    @classmethod
    def _readable(cls, value: Path | None) -> Path | None:
        if value is not None and not value.is_file():
            raise ValueError(f"no such file: {str(value)!r} (a PEM file path)")
        return value

    @model_validator(mode="after")
    def _cert_and_key(self) -> Settings:
        if (self.temporal_tls_cert is None) != (self.temporal_tls_key is None):
            missing = "temporal_tls_key" if self.temporal_tls_key is None else "temporal_tls_cert"
            raise ValueError(f"{missing}: mTLS needs both TOUCHPOINT_TEMPORAL_TLS_CERT and TOUCHPOINT_TEMPORAL_TLS_KEY")
        return self

    @field_validator("temporal_address")
    @classmethod
    def _address(cls, value: str) -> str:
        host, _, port = value.rpartition(":")
        if not host or not port.isdigit():
            raise ValueError(f"expected host:port like localhost:7233, found {value!r}")
        return value

    @property
    def db_url(self) -> str:
        """The SQLAlchemy URL: `TOUCHPOINT_DATABASE_URL`, else a SQLite file under the home folder."""
        return self.database_url or f"sqlite:///{(self.home / 'touchpoint.db').resolve()}"

    @property
    def outbox_dir(self) -> Path:
        """Where the outbox backend writes `.eml` files."""
        return self.home / "outbox"

    def api_host_port(self) -> tuple[str, int]:
        """`api_bind` split into host and port."""
        host, _, port = self.api_bind.rpartition(":")
        return host, int(port)

    def temporal_host_port(self) -> tuple[str, int]:
        """`temporal_address` split into host and port."""
        host, _, port = self.temporal_address.rpartition(":")
        return host, int(port)

    @property
    def api_bind_is_loopback(self) -> bool:
        """True when the API listens on a loopback address only (127.0.0.0/8, ::1, localhost)."""
        return is_loopback(self.api_host_port()[0])

    @property
    def sendgrid_unsigned_allowed(self) -> bool:
        """Whether `POST /webhooks/sendgrid` may accept an unsigned batch: only with no
        `TOUCHPOINT_SENDGRID_WEBHOOK_KEY` and an API bound to loopback (a local try-out)."""
        return not self.sendgrid_webhook_key and self.api_bind_is_loopback

    @property
    def temporal_tls_enabled(self) -> bool:
        """TLS to Temporal: asked for, or implied by a client certificate or an API key."""
        return self.temporal_tls or self.temporal_tls_cert is not None or self.temporal_api_key is not None

    def require_secret_key(self) -> str:
        """The secret key of a long-running process.

        Raises:
            ConfigError: `TOUCHPOINT_SECRET_KEY` is unset or shorter than `MIN_SECRET_KEY`.
        """
        value = self.secret_key.get_secret_value()
        if len(value) < MIN_SECRET_KEY:
            state = "is not set" if not value else f"has {len(value)} characters"
            raise ConfigError(
                f"TOUCHPOINT_SECRET_KEY {state}: a worker or API process needs at least {MIN_SECRET_KEY} random"
                " characters (they sign unsubscribe links; every worker and API must share them). Generate one with"
                " `python -c 'import secrets; print(secrets.token_urlsafe(48))'`. `touchpoint dev` makes its own."
            )
        return value

    def require_safe_bind(self, *, insecure: bool = False) -> None:
        """Refuse an API reachable from other machines without a token.

        Raises:
            ConfigError: `TOUCHPOINT_API_BIND` is not loopback, `TOUCHPOINT_API_TOKEN` is unset and
                ``insecure`` is false.
        """
        if self.api_bind_is_loopback or self.api_token is not None or insecure:
            return
        raise ConfigError(
            f"TOUCHPOINT_API_TOKEN is not set, and TOUCHPOINT_API_BIND={self.api_bind} is reachable from other"
            " machines: anyone could send events and read accounts. Set TOUCHPOINT_API_TOKEN to a long random"
            " value (clients send `Authorization: Bearer <token>`), bind to 127.0.0.1, or pass --insecure."
        )

    def masked(self) -> list[tuple[str, str]]:
        """Every setting as (environment variable, value) with each secret masked."""
        rows = []
        for name, info in type(self).model_fields.items():
            value = getattr(self, name)
            if isinstance(value, SecretStr):
                shown = "****** (set)" if value.get_secret_value() else "(not set)"
            elif value is None:
                shown = "(not set)"
            elif name == "database_url":
                shown = mask_url(value)
            else:
                shown = str(value)
            alias = info.validation_alias if isinstance(info.validation_alias, str) else None
            rows.append((alias or f"TOUCHPOINT_{name.upper()}", shown))
        return rows


def is_loopback(host: str) -> bool:
    """True for 127.0.0.0/8, ::1 and `localhost`; false for 0.0.0.0, names and other addresses."""
    host = host.strip("[]")
    if host in LOOPBACK_NAMES:
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def mask_url(url: str) -> str:
    """``url`` with its password replaced by ``******``."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    netloc = parts.netloc.rsplit("@", 1)
    user = parts.username or ""
    return urlunsplit(parts._replace(netloc=f"{user}:******@{netloc[-1]}"))


def dev_secret_key(home: Path) -> str:
    """The secret key of `touchpoint dev`: made on first start, kept in ``home/secret_key`` (0600).

    Raises:
        ConfigError: The file exists but is readable by others or too short.
    """
    path = home / "secret_key"
    home.mkdir(parents=True, exist_ok=True)
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        mode = path.stat().st_mode & 0o777
        if mode & 0o077:
            raise ConfigError(f"{path} is readable by others (mode {mode:o}): run `chmod 600 {path}`") from None
        value = path.read_text(encoding="utf-8").strip()
        if len(value) < MIN_SECRET_KEY:
            raise ConfigError(f"{path} holds fewer than {MIN_SECRET_KEY} characters: delete it and start again") from None
        return value
    value = secrets.token_urlsafe(48)
    with os.fdopen(fd, "w", encoding="utf-8") as f:
        f.write(value + "\n")
    return value


def with_dev_secret(config: Settings) -> Settings:
    """``config`` with `dev_secret_key` unless `TOUCHPOINT_SECRET_KEY` is set (then it must be long enough)."""
    if config.secret_key.get_secret_value():
        config.require_secret_key()
        return config
    return config.model_copy(update={"secret_key": SecretStr(dev_secret_key(config.home))})


class ConfigError(ValueError):
    """A setting has a bad value; the message names the environment variable."""


_ALIASES = {
    "sendgrid_api_key": "SENDGRID_API_KEY",
    "hubspot_token": "HUBSPOT_TOKEN",
    "salesforce_instance_url": "SALESFORCE_INSTANCE_URL",
    "salesforce_access_token": "SALESFORCE_ACCESS_TOKEN",
    "otel_endpoint": "OTEL_EXPORTER_OTLP_ENDPOINT",
    "anthropic_api_key": "ANTHROPIC_API_KEY",
}


def load_settings(**overrides: Any) -> Settings:
    """Read settings, turning pydantic errors into one message per bad variable.

    Raises:
        ConfigError: naming each variable, its value and what was expected.
    """
    try:
        return Settings(**overrides)
    except ValidationError as exc:
        lines = []
        secret_fields = {n for n, f in Settings.model_fields.items() if "SecretStr" in str(f.annotation)}
        for error in exc.errors(include_url=False):
            msg = str(error["msg"]).removeprefix("Value error, ")
            if error["loc"]:
                name = str(error["loc"][0])
                found = "******" if name in secret_fields else repr(error.get("input"))
            else:  # a check across fields names its field first ("field: message")
                name, _, msg = msg.partition(": ")
                found = None
            variable = _ALIASES.get(name, f"TOUCHPOINT_{name.upper()}")
            lines.append(f"{variable}: {msg}" + (f" (found {found})" if found and "found" not in msg else ""))
        raise ConfigError("invalid configuration:\n  " + "\n  ".join(lines)) from None


@lru_cache(maxsize=1)
def settings() -> Settings:
    """The process-wide settings, read once."""
    return load_settings()
