"""The command line's cache of derived data: what a CLI run computed that the next one can reuse.

`touchpoint simulate`, `validate` and `preview` are run again and again while a playbook is
written, and a third of their time went to work whose inputs rarely change: checking template
files that were not edited, compiling them, and building holiday calendars. This cache keeps
those results on disk, keyed by a hash of everything they depend on (the input text, and the
installed Jinja2 and holidays, and the size and time of Touchpoint's own checking and
rendering modules, so an edited checker never reads a stale answer).

It is off unless a command turns it on (`with using():`): workers, the API and the workflow
sandbox never read or write it. The folder is `TOUCHPOINT_CACHE_DIR`, else
`$XDG_CACHE_HOME/touchpoint`, else `~/.cache/touchpoint`; `TOUCHPOINT_CACHE_DIR=off` turns it
off. It is created private (0700) and is used only when it belongs to this user and nobody else
can write to it: it holds compiled template code. Deleting it is always safe.
"""

from __future__ import annotations

import hashlib
import json
import marshal
import os
import stat
import sys
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from datetime import date
from functools import lru_cache
from pathlib import Path
from types import CodeType
from typing import Any

import jinja2

_enabled = False


@contextmanager
def using() -> Iterator[None]:
    """Use the cache within the block (a CLI command that validates or renders without a server).

    The setting is restored afterwards, so a command run in-process (tests, `CliRunner`) leaves
    nothing behind for the workers or workflows of the same process.
    """
    global _enabled
    from touchpoint.dsl import sandbox, timing

    before = (_enabled, timing.calendar_store, sandbox.code_store)
    _enabled, timing.calendar_store, sandbox.code_store = True, holiday_calendar, compiled_code
    folder.cache_clear()
    try:
        yield
    finally:
        _enabled, timing.calendar_store, sandbox.code_store = before
        folder.cache_clear()


def holiday_calendar(country: str, year: int, compute: Callable[[], frozenset[date]]) -> frozenset[date]:
    """A country's public holidays in ``year``: from the cache, else computed and kept."""
    name = f"{country}-{year}-{key('holidays')}"
    stored = read_json("holidays", name)
    if isinstance(stored, list):
        return frozenset(date.fromisoformat(str(day)) for day in stored)
    days = compute()
    write_json("holidays", name, sorted(day.isoformat() for day in days))
    return days


@lru_cache(maxsize=1)
def folder() -> Path | None:
    """The cache folder, created when missing; None when the cache is off or unsafe to use."""
    if not _enabled:
        return None
    setting = os.environ.get("TOUCHPOINT_CACHE_DIR")
    if setting is not None and setting.strip().lower() in ("", "off", "0", "no", "false"):
        return None
    if setting:
        path = Path(setting)
    else:
        base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
        path = Path(base) / "touchpoint"
    try:
        path.mkdir(mode=0o700, parents=True, exist_ok=True)
        info = path.stat()
    except OSError:
        return None
    if info.st_uid != os.getuid() or info.st_mode & (stat.S_IWGRP | stat.S_IWOTH):
        return None
    return path


@lru_cache(maxsize=1)
def salt() -> str:
    """What every cached answer depends on besides its own input: the code that computed it."""
    import importlib.util

    parts = [jinja2.__version__]
    here = Path(__file__).parent
    files = [module for sub in ("dsl", "email") for module in sorted((here / sub).glob("*.py"))]
    spec = importlib.util.find_spec("holidays")  # its version, without importing it
    if spec is not None and spec.origin:
        files.append(Path(spec.origin).with_name("version.py"))
    for module in files:
        try:
            info = module.stat()
        except OSError:
            continue
        parts.append(f"{module}:{info.st_size}:{info.st_mtime_ns}")
    return hashlib.sha256("\0".join(parts).encode()).hexdigest()[:16]


def key(*parts: str) -> str:
    """A file-safe key for ``parts`` under the current salt."""
    return hashlib.sha256("\0".join((salt(), *parts)).encode()).hexdigest()[:40]


def compiled_code(text: str, compile: Callable[[], CodeType]) -> CodeType:
    """The code Jinja2 compiles for an expression or inline text: from the cache, else compiled and kept."""
    base = subfolder("compiled-expressions")
    if base is None:
        return compile()
    path = base / f"{key('code', sys.version, text)}.code"
    try:
        code = marshal.loads(path.read_bytes())
        if isinstance(code, CodeType):
            return code
    except (OSError, ValueError, EOFError, TypeError):
        pass
    code = compile()
    with suppress(OSError):
        fd, tmp = tempfile.mkstemp(dir=base, suffix=".tmp")
        with os.fdopen(fd, "wb") as handle:
            handle.write(marshal.dumps(code))
        os.replace(tmp, path)
    return code


def read_json(kind: str, name: str) -> Any | None:
    """The JSON value stored under ``kind/name``, or None (cache off, missing or unreadable)."""
    base = folder()
    if base is None:
        return None
    try:
        return json.loads((base / kind / f"{name}.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None


def write_json(kind: str, name: str, value: Any) -> None:
    """Store ``value`` under ``kind/name`` (atomically; failures are ignored: it is a cache)."""
    base = folder()
    if base is None:
        return
    target = base / kind
    try:
        target.mkdir(mode=0o700, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=target, suffix=".tmp")
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            json.dump(value, handle)
        os.replace(tmp, target / f"{name}.json")
    except OSError:
        return


def subfolder(kind: str) -> Path | None:
    """A private folder for ``kind`` under the current salt (e.g. compiled templates)."""
    base = folder()
    if base is None:
        return None
    path = base / kind / salt()
    try:
        path.mkdir(mode=0o700, parents=True, exist_ok=True)
    except OSError:
        return None
    return path


class CompiledTemplates(jinja2.BytecodeCache):
    """A Jinja2 bytecode cache that keeps compiled templates in the cache folder while it is in use.

    Environments live as long as their process; this object asks on every load and store whether
    the cache is in use, so only the commands inside `using()` read or write compiled code.
    """

    def __init__(self) -> None:
        self._caches: dict[Path, jinja2.FileSystemBytecodeCache] = {}

    def _current(self) -> jinja2.FileSystemBytecodeCache | None:
        path = subfolder("compiled-templates")
        if path is None:
            return None
        found = self._caches.get(path)
        if found is None:
            found = self._caches[path] = jinja2.FileSystemBytecodeCache(str(path))
        return found

    def load_bytecode(self, bucket: jinja2.bccache.Bucket) -> None:
        """Fill ``bucket`` from the cache folder when the cache is in use."""
        current = self._current()
        if current is not None:
            current.load_bytecode(bucket)

    def dump_bytecode(self, bucket: jinja2.bccache.Bucket) -> None:
        """Store ``bucket``'s code in the cache folder when the cache is in use."""
        current = self._current()
        if current is not None:
            with suppress(OSError):  # a cache that cannot write only costs time
                current.dump_bytecode(bucket)
