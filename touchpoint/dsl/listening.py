"""Which event types deployed playbooks can react to: the rest are quiet (contract section 9).

An event is **quiet** when nothing deployed can react to it:

- its type is named by no trigger, `wait_for` or milestone `event` of any deployed version;
- it is none of the engine's and the account's own types (`account.*`, `seats.changed`,
  `usage.reported`, `health.changed`, `task.completed`, `approval.*`, `email.*`, `run.*`);
- and no deployed version has an `exit_when`, `goal` or milestone `when` that reads `event`
  (one that does may react to an event of any type, so then no event is quiet).

So only a deploy changes what is quiet. A quiet event is recorded in the store and reaches no
workflow. This module decides from the playbooks alone; `touchpoint.deployed` keeps the set of
the store's deployed versions fresh in each process.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from touchpoint.dsl.schema import Playbook
from touchpoint.dsl.walk import event_types_named, reads_event

ENGINE_TYPES = frozenset({"seats.changed", "usage.reported", "health.changed", "task.completed"})
"""Types the engine and the account workflow act on whatever is deployed."""
ENGINE_PREFIXES = ("account.", "approval.", "email.", "run.")
"""Families of types the engine and the account workflow act on whatever is deployed."""


def engine_type(event_type: str) -> bool:
    """Whether the engine or the account itself acts on this type (never quiet)."""
    return event_type in ENGINE_TYPES or event_type.startswith(ENGINE_PREFIXES)


@dataclass(frozen=True)
class Listening:
    """The event types some deployed version listens to.

    Attributes:
        types: Types a trigger, a `wait_for` or a milestone `event` names.
        every: Some `exit_when`, `goal` or milestone `when` reads `event`: no event is quiet.
        because: The playbooks (``id@version``) that set ``every``, for messages.
    """

    types: frozenset[str] = frozenset()
    every: bool = False
    because: tuple[str, ...] = ()

    def hears(self, event_type: str) -> bool:
        """Whether an event of this type can reach a run or start one (False: it is quiet)."""
        return self.every or engine_type(event_type) or event_type in self.types

    def quiet(self, event_type: str) -> bool:
        """Whether an event of this type is quiet: recorded, and sent to no workflow."""
        return not self.hears(event_type)


def of_playbook(playbook: Playbook, name: str | None = None) -> Listening:
    """What one playbook (version) listens to; ``name`` labels it in `Listening.because`."""
    every = reads_event(playbook)
    return Listening(
        types=frozenset(event_types_named(playbook)),
        every=every,
        because=(name or playbook.playbook,) if every else (),
    )


def combined(parts: Iterable[Listening]) -> Listening:
    """What a set of playbook versions listens to together."""
    types: set[str] = set()
    because: list[str] = []
    for part in parts:
        types |= part.types
        because.extend(part.because)
    return Listening(types=frozenset(types), every=bool(because), because=tuple(sorted(because)))
