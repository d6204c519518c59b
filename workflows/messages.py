"""What the account workflow takes, keeps and asks of the store: its messages, in one place.

Plain pydantic models passed through the workflow sandbox. The API and the CLI send an
`Envelope` (an event, or an account upsert), a `StartRequest` or a `RunControl`; the workflow
carries an `AccountState` across continue-as-new (its runs' states included); its store steps
take a `StoreStep` or `PrepareStarts` and answer a `StoreResult`; `ProjectRuns` writes where
each run stands for `touchpoint status`, the console and analytics.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

from pydantic import Field

from touchpoint.dsl.accounts import AccountDoc
from touchpoint.dsl.runtime import Data, EventIn, RunProjection, StartRequest
from touchpoint.dsl.schema import Playbook
from touchpoint.dsl.workspace import Workspace
from touchpoint.engine.state import RunState

__all__ = [
    "AccountState",
    "DeployedIndex",
    "Envelope",
    "LoadContextInput",
    "Loaded",
    "LoadedContext",
    "PlannedStart",
    "PrepareStarts",
    "ProjectRuns",
    "RunControl",
    "RunProjection",
    "Scripted",
    "StartRequest",
    "StoreResult",
    "StoreStep",
    "TriggerEntry",
]


class TriggerEntry(Data):
    """One deployed playbook, as the account workflow needs it to decide enrollments."""

    playbook: str
    version: str
    kind: str
    event: str | list[str] | None = None
    when: str | None = None
    reenroll: str = "never"

    def fires_on(self, event_type: str) -> bool:
        """Whether this is an event trigger naming ``event_type``."""
        if self.kind != "event" or self.event is None:
            return False
        return event_type == self.event if isinstance(self.event, str) else event_type in self.event


class DeployedIndex(Data):
    """The deployed playbooks' triggers and the workspace, at one deploy generation."""

    generation: str
    triggers: list[TriggerEntry] = Field(default_factory=list)
    workspace: Workspace = Field(default_factory=Workspace)


class Envelope(Data):
    """What the API sends an account workflow: an event, or an account upsert (with its doc)."""

    event: EventIn
    account: AccountDoc | None = None
    generation: str | None = None


class RunControl(Data):
    """Pause, resume or cancel one run of the account (by run id, else by playbook); ``stop``
    ends it as still ``running`` (a simulation's horizon)."""

    action: Literal["pause", "resume", "cancel", "stop"]
    run_id: str | None = None
    playbook: str | None = None
    reason: str | None = None


class StartAnswer(Data):
    """What a start request did: ``started`` (``run_id`` is the new run), ``in_flight`` (``run_id``
    and ``status`` are the run already there), ``not_deployed`` or ``unknown_account``."""

    result: Literal["started", "in_flight", "not_deployed", "unknown_account"]
    run_id: str | None = None
    status: str | None = None


class AccountState(Data):
    """Everything the account workflow carries across continue-as-new."""

    account_id: str
    account: AccountDoc | None = None
    index: DeployedIndex | None = None
    runs: dict[str, RunState] = Field(default_factory=dict)
    """The runs in flight, by run id (each run's playbook version is in its state)."""
    last_started: dict[str, datetime] = Field(default_factory=dict)
    seen_ids: list[str] = Field(default_factory=list)
    pending: list[Envelope] = Field(default_factory=list)
    starts: list[StartRequest] = Field(default_factory=list)
    controls: list[RunControl] = Field(default_factory=list)
    applied: int = 0
    """Store steps so far: with the workflow's run id, the token of each (a retried task's own)."""
    clock_offset: float = 0.0
    """Seconds added to Temporal's clock: simulations start in the past or the future."""
    simulation: bool = False
    """A simulated account (`touchpoint simulate --on-server`, the suite): effects are simulated
    (no CRM or webhook call), nothing is projected, and the `script` is played."""
    finish_after_run: bool = False
    """The workflow ends with the `RunResult` (timeline included) of its first run: simulations,
    and tests that await one run."""
    script: list[Scripted] = Field(default_factory=list)
    horizon: float | None = None
    """Seconds after the first run's start when a simulation stops it (outcome ``running``)."""
    script_base: datetime | None = None
    """When the first run started (on the account's clock): the script counts from there."""
    indexed: bool | None = None
    """Whether the workflow keeps its search attributes (None: not asked yet; `workflows.search`)."""
    indexed_values: dict[str, Any] = Field(default_factory=dict)
    """The search attribute values last set."""
    updates_before_continue: int = 1_000
    """Updates (`start`, `migrate`) one execution takes before it continues as new at its next
    quiet point, whatever the server suggests: half Temporal Cloud's 2,000 per run (an update
    can cost as few as two history events, so the server's 4,096-event suggestion alone could
    come after them). Tests set it low."""


class Scripted(Data):
    """A simulation's event (or account change, ``envelope.account``), ``after`` seconds in."""

    after: float
    envelope: Envelope


class Loaded(Data):
    """One deployed playbook version as runs execute it."""

    playbook: Playbook
    version: str
    workspace: Workspace

    @property
    def key(self) -> str:
        return f"{self.playbook.playbook}@{self.version}"


class MigrateRequest(Data):
    """Move the account's runs of ``playbook`` to ``version`` (section 13), or say what that would do."""

    playbook: str
    version: str
    run_id: str | None = None
    """Only this run (else every run of the playbook on another version)."""
    dry_run: bool = False
    program: Loaded | None = None
    """The target version as the store holds it (the caller read it once for every account);
    None: the workflow reads it with a store step."""


class PlannedStart(Data):
    """A run the account workflow is about to start: its id is chosen before the store step."""

    playbook: str
    run_id: str
    workflow_id: str
    """The account workflow that hosts the run."""
    started_at: datetime
    event: EventIn
    """What starts it (the triggering event, or a manual start)."""


class StoreStep(Data):
    """One event applied in one transaction: the event and what it derived, the account, the
    rows of the runs it starts (their programs returned unless ``known``), and run projections."""

    account: AccountDoc | None
    event: EventIn
    derived: list[EventIn] = Field(default_factory=list)
    token: str | None = None
    """The account workflow's step (run id and counter): the same when its task is retried."""
    starts: list[PlannedStart] = Field(default_factory=list)
    known: list[str] = Field(default_factory=list)
    """`Loaded.key`s the workflow holds already: not sent again."""
    projections: list[RunProjection] = Field(default_factory=list)


class PrepareStarts(Data):
    """Runs started by a request (manual, a date, a `start` step): their rows and programs."""

    account_id: str
    starts: list[PlannedStart]
    known: list[str] = Field(default_factory=list)
    projections: list[RunProjection] = Field(default_factory=list)


class StoreResult(Data):
    """What a store step did.

    ``accepted`` is False for an old duplicate event id; ``earlier`` holds the derived events
    when this very step applied the event before (a retried workflow task); ``started`` maps
    each started run id to its version (a playbook that is not deployed is missing);
    ``programs`` are the versions the workflow did not know yet.
    """

    accepted: bool = True
    earlier: list[EventIn] | None = None
    started: dict[str, str] = Field(default_factory=dict)
    programs: list[Loaded] = Field(default_factory=list)


class FirstStep(Data):
    """A fresh account workflow's first upsert, applied in one store step with its context read:
    the store step reads the deployed index and the stored account, derives and plans as the
    workflow would (`workflows.enrolling`), and applies. Run ids come from ``token``, so a retried
    step writes the same rows."""

    envelope: Envelope
    account_id: str
    workflow_id: str
    now: datetime
    token: str
    search_attributes: bool = False


class FirstResult(Data):
    """What `FirstStep` read, decided and did (``store.accepted`` False: an old duplicate id)."""

    index: DeployedIndex
    previous: AccountDoc | None = None
    """The account as the store held it before (None for a new account)."""
    account: AccountDoc | None = None
    plan: list[list[PlannedStart]] = Field(default_factory=list)
    """Per event the upsert derived, in order, the runs it starts (the events themselves ride in
    the starts: the workflow needs nothing else of them)."""
    store: StoreResult = Field(default_factory=lambda: StoreResult())
    search_attributes: bool = False


class ProjectRuns(Data):
    """Projections of runs that moved without any other store step to carry them."""

    runs: list[RunProjection]


class LoadContextInput(Data):
    """What a fresh (or redeployed) account workflow needs from the store before an event."""

    generation: str | None = None
    index: bool = False
    account_id: str | None = None
    """Set to read the stored account (None: the workflow already holds it)."""
    programs: list[str] = Field(default_factory=list)
    """`Loaded.key`s to load (the runs a continued workflow carries)."""
    search_attributes: bool = False
    """Ask whether the namespace has the account workflow's search attributes (`workflows.search`)."""


class LoadedContext(Data):
    index: DeployedIndex | None = None
    account: AccountDoc | None = None
    programs: list[Loaded] = Field(default_factory=list)
    search_attributes: bool = False
    """The namespace has the account workflow's search attributes: the workflow keeps them."""


AccountState.model_rebuild()  # `Scripted` comes after it
