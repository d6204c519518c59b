"""Render an email (subject, HTML, text) from the Jinja2 templates of a playbook folder.

A template named ``welcome`` is three files in ``templates/``: ``welcome.subject.j2``,
``welcome.html.j2`` and, optionally, ``welcome.txt.j2`` (else the text part is made from the
HTML). Each part may have locale variants (``welcome.de.subject.j2``); the variant is chosen
per part, so a German subject and HTML can sit beside a shared plain-text part.
"""

from __future__ import annotations

import functools
import os
import re
import types
from collections.abc import Mapping, Sequence
from pathlib import Path

import jinja2
from jinja2.exceptions import SecurityError
from markupsafe import escape
from pydantic import BaseModel, ConfigDict

from touchpoint import cache
from touchpoint.dsl import bounds
from touchpoint.email.errors import TemplateNotFound, TemplateRenderError
from touchpoint.email.html_text import html_to_text
from touchpoint.email.jinja import TouchpointEnvironment

__all__ = [
    "PartLocales",
    "RenderedEmail",
    "ResolvedTemplate",
    "TemplatePart",
    "get_environment",
    "render_edited",
    "render_email",
    "render_text_file",
    "resolve_parts",
]

_PARTS = ("subject", "html", "txt")
_HTML_SUFFIXES = (".html.j2", ".htm.j2", ".html", ".htm")
_LOCALE_TAG = re.compile(r"^[A-Za-z0-9]+([-_][A-Za-z0-9]+)*$")
_WHITESPACE = re.compile(r"\s+")
_UNDEFINED_NAME = re.compile(r"^'([^']+)' is undefined$")

# The footer added when a template leaves the unsubscribe link out, by language.
_UNSUBSCRIBE_LABELS = {
    "en": ("Don't want these emails?", "Unsubscribe"),
    "de": ("Sie möchten diese E-Mails nicht mehr erhalten?", "Abmelden"),
    "fr": ("Vous ne souhaitez plus recevoir ces e-mails ?", "Se désabonner"),
    "es": ("¿No quieres recibir estos correos?", "Darse de baja"),
    "it": ("Non vuoi più ricevere queste email?", "Annulla l'iscrizione"),
    "nl": ("Wilt u deze e-mails niet meer ontvangen?", "Afmelden"),
    "pt": ("Não quer receber estes e-mails?", "Cancelar inscrição"),
}


class TemplatePart(BaseModel):
    """One template file chosen for one part of an email.

    Attributes:
        file: Path of the file relative to the templates folder (``welcome.de.html.j2``).
        locale: The locale of the variant as written in the file name, or None for the
            plain part.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    file: str
    locale: str | None = None


class ResolvedTemplate(BaseModel):
    """The files that make up one email template for a given list of locales."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    name: str
    subject: TemplatePart
    html: TemplatePart
    text: TemplatePart | None = None


class PartLocales(BaseModel):
    """The locale variant used for each part; None means the plain part."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    subject: str | None = None
    html: str | None = None
    text: str | None = None


class RenderedEmail(BaseModel):
    """A rendered email, ready to be put into an :class:`~touchpoint.email.EmailMessage`.

    Attributes:
        template: The template name.
        subject: One line, whitespace collapsed.
        html: The HTML part, always containing the unsubscribe link.
        text: The plain-text part, always containing the unsubscribe link.
        locale_used: Which locale variant each part came from.
        template_files: The part files rendered (subject, HTML, then text if it has one),
            relative to the templates folder.
        text_from_html: True when there was no ``.txt.j2`` and the text was made from the HTML.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    template: str
    subject: str
    html: str
    text: str
    locale_used: PartLocales
    template_files: tuple[str, ...]
    text_from_html: bool


def _autoescape(template_name: str | None) -> bool:
    # select_autoescape() looks at the last suffix only, so it would miss ".html.j2".
    return template_name is not None and template_name.lower().endswith(_HTML_SUFFIXES)


_COMPILED = cache.CompiledTemplates()


@functools.lru_cache(maxsize=32)
def _environment_for(root: str) -> TouchpointEnvironment:
    return TouchpointEnvironment(
        loader=jinja2.FileSystemLoader(root),
        # The CLI's cache keeps compiled templates between its runs (off in workers and the API).
        bytecode_cache=_COMPILED,
        autoescape=_autoescape,
        # Tags on their own line leave no stray blank lines in text parts.
        trim_blocks=True,
        lstrip_blocks=True,
    )


def get_environment(templates_dir: Path | str) -> TouchpointEnvironment:
    """Return the (cached) template environment for a templates folder.

    Templates may ``{% extends %}`` and ``{% include %}`` files of that folder and nothing
    else. HTML files (``.html.j2``, ``.html``) are autoescaped; subject and text files are
    not. Edited files are picked up on the next render.

    Args:
        templates_dir: The ``templates/`` folder of a playbook directory.

    Returns:
        A sandboxed :class:`~touchpoint.email.jinja.TouchpointEnvironment`.
    """
    return _environment_for(os.path.realpath(templates_dir))


def _check_name(name: str, templates_dir: Path) -> None:
    problem = None
    if not name.strip():
        problem = "the template name is empty"
    elif name.endswith((".j2", ".subject", ".html", ".txt")):
        base = re.sub(r"(\.(subject|html|txt))?(\.j2)?$", "", name)
        problem = f"template {name!r} names a file; name the template without the part suffix, e.g. template: {base}"
    elif name.startswith("/") or "\\" in name or any(seg in ("", ".", "..") for seg in name.split("/")):
        problem = f"template {name!r} must be a relative path inside {templates_dir}"
    if problem is not None:
        raise TemplateNotFound(problem, name=name)


def _locale_candidates(locales: Sequence[str]) -> list[str]:
    """Expand ``["de-AT", "en"]`` to ``["de-AT", "de", "en"]``: each tag, then its language."""
    out: list[str] = []
    seen: set[str] = set()
    for raw in locales:
        tag = (raw or "").strip().replace("_", "-")
        if not _LOCALE_TAG.match(tag):
            continue
        for candidate in (tag, tag.split("-")[0]):
            if candidate.lower() not in seen:
                seen.add(candidate.lower())
                out.append(candidate)
    return out


def resolve_parts(templates_dir: Path | str, name: str, locales: Sequence[str]) -> ResolvedTemplate:
    """Choose the file for each part of template ``name``.

    Per part, the first locale of ``locales`` with a variant wins (each tag is tried in
    full, then as its language: ``de-CH`` then ``de``); else the plain part is used.
    Locale file names match case-insensitively.

    Args:
        templates_dir: The ``templates/`` folder.
        name: The template name, e.g. ``welcome`` or ``onboarding/welcome``.
        locales: Preferred locales, best first: the recipient's, then the account's.

    Returns:
        The chosen files.

    Raises:
        TemplateNotFound: The subject or HTML part has no file; the message lists every
            file looked for.
    """
    root = Path(templates_dir)
    _check_name(name, root)
    folder, _, base = name.rpartition("/")
    directory = root / folder if folder else root
    try:
        listing = {entry.lower(): entry for entry in os.listdir(directory)}
    except OSError:
        listing = {}
    prefix = f"{folder}/" if folder else ""
    candidates = _locale_candidates(locales)

    looked_for: list[str] = []
    chosen: dict[str, TemplatePart | None] = {}
    for part in _PARTS:
        chosen[part] = None
        for locale in [*candidates, None]:
            wanted = f"{base}.{locale}.{part}.j2" if locale else f"{base}.{part}.j2"
            looked_for.append(prefix + wanted)
            actual = listing.get(wanted.lower())
            if actual is not None and (directory / actual).is_file():
                chosen[part] = TemplatePart(file=prefix + actual, locale=locale)
                break

    subject, html = chosen["subject"], chosen["html"]
    if subject is None or html is None:
        missing = " and ".join(p for p, c in (("subject", subject), ("html", html)) if c is None)
        required = [f for f in looked_for if not f.endswith(".txt.j2")]
        where = f"{root}" if root.is_dir() else f"{root} (the folder does not exist)"
        raise TemplateNotFound(
            f"email template {name!r} has no {missing} part in {where}; looked for: "
            f"{', '.join(required)}. Create {prefix}{base}.subject.j2 and"
            f" {prefix}{base}.html.j2 (and optionally {prefix}{base}.txt.j2).",
            name=name,
            looked_for=looked_for,
        )
    return ResolvedTemplate(name=name, subject=subject, html=html, text=chosen["txt"])


def _display(root: Path, filename: str | None) -> str | None:
    """Show a template file as ``templates/welcome.html.j2`` (relative to the folder's parent)."""
    if not filename:
        return None
    real_root = os.path.realpath(root)
    path = os.path.realpath(filename)
    if os.path.commonpath([real_root, path]) != real_root:
        return filename
    return f"{root.name}/{Path(os.path.relpath(path, real_root)).as_posix()}"


def _template_frame(root: Path, tb: types.TracebackType | None) -> tuple[str, int] | None:
    """The innermost traceback frame inside a template file of ``root``, as (file, line)."""
    real_root = os.path.realpath(root) + os.sep
    found = None
    while tb is not None:
        filename = tb.tb_frame.f_code.co_filename
        if filename.startswith(real_root):
            found = (filename, tb.tb_lineno)
        tb = tb.tb_next
    return found


def _render_error(exc: Exception, root: Path, part_file: str, available: Sequence[str]) -> TemplateRenderError:
    template: str | None
    lineno: int | None
    if isinstance(exc, jinja2.TemplateSyntaxError):
        template = _display(root, exc.filename) or f"{root.name}/{exc.name or part_file}"
        lineno = exc.lineno
        detail = exc.message or "syntax error"
    else:
        frame = _template_frame(root, exc.__traceback__)
        if frame is not None:
            template, lineno = _display(root, frame[0]), frame[1]
        else:
            template, lineno = f"{root.name}/{part_file}", None
        if isinstance(exc, jinja2.TemplateNotFound):
            detail = f"template {exc.name!r} does not exist in {root}"
        elif isinstance(exc, bounds.LimitExceeded):
            detail = f"the template is too costly: {str(exc).rstrip('.')}"
        elif isinstance(exc, SecurityError):
            detail = f"the sandbox refused it: {str(exc).rstrip('.')}"
        elif isinstance(exc, RecursionError):
            detail = "templates nest too deeply (a template that includes or extends itself?)"
        elif isinstance(exc, jinja2.UndefinedError):
            detail = str(exc)
        else:
            detail = f"{type(exc).__name__}: {exc}"
    where = f"{template}:{lineno}" if lineno is not None else f"{template}"
    undefined = _UNDEFINED_NAME.match(str(exc)) if isinstance(exc, jinja2.UndefinedError) else None
    if undefined is not None:
        detail = f"`{undefined.group(1)}` is undefined"
        message = f"{detail} in {where}; available: {', '.join(available)}"
    else:
        message = f"{detail} in {where}"
    return TemplateRenderError(message, template=template, lineno=lineno, detail=detail)


def _render_part(env: TouchpointEnvironment, root: Path, part_file: str, context: Mapping[str, object]) -> str:
    try:
        return str(env.get_template(part_file).render(context))
    except Exception as exc:  # every template failure becomes one readable error
        raise _render_error(exc, root, part_file, list(context)) from None


def _labels(locale: str | None) -> tuple[str, str]:
    language = (locale or "en").replace("_", "-").split("-")[0].lower()
    return _UNSUBSCRIBE_LABELS.get(language, _UNSUBSCRIBE_LABELS["en"])


def _with_html_footer(html: str, url: str, locale: str | None) -> str:
    if url in html or str(escape(url)) in html:
        return html
    question, action = _labels(locale)
    footer = (
        '<p style="font-size:12px;color:#6b7280;margin-top:24px">'
        f'{escape(question)} <a href="{escape(url)}">{escape(action)}</a></p>\n'
    )
    at = html.lower().rfind("</body>")
    if at == -1:
        return f"{html.rstrip()}\n{footer}"
    before = html[:at] if html[:at].endswith("\n") else html[:at] + "\n"
    return f"{before}{footer}{html[at:]}"


def _with_text_footer(text: str, url: str, locale: str | None) -> str:
    if url in text:
        return text
    question, action = _labels(locale)
    return f"{text.rstrip()}\n\n--\n{question} {action}: {url}\n"


def render_email(
    templates_dir: Path | str,
    name: str,
    context: Mapping[str, object],
    *,
    locales: Sequence[str],
    unsubscribe_url: str,
    seconds: float = bounds.RENDER_SECONDS,
) -> RenderedEmail:
    """Render template ``name`` for one recipient.

    Args:
        templates_dir: The ``templates/`` folder.
        name: The template name, e.g. ``welcome``.
        context: The names templates see (``account``, ``contact``, ``event``, ``run``,
            ``now``, ...). Wrap free-form maps in :class:`~touchpoint.email.jinja.FreeMap`.
        locales: Preferred locales, best first (the recipient's, then the account's).
        unsubscribe_url: The recipient's unsubscribe link; templates see it as
            ``unsubscribe_url``, and a footer with it is added to any part that leaves it out.
        seconds: How long the render may take (wall clock; this runs in activities and CLI
            commands, never in workflow code).

    Returns:
        The rendered email.

    Raises:
        TemplateNotFound: The subject or HTML part does not exist.
        TemplateRenderError: A part failed to compile or render, or passed a bound of
            :mod:`touchpoint.dsl.bounds` (the three parts share one budget and ``seconds``);
            the message names the template ``file:line``.
    """
    root = Path(templates_dir)
    resolved = resolve_parts(root, name, locales)
    with bounds.budget(seconds=seconds):
        return _render(root, resolved, context, unsubscribe_url)


def render_text_file(templates_dir: Path | str, file: str, context: Mapping[str, object], *, seconds: float = bounds.RENDER_SECONDS) -> str:
    """Render one plain-text template file of the folder (a `draft` step's prompt or fallback).

    Raises:
        TemplateRenderError: The file is missing, or failed to compile or render, or passed a
            bound of :mod:`touchpoint.dsl.bounds`; the message names the template ``file:line``.
    """
    root = Path(templates_dir)
    with bounds.budget(seconds=seconds):
        return _render_part(get_environment(root), root, file, context).strip()


EDIT_SUBJECT = "approval-edit.subject.j2"
EDIT_HTML = "approval-edit.html.j2"
_EDIT_NAMES = {EDIT_SUBJECT: "the edited subject", EDIT_HTML: "the edited HTML"}


def render_edited(
    templates_dir: Path | str,
    name: str,
    context: Mapping[str, object],
    *,
    locales: Sequence[str],
    unsubscribe_url: str,
    subject: str | None = None,
    html: str | None = None,
    seconds: float = bounds.RENDER_SECONDS,
) -> RenderedEmail:
    """Render template ``name`` with an approver's edit in place of its subject and/or HTML.

    The edit is template source, rendered in the same sandbox and bounds as the files (it may
    extend and include files of the folder; HTML is autoescaped). An edited HTML also replaces
    the text part, which is then made from it. The unsubscribe link is added back when the
    edit leaves it out, as for any template.

    Raises:
        TemplateNotFound: the template has no subject or HTML part.
        TemplateRenderError: the edit (or a part it kept) failed; the message says which.
    """
    root = Path(templates_dir)
    resolved = resolve_parts(root, name, locales)
    sources: dict[str, str] = {}
    if subject is not None:
        sources[EDIT_SUBJECT] = subject
        resolved = resolved.model_copy(update={"subject": TemplatePart(file=EDIT_SUBJECT)})
    if html is not None:
        sources[EDIT_HTML] = html
        resolved = resolved.model_copy(update={"html": TemplatePart(file=EDIT_HTML), "text": None})
    env = TouchpointEnvironment(
        loader=jinja2.ChoiceLoader([jinja2.DictLoader(sources), jinja2.FileSystemLoader(str(root))]),
        autoescape=_autoescape,
        trim_blocks=True,
        lstrip_blocks=True,
    )
    try:
        with bounds.budget(seconds=seconds):
            return _render(root, resolved, context, unsubscribe_url, env)
    except TemplateRenderError as exc:
        message, template = str(exc), exc.template
        for file, words in _EDIT_NAMES.items():
            message = message.replace(f"{root.name}/{file}", words)
            template = (template or "").replace(f"{root.name}/{file}", words) or None
        raise TemplateRenderError(message, template=template, lineno=exc.lineno, detail=exc.detail) from None


def _render(
    root: Path, resolved: ResolvedTemplate, context: Mapping[str, object], unsubscribe_url: str, env: TouchpointEnvironment | None = None
) -> RenderedEmail:
    name = resolved.name
    env = env or get_environment(root)
    values: dict[str, object] = {**context, "unsubscribe_url": unsubscribe_url}

    subject = _WHITESPACE.sub(" ", _render_part(env, root, resolved.subject.file, values)).strip()
    if not subject:
        raise TemplateRenderError(
            f"the subject rendered empty in {root.name}/{resolved.subject.file}; every email needs a subject",
            template=f"{root.name}/{resolved.subject.file}",
            detail="the subject rendered empty",
        )
    html = _with_html_footer(_render_part(env, root, resolved.html.file, values), unsubscribe_url, resolved.html.locale)
    files = [resolved.subject.file, resolved.html.file]
    if resolved.text is not None:
        text = _render_part(env, root, resolved.text.file, values)
        text_locale = resolved.text.locale
        files.append(resolved.text.file)
    else:
        text = html_to_text(html)
        text_locale = resolved.html.locale
    text = _with_text_footer(text, unsubscribe_url, text_locale)

    return RenderedEmail(
        template=name,
        subject=subject,
        html=html,
        text=text,
        locale_used=PartLocales(subject=resolved.subject.locale, html=resolved.html.locale, text=text_locale),
        template_files=tuple(files),
        text_from_html=resolved.text is None,
    )
