"""Logs: JSON lines outside `dev`, human lines under it, never a secret.

Every record carries the account, playbook, run and step it concerns where they are known: an
activity interceptor (`touchpoint.observability.context`) puts them in `LOG_CONTEXT` while the
activity runs, and the SDK's workflow and activity loggers add the workflow's id and type.
Nothing formats a record's arguments beyond its message, so no email body or payload is logged
unless a message itself contains one (none does); and `Redactor` replaces the value of every
secret setting, and of every environment variable whose name says it is secret, with `******`
in the final line.
"""

from __future__ import annotations

import contextvars
import json
import logging
import os
import re
import sys
from collections.abc import Iterable
from datetime import UTC, datetime
from typing import Any

from pydantic import SecretStr

from touchpoint.config import Settings

LOG_CONTEXT: contextvars.ContextVar[dict[str, str] | None] = contextvars.ContextVar("touchpoint_log_context", default=None)
"""account, playbook, run and step of the work in progress (set by the activity interceptor)."""

SECRET_NAME = re.compile(r"(KEY|TOKEN|SECRET|PASSWORD|PASSWD|CREDENTIAL)", re.IGNORECASE)
MIN_REDACTED = 6
"""Shorter values are not redacted: they would blank out ordinary words."""


class Redactor:
    """Replaces known secret values in text with ``******``."""

    def __init__(self, secrets: Iterable[str]) -> None:
        values = sorted({s for s in secrets if len(s) >= MIN_REDACTED}, key=len, reverse=True)
        self._pattern = re.compile("|".join(re.escape(v) for v in values)) if values else None

    def __call__(self, text: str) -> str:
        """``text`` without any secret."""
        return self._pattern.sub("******", text) if self._pattern else text


def secret_values(config: Settings, environ: dict[str, str] | None = None) -> list[str]:
    """Every secret this process knows: secret settings, the store's password, secret-named variables."""
    values = [v.get_secret_value() for v in config.__dict__.values() if isinstance(v, SecretStr)]
    if config.database_url:
        from sqlalchemy.engine import make_url

        try:
            password = make_url(config.database_url).password
        except Exception:
            password = None
        if password:
            values.append(str(password))
    env = os.environ if environ is None else environ
    values += [value for name, value in env.items() if SECRET_NAME.search(name)]
    return values


_CONTEXT_FIELDS = ("account", "playbook", "run", "step")


def record_context(record: logging.LogRecord) -> dict[str, str]:
    """What a record is about: our context plus the SDK's workflow/activity details."""
    fields: dict[str, str] = dict(LOG_CONTEXT.get() or {})
    details = getattr(record, "temporal_activity", None) or getattr(record, "temporal_workflow", None)
    if isinstance(details, dict):
        for key in ("workflow_id", "workflow_type", "activity_type", "run_id", "task_queue"):
            if key in details and details[key] is not None:
                fields.setdefault("temporal_" + key if key == "run_id" else key, str(details[key]))
        workflow_id = str(details.get("workflow_id") or "")
        if "account" not in fields and workflow_id.startswith("account/"):
            fields["account"] = workflow_id.removeprefix("account/")
    return fields


class JsonFormatter(logging.Formatter):
    """One JSON object per line: ts, level, logger, msg, context fields, exc."""

    def __init__(self, redact: Redactor) -> None:
        super().__init__()
        self._redact = redact

    def format(self, record: logging.LogRecord) -> str:
        """The record as one redacted JSON line."""
        line: dict[str, Any] = {
            "ts": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": record.getMessage(),
        }
        line.update(record_context(record))
        if record.exc_info:
            line["exc"] = self.formatException(record.exc_info)
        return self._redact(json.dumps(line, default=str, ensure_ascii=False))


class HumanFormatter(logging.Formatter):
    """``HH:MM:SS level logger: message [account=... run=...]``, redacted."""

    def __init__(self, redact: Redactor) -> None:
        super().__init__("%(asctime)s %(levelname)-7s %(name)s: %(message)s", datefmt="%H:%M:%S")
        self._redact = redact

    def format(self, record: logging.LogRecord) -> str:
        """The record as one redacted line (plus a traceback if any)."""
        text = super().format(record)
        context = record_context(record)
        shown = " ".join(f"{k}={context[k]}" for k in _CONTEXT_FIELDS if k in context)
        return self._redact(f"{text} [{shown}]" if shown else text)


def configure_logging(config: Settings, *, default_format: str, stream: Any = None) -> logging.Handler:
    """Send every log record to stderr (or ``stream``) as `TOUCHPOINT_LOG_FORMAT` says, else
    ``default_format`` (``json`` or ``human``), at `TOUCHPOINT_LOG_LEVEL`. Replaces earlier handlers."""
    redact = Redactor(secret_values(config))
    fmt = config.log_format or default_format
    handler = logging.StreamHandler(stream or sys.stderr)
    handler.setFormatter(JsonFormatter(redact) if fmt == "json" else HumanFormatter(redact))
    root = logging.getLogger()
    for existing in list(root.handlers):
        root.removeHandler(existing)
    root.addHandler(handler)
    root.setLevel(config.log_level)
    # Their access and request lines repeat what our own records say; keep warnings.
    for noisy in ("uvicorn.access", "httpx", "httpcore", "alembic"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    return handler
