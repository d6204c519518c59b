"""Email for Touchpoint: render templates, build messages, deliver them.

* :func:`render_email` turns a template folder plus a context into subject, HTML and text.
* :class:`EmailMessage` is one email to one recipient; :func:`to_mime` gives its MIME form.
* :func:`make_backend` picks a delivery backend (``outbox``, ``sendgrid``, ``smtp``); every
  backend raises the errors of :mod:`touchpoint.email.errors`.

Nothing here imports the store, Temporal or the DSL: callers pass plain values.

Names are imported lazily, so ``from touchpoint.email.jinja import TouchpointEnvironment``
(used by expression code that runs inside workflows) never loads ``sendgrid`` or ``smtplib``.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from touchpoint.email.backends import (
        BACKEND_NAMES,
        EmailBackend,
        OutboxBackend,
        SendGridBackend,
        SendResult,
        SmtpBackend,
        make_backend,
    )
    from touchpoint.email.errors import (
        EmailConfigurationError,
        EmailError,
        PermanentEmailError,
        RecipientRejected,
        TemplateError,
        TemplateNotFound,
        TemplateRenderError,
        TransientEmailError,
    )
    from touchpoint.email.html_text import html_to_text
    from touchpoint.email.jinja import FreeMap, TouchpointEnvironment
    from touchpoint.email.message import (
        EmailMessage,
        message_id_header,
        new_message_id,
        to_mime,
    )
    from touchpoint.email.render import (
        PartLocales,
        RenderedEmail,
        ResolvedTemplate,
        TemplatePart,
        get_environment,
        render_email,
        resolve_parts,
    )

_EXPORTS = {
    "touchpoint.email.backends": (
        "BACKEND_NAMES",
        "EmailBackend",
        "OutboxBackend",
        "SendGridBackend",
        "SendResult",
        "SmtpBackend",
        "make_backend",
    ),
    "touchpoint.email.errors": (
        "EmailConfigurationError",
        "EmailError",
        "PermanentEmailError",
        "RecipientRejected",
        "TemplateError",
        "TemplateNotFound",
        "TemplateRenderError",
        "TransientEmailError",
    ),
    "touchpoint.email.html_text": ("html_to_text",),
    "touchpoint.email.jinja": ("FreeMap", "TouchpointEnvironment"),
    "touchpoint.email.message": ("EmailMessage", "message_id_header", "new_message_id", "to_mime"),
    "touchpoint.email.render": (
        "PartLocales",
        "RenderedEmail",
        "ResolvedTemplate",
        "TemplatePart",
        "get_environment",
        "render_email",
        "resolve_parts",
    ),
}
_MODULE_OF = {name: module for module, names in _EXPORTS.items() for name in names}

__all__ = [
    "BACKEND_NAMES",
    "EmailBackend",
    "EmailConfigurationError",
    "EmailError",
    "EmailMessage",
    "FreeMap",
    "OutboxBackend",
    "PartLocales",
    "PermanentEmailError",
    "RecipientRejected",
    "RenderedEmail",
    "ResolvedTemplate",
    "SendGridBackend",
    "SendResult",
    "SmtpBackend",
    "TemplateError",
    "TemplateNotFound",
    "TemplatePart",
    "TemplateRenderError",
    "TouchpointEnvironment",
    "TransientEmailError",
    "get_environment",
    "html_to_text",
    "make_backend",
    "message_id_header",
    "new_message_id",
    "render_email",
    "resolve_parts",
    "to_mime",
]


def __getattr__(name: str) -> Any:
    module = _MODULE_OF.get(name)
    if module is None:
        raise AttributeError(f"module 'touchpoint.email' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value  # later lookups skip this function
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *__all__})
