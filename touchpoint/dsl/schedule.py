"""What a `schedule` playbook's run sees: `accounts`, `changes`, and the models of one tick.

A schedule playbook (``trigger: {schedule: "0 9 * * mon"}``) runs once per tick over every
account, not per account. `accounts` and `changes` can be large (100,000 accounts), so they never
enter workflow history: activities read them from the store and hand them to Jinja2 here.

`changes` (contract section 2) is the events since the previous tick, by type. Both spellings
work, and a type with no events is an empty list, never an error::

    changes['seats.changed']            changes.seats.changed
    changes['feature.requested'] | rollup('data.feature')

Each event is ``{type, at, data, account}``. The `rollup` filter (a contract extension, in the
spirit of Jinja2's `groupby`) groups a list of events or accounts by a key and ranks the groups by
the ARR of the distinct accounts in them: what a product wishlist or a seat review needs.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from datetime import datetime
from typing import Any

from pydantic import Field

from touchpoint.dsl.runtime import Data, EventIn, Recipient, RunView, StepRecord
from touchpoint.dsl.schema import Playbook
from touchpoint.dsl.workspace import Workspace

# ---------------------------------------------------------------------------- changes


class ChangeList(list[Any]):
    """The events of one type (empty when none), whose sub-types read as attributes.

    ``changes.seats`` holds events of type ``seats`` and answers ``.changed`` with the events of
    ``seats.changed``: the dotted event type reads the way it is written.
    """

    def __init__(self, items: Iterable[Any], prefix: str, load: Callable[[str], list[Any]]) -> None:
        super().__init__(items)
        self._prefix = prefix
        self._load = load

    def __getattr__(self, name: str) -> ChangeList:
        if name.startswith("_"):
            raise AttributeError(name)
        return self._child(name)

    def __getitem__(self, key: Any) -> Any:
        if isinstance(key, str):
            return self._child(key)
        return super().__getitem__(key)

    def _child(self, name: str) -> ChangeList:
        full = f"{self._prefix}.{name}" if self._prefix else name
        return ChangeList(self._load(full), full, self._load)


def changes_root(load: Callable[[str], list[Any]]) -> ChangeList:
    """`changes`: ``load(type)`` returns the events of one type (called once per lookup)."""
    cache: dict[str, list[Any]] = {}

    def cached(event_type: str) -> list[Any]:
        if event_type not in cache:
            cache[event_type] = load(event_type)
        return cache[event_type]

    return ChangeList([], "", cached)


def schedule_cursor_name(playbook: str) -> str:
    """The store cursor holding a schedule playbook's last tick (the start of `changes`)."""
    return f"schedule/{playbook}"


# ---------------------------------------------------------------------------- workflow I/O


class ScheduleRunInput(Data):
    """What a Temporal Schedule (or `touchpoint tick`) starts a `ScheduleRun` with."""

    playbook: str
    version: str | None = None
    """None: the version deployed when the tick runs."""
    tick: datetime | None = None
    """The tick's moment; None: the Schedule's scheduled time (else the workflow's start)."""


class BeginTickInput(Data):
    playbook: str
    version: str | None = None
    tick: datetime
    workflow_id: str


class ScheduleTick(Data):
    """The frozen playbook of one tick and the window its `changes` cover."""

    run_id: str
    playbook: Playbook
    version: str
    workspace: Workspace
    since: datetime
    tick: datetime


class ScheduleCall(Data):
    """Where in a tick an activity is called from: enough to rebuild the context there."""

    run: RunView
    event: EventIn
    now: datetime
    since: datetime
    tick: datetime
    timezone: str = "UTC"


class ScheduleEvalInput(Data):
    call: ScheduleCall
    expressions: list[str]


class ScheduleRecipientsInput(Data):
    call: ScheduleCall
    to: list[str] | None = None
    for_each: str | None = None


class ScheduleRecipient(Data):
    """One recipient of a schedule email; ``csm`` narrows `accounts` and `changes` to a book."""

    recipient: Recipient
    csm: str | None = None


class ScheduleEmailInput(Data):
    call: ScheduleCall
    key: str
    step: str
    path: str
    template: str
    to: ScheduleRecipient
    locales: list[str] = Field(default_factory=list)
    sender_email: str
    sender_name: str | None = None
    unsubscribe_group: int | None = None
    when: str | None = None
    """With `for_each: csm`, the step's `when`, checked against this CSM's book."""


class ScheduleWebhookInput(Data):
    call: ScheduleCall
    key: str
    step: str
    path: str
    url: str
    method: str = "POST"
    json_body: Any = None
    headers: dict[str, str] = Field(default_factory=dict)


class FinishTickInput(Data):
    run_id: str
    playbook: str
    tick: datetime
    outcome: str
    vars: dict[str, Any] = Field(default_factory=dict)
    ended_at: datetime


class ScheduleRunResult(Data):
    run_id: str
    outcome: str
    history: list[StepRecord] = Field(default_factory=list)
    vars: dict[str, Any] = Field(default_factory=dict)
