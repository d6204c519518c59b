"""What a process that takes events knows of the deploys, never more than `REFRESH_SECONDS` old.

Each API process (and the CLI) decides per event whether it is quiet (`touchpoint.dsl.listening`)
from the playbook versions in the store, and tells account workflows the deploy generation so
that they reload their trigger index after a deploy. Both come from one read of the
`deployments` table, repeated when the last one is more than `REFRESH_SECONDS` old: an event
accepted more than that after a deploy committed is routed by it in every process, however many
`touchpoint api` processes run. A read that fails raises (`StoreUnavailable`): an event is
never routed by a set older than the bound.

Which versions count: every version a deploy stored, current or not. A run keeps the version it
started with and `touchpoint migrate` may move runs to any stored version, so a type that an
older version listens to stays listened to. Versions are immutable: each is parsed once per
process.
"""

from __future__ import annotations

import threading
import time
import weakref
from dataclasses import dataclass, field

from sqlalchemy.orm import Session, sessionmaker

from touchpoint.dsl.listening import Listening, combined, of_playbook
from touchpoint.dsl.schema import Playbook
from touchpoint.store import repo

REFRESH_SECONDS = 1.0
"""How old a process's view of the deploys may be when it routes an event (the bound)."""


class StoreUnavailable(RuntimeError):
    """The store did not answer: events cannot be routed now (retry)."""


@dataclass(frozen=True)
class Deployed:
    """One read of the deploys.

    Attributes:
        generation: The deploy generation (changes with every deploy).
        listening: What every stored playbook version listens to together.
        read_at: `time.monotonic()` when the read began.
    """

    generation: str
    listening: Listening
    read_at: float


@dataclass
class _View:
    deployed: Deployed | None = None
    versions: dict[tuple[str, str], Listening] = field(default_factory=dict)
    lock: threading.Lock = field(default_factory=threading.Lock)


_VIEWS: weakref.WeakKeyDictionary[sessionmaker[Session], _View] = weakref.WeakKeyDictionary()
_VIEWS_LOCK = threading.Lock()


def deployed(sessions: sessionmaker[Session], *, max_age: float = REFRESH_SECONDS) -> Deployed:
    """The deploys of this store as this process knows them, read again when older than ``max_age``.

    Raises:
        StoreUnavailable: the store could not be read.
    """
    with _VIEWS_LOCK:
        view = _VIEWS.get(sessions)
        if view is None:
            view = _VIEWS[sessions] = _View()
    current = view.deployed
    if current is not None and time.monotonic() - current.read_at <= max_age:
        return current
    with view.lock:  # one read at a time per store; the others take its result
        current = view.deployed
        if current is not None and time.monotonic() - current.read_at <= max_age:
            return current
        began = time.monotonic()
        try:
            view.deployed = _read(sessions, view, began)
        except Exception as exc:
            raise StoreUnavailable(f"could not read the deployments from the store: {exc}") from exc
        return view.deployed


def _read(sessions: sessionmaker[Session], view: _View, began: float) -> Deployed:
    with sessions() as s:
        generation = repo.deploy_generation(s)
        listening = stored_listening(s, view.versions)
    return Deployed(generation=generation, listening=listening, read_at=began)


def stored_listening(s: Session, parsed: dict[tuple[str, str], Listening] | None = None) -> Listening:
    """What every playbook version in the store listens to; ``parsed`` keeps versions already read."""
    known = parsed if parsed is not None else {}
    versions = repo.deployed_versions(s, "playbook")
    for key in versions:
        if key not in known:
            row = repo.get_deployment(s, "playbook", key[0], key[1])
            if row is not None:
                known[key] = of_playbook(Playbook.model_validate(row.content["playbook"]), f"{key[0]}@{key[1]}")
    return combined(known[key] for key in versions if key in known)
