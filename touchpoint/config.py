"""Settings from the environment (contract section 11) and an optional `touchpoint.env` file.

Secrets (API keys, tokens) come from the environment only, never from YAML.
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path
from typing import Literal

from pydantic import Field, SecretStr, ValidationError, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict


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
    secret_key: SecretStr = SecretStr("dev-insecure-secret-change-me")
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

    @field_validator("api_bind")
    @classmethod
    def _bind(cls, value: str) -> str:
        host, _, port = value.rpartition(":")
        if not host or not port.isdigit():
            raise ValueError(f"expected host:port like 127.0.0.1:8000, found {value!r}")
        return value

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


class ConfigError(ValueError):
    """A setting has a bad value; the message names the environment variable."""


_ALIASES = {
    "sendgrid_api_key": "SENDGRID_API_KEY",
    "hubspot_token": "HUBSPOT_TOKEN",
    "salesforce_instance_url": "SALESFORCE_INSTANCE_URL",
    "salesforce_access_token": "SALESFORCE_ACCESS_TOKEN",
}


def load_settings(**overrides: object) -> Settings:
    """Read settings, turning pydantic errors into one message per bad variable.

    Raises:
        ConfigError: naming each variable, its value and what was expected.
    """
    try:
        return Settings(**overrides)  # type: ignore[arg-type]
    except ValidationError as exc:
        lines = []
        for error in exc.errors(include_url=False):
            name = str(error["loc"][0]) if error["loc"] else "?"
            variable = _ALIASES.get(name, f"TOUCHPOINT_{name.upper()}")
            msg = str(error["msg"]).removeprefix("Value error, ")
            lines.append(f"{variable}: {msg} (found {error.get('input')!r})")
        raise ConfigError("invalid configuration:\n  " + "\n  ".join(lines)) from None


@lru_cache(maxsize=1)
def settings() -> Settings:
    """The process-wide settings, read once."""
    return load_settings()
