"""A backend that delivers into a folder of ``.eml`` files (local runs, tests, preview)."""

from __future__ import annotations

import contextlib
import os
import tempfile
from pathlib import Path

from touchpoint.email.errors import EmailConfigurationError, TransientEmailError
from touchpoint.email.message import EmailMessage, to_mime
from touchpoint.email.result import SendResult

__all__ = ["OutboxBackend"]


class OutboxBackend:
    """Writes each message to ``<directory>/<message_id>.eml``.

    Writes are atomic (a temporary file, then ``os.replace``), so a reader never sees half a
    message, and idempotent: sending the same ``message_id`` again leaves the first file.
    Categories, custom args and the unsubscribe group are kept as ``X-Touchpoint-*`` headers.
    """

    name: str = "outbox"

    def __init__(self, directory: Path) -> None:
        """Create the backend.

        Args:
            directory: The outbox folder; created on the first send.
        """
        self.directory = Path(directory)

    def path_for(self, message_id: str) -> Path:
        """Return the file a message with this id is (or would be) written to."""
        return self.directory / f"{message_id}.eml"

    def send(self, msg: EmailMessage) -> SendResult:
        """Write ``msg`` to the outbox (once per message id)."""
        path = self.path_for(msg.message_id)
        if path.exists():
            return SendResult(provider_message_id=msg.message_id, status_code=None)
        data = to_mime(msg, metadata_headers=True).as_bytes()
        tmp: str | None = None
        try:
            self.directory.mkdir(parents=True, exist_ok=True)
            fd, tmp = tempfile.mkstemp(dir=self.directory, prefix=f".{msg.message_id}.", suffix=".tmp")
            with os.fdopen(fd, "wb") as handle:
                handle.write(data)
                handle.flush()
                os.fsync(handle.fileno())
            os.replace(tmp, path)
            tmp = None
        except PermissionError as exc:
            raise EmailConfigurationError(
                f"cannot write to the outbox folder {self.directory}: {exc.strerror}; make it"
                " writable or point the outbox elsewhere"
            ) from exc
        except OSError as exc:
            raise TransientEmailError(f"could not write {path}: {exc.strerror or exc}") from exc
        finally:
            if tmp is not None:
                with contextlib.suppress(OSError):
                    os.unlink(tmp)
        return SendResult(provider_message_id=msg.message_id, status_code=None)
