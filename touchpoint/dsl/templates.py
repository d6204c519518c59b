"""Email template files as validation sees them: finding a template's parts and checking each file.

A `Templates` view lives for one `load_project` call. Checking a file's text (parsing, compiling
and checking the names it uses) is most of a validation's time and depends on nothing but that
text, so the CLI keeps its result in its cache (`touchpoint.cache`); whether the files a template
names exist is checked on every load.
"""

from __future__ import annotations

import bisect
import os
from dataclasses import dataclass
from pathlib import Path

from jinja2 import FileSystemLoader, TemplateSyntaxError, nodes
from jinja2.exceptions import TemplateError

from touchpoint import cache
from touchpoint.dsl import expressions as ex
from touchpoint.dsl.sandbox import TouchpointEnvironment

TEMPLATE_PARTS = ("subject", "html", "txt")


def rel(path: Path) -> str:
    """``path`` relative to the working directory when it is under it (for messages)."""
    try:
        return str(path.relative_to(Path.cwd()))
    except ValueError:
        return str(path)


_TEMPLATE_ENVS: dict[Path, TouchpointEnvironment] = {}


def template_environment(templates_dir: Path) -> TouchpointEnvironment:
    """A file-loading environment for a templates folder (parsing only: no autoescape needed)."""
    env = _TEMPLATE_ENVS.get(templates_dir)
    if env is None:
        env = TouchpointEnvironment(loader=FileSystemLoader(str(templates_dir)), autoescape=False)
        _TEMPLATE_ENVS[templates_dir] = env
    return env


def template_files(templates_dir: Path, name: str) -> dict[str, list[Path]]:
    """The files of an email template by part, the plain one first, then locale variants."""
    return Templates(templates_dir).files(name)


@dataclass(frozen=True)
class TemplateCheck:
    """What one template file says whichever step uses it: (line, message) problems, and the
    existing files it extends, includes or imports."""

    problems: tuple[tuple[int, str], ...]
    references: tuple[tuple[str, int], ...] = ()


class Templates:
    """One load's view of a templates folder.

    Each folder is listed once (globbing it per template and part was a third of validation's
    time on 100 playbooks), each file is read once, and each file is checked once per kind of
    scope, however many steps, playbooks and locales use it. An instance lives for one
    `load_project` call, so a file changed between two calls is always read again.
    """

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self._listings: dict[Path, list[str]] = {}
        self._texts: dict[str, str] = {}
        self._checks: dict[tuple[str, bool, bool], TemplateCheck] = {}

    def listing(self, folder: Path) -> list[str]:
        """The names in ``folder``, sorted (empty when it is missing)."""
        names = self._listings.get(folder)
        if names is None:
            try:
                with os.scandir(folder) as entries:
                    names = sorted(entry.name for entry in entries)
            except OSError:
                names = []
            self._listings[folder] = names
        return names

    def files(self, name: str) -> dict[str, list[Path]]:
        """The files of template ``name`` by part: what globbing ``{name}.*.{part}.j2`` finds."""
        sub, _, base = name.rpartition("/")
        folder = self.folder / sub if sub else self.folder
        listing = self.listing(folder)
        # The names starting with `{base}.` sit together in the sorted listing. Template names
        # hold no glob wildcards, so `{base}.*.{part}.j2` is that prefix plus a suffix.
        prefix = f"{base}."
        start = bisect.bisect_left(listing, prefix)
        end = start
        while end < len(listing) and listing[end].startswith(prefix):
            end += 1
        found: dict[str, list[Path]] = {part: [] for part in TEMPLATE_PARTS}
        for part in TEMPLATE_PARTS:
            plain = self.folder / f"{name}.{part}.j2"
            if plain.exists():
                found[part].append(plain)
            suffix = f".{part}.j2"
            variants = (folder / entry for entry in listing[start:end] if entry.endswith(suffix) and len(entry) >= len(prefix) + len(suffix))
            found[part].extend(sorted(p for p in variants if p != plain and p.name.count(".") == name.count(".") + 3))
        return found

    def read(self, name: str) -> str:
        """The text of ``name`` in the folder.

        Raises:
            OSError: it cannot be read (``FileNotFoundError`` when it does not exist).
        """
        text = self._texts.get(name)
        if text is None:
            text = self._texts[name] = (self.folder / name).read_text(encoding="utf-8")
        return text

    def check(self, name: str, *, schedule: bool, email: bool = True) -> TemplateCheck:
        """Parse and compile ``name``, check the names it uses, and find the files it references.

        ``email`` false checks it as a `draft` step's prompt or fallback: no `contact` and no
        `unsubscribe_url` (a draft is written once per run, for no one recipient).
        """
        key = (name, schedule, email)
        found = self._checks.get(key)
        if found is None:
            found = self._checks[key] = self._check(name, schedule, email)
        return found

    def _check(self, name: str, schedule: bool, email: bool) -> TemplateCheck:
        tdir = self.folder
        try:
            source = self.read(name)
        except FileNotFoundError:
            return TemplateCheck(((1, "template file not found"),))
        found = _static_check(tdir, name, source, schedule, email)
        problems = list(found.problems)
        references: list[tuple[str, int]] = []
        for target, line in found.references:
            if (tdir / target).exists():
                references.append((target, line))
            else:
                problems.append((line, f"`{target}` not found in {rel(tdir)}"))
        return TemplateCheck(tuple(problems), tuple(references))


def check_source(tdir: Path, name: str, source: str) -> list[tuple[int, str]]:
    """What `validate` says of an email template's text given as source (an approver's edit):
    syntax, names and fields, sandbox escapes, bounds, and files it names that do not exist."""
    found = _check_text(tdir, name, source, False)
    problems = list(found.problems)
    problems.extend((line, f"`{target}` not found in {rel(tdir)}") for target, line in found.references if not (tdir / target).is_file())
    return problems


def _static_check(tdir: Path, name: str, source: str, schedule: bool, email: bool = True) -> TemplateCheck:
    """What a template's text alone says: its problems and every file it names (existing or
    not); kept in the CLI's cache (`touchpoint.cache`) by the text's hash."""
    kind = ("schedule" if schedule else "run") + ("" if email else "-draft")
    key = cache.key("template-check", name, kind, source) if cache.folder() else ""
    stored = cache.read_json("template-checks", key) if key else None
    if isinstance(stored, dict):
        return TemplateCheck(
            tuple((int(line), str(message)) for line, message in stored["problems"]),
            tuple((str(target), int(line)) for target, line in stored["references"]),
        )
    found = _check_text(tdir, name, source, schedule, email)
    if key:
        cache.write_json("template-checks", key, {"problems": found.problems, "references": found.references})
    return found


def _check_text(tdir: Path, name: str, source: str, schedule: bool, email: bool = True) -> TemplateCheck:
    env = template_environment(tdir)
    try:
        ast = env.parse(source, name=name, filename=str(tdir / name))
        # Generating the Python source finds what compiling does (unknown filters and
        # tests, ...); `raw=True` skips byte-compiling it, which only rendering needs.
        env.compile(ast, name=name, filename=str(tdir / name), raw=True)
    except TemplateSyntaxError as exc:
        return TemplateCheck(((exc.lineno or 1, f"{exc.message}"),))
    except TemplateError as exc:
        return TemplateCheck(((1, f"{exc}"),))
    except (ValueError, OverflowError, RecursionError):  # a number literal past Python's limit, deep nesting
        return TemplateCheck(((1, "the template nests too deeply or holds a number too long to read"),))
    names = ex.scope(schedule=schedule, email=email)
    problems = tuple((problem.line, problem.message) for problem in ex.check_ast(ast, names, kind="template"))
    references: list[tuple[str, int]] = []
    for node in ast.find_all((nodes.Extends, nodes.Include, nodes.Import, nodes.FromImport)):
        target = getattr(node, "template", None)
        if isinstance(target, nodes.Const) and isinstance(target.value, str):
            references.append((target.value, node.lineno))
    return TemplateCheck(problems, tuple(references))
