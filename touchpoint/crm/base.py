"""The CRM connector interface, its request and result models, and field mapping.

A backend (``HubSpotBackend``, ``SalesforceBackend``, or the store-backed ``local`` one that
lives elsewhere) writes tasks, notes and account fields for playbook steps, and reads accounts
and completed tasks for ``touchpoint accounts sync``. Every write carries an idempotency
``key`` that is stable across retries, so a retried activity never creates a second record.

Two kinds of mapping exist:

- ``map_fields``: the ``crm.fields`` map of ``workspace.yaml`` (playbook field name → CRM
  property), applied by the caller to ``update`` step fields before ``update_account``.
- ``AccountFieldMap`` / ``ContactFieldMap``: which CRM property holds each field of the
  account document (section 2 of the playbook contract) when syncing accounts in. Each
  provider module defines its defaults (``HUBSPOT_ACCOUNT_FIELDS``,
  ``SALESFORCE_ACCOUNT_FIELDS``, ...) and documents them; pass your own map to the backend
  to change them (``HUBSPOT_ACCOUNT_FIELDS.model_copy(update={"plan": "plan_tier"})``).
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import AsyncIterator, Mapping
from datetime import datetime
from typing import Annotated, Literal, Protocol, runtime_checkable

from pydantic import AfterValidator, AwareDatetime, BaseModel, ConfigDict, Field

__all__ = [
    "MAX_KEY_LENGTH",
    "AccountFieldMap",
    "AccountPage",
    "AccountPager",
    "ContactFieldMap",
    "CrmBackend",
    "CrmRecordRef",
    "NoteRequest",
    "Priority",
    "SyncedAccount",
    "SyncedContact",
    "TaskRequest",
    "TaskStatus",
    "idempotency_key",
    "map_fields",
]

MAX_KEY_LENGTH = 80
"""Longest idempotency key sent to a CRM; longer keys are hashed (see ``idempotency_key``)."""

Priority = Literal["low", "medium", "high"]

# Keys travel in URL paths (HubSpot idProperty reads, Salesforce upserts), so anything but
# these characters is escaped; '.' is escaped too so that no key can be a '..' path segment.
# '~' (the escape mark) is kept, so a normalized key normalizes to itself: a request that
# goes through a data converter and back keeps its key.
_UNSAFE_KEY_CHAR = re.compile(r"[^A-Za-z0-9_:~\-]")


def idempotency_key(raw: str) -> str:
    """Turn a caller's key into one every CRM accepts, the same way every time.

    Characters other than letters, digits, ``_``, ``:``, ``~`` and ``-`` become ``~`` and two
    hex digits per UTF-8 byte (``steps[2]`` → ``steps~5b2~5d``). A result longer than
    ``MAX_KEY_LENGTH`` becomes its first 15 characters, ``-`` and the SHA-256 of the raw key.
    The function is idempotent (``idempotency_key(idempotency_key(k)) == idempotency_key(k)``),
    so avoid raw keys that already contain ``~`` and hex digits.

    Args:
        raw: The caller's key, e.g. ``"run-8f2c:steps[3]"``.

    Returns:
        A key of at most 80 URL-safe characters.
    """
    escaped = _UNSAFE_KEY_CHAR.sub(lambda m: "".join(f"~{b:02x}" for b in m.group().encode()), raw)
    if len(escaped) <= MAX_KEY_LENGTH:
        return escaped
    digest = hashlib.sha256(raw.encode()).hexdigest()
    return f"{escaped[:15]}-{digest}"


Key = Annotated[str, Field(min_length=1), AfterValidator(idempotency_key)]


class _Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class TaskRequest(_Frozen):
    """A task for a human, created on the account's CRM record.

    Attributes:
        key: Idempotency key, stable across retries; normalized by ``idempotency_key``.
        account_crm_id: The account's id in the CRM (HubSpot company id, Salesforce Account Id).
        title: Short subject line.
        body: Longer notes, or None.
        due_at: When the task is due (timezone-aware), or None for "now".
        priority: ``low``, ``medium`` or ``high``, or None for the CRM's default.
        owner_email: Email of the CRM user who gets the task, or None for the API user.
    """

    key: Key
    account_crm_id: str = Field(min_length=1)
    title: str = Field(min_length=1)
    body: str | None = None
    due_at: AwareDatetime | None = None
    priority: Priority | None = None
    owner_email: str | None = None


class NoteRequest(_Frozen):
    """A note on the account's CRM timeline.

    Attributes:
        key: Idempotency key, stable across retries; normalized by ``idempotency_key``.
        account_crm_id: The account's id in the CRM.
        text: The note's text.
        at: Where the note sits on the timeline (timezone-aware).
    """

    key: Key
    account_crm_id: str = Field(min_length=1)
    text: str = Field(min_length=1)
    at: AwareDatetime


class CrmRecordRef(_Frozen):
    """The CRM record a write landed on.

    Attributes:
        crm_id: The record's id in the CRM.
        created: False when an idempotent retry found the record created before.
    """

    crm_id: str
    created: bool


class SyncedContact(_Frozen):
    """A contact of a synced account, in the account document's shape (section 2)."""

    email: str
    name: str | None = None
    role: str | None = None
    locale: str | None = None
    timezone: str | None = None
    country: str | None = None


class SyncedAccount(_Frozen):
    """One account read from the CRM.

    Attributes:
        crm_id: The account's id in the CRM.
        name: The account's name.
        fields: The account-document fields the CRM has a value for, already typed:
            ``renewal_date`` (date), ``arr`` (int or float), ``seats`` ({``licensed``,
            ``active``} ints), ``csm`` and ``owner`` ({``name``, ``email``}), ``country``,
            ``timezone`` (IANA name), ``plan`` and ``properties`` (raw extra CRM values).
            Fields the CRM has no value for are left out, so a sync never blanks them.
        contacts: The account's contacts that have an email address.
    """

    crm_id: str
    name: str
    fields: dict[str, object] = Field(default_factory=dict)
    contacts: list[SyncedContact] = Field(default_factory=list)


class AccountPage(_Frozen):
    """One page of accounts and where the next one starts.

    Attributes:
        accounts: The page's accounts, with their contacts.
        next_token: Opaque token for ``accounts_page(token=...)`` to read the next page
            (HubSpot's ``after`` cursor, Salesforce's ``nextRecordsUrl``), None on the last.
    """

    accounts: list[SyncedAccount] = Field(default_factory=list)
    next_token: str | None = None


class TaskStatus(_Frozen):
    """The state of a task created through a backend.

    Attributes:
        crm_id: The task's id in the CRM.
        key: The idempotency key it was created with, or None for tasks made by hand.
        completed: Whether the task is done.
        completed_at: When it was completed, if the CRM says.
    """

    crm_id: str
    key: str | None
    completed: bool
    completed_at: AwareDatetime | None = None


class AccountFieldMap(_Frozen):
    """Which CRM property holds each account-document field; None means "not in this CRM".

    ``csm`` and ``owner`` name a user reference: on HubSpot a property holding an owner id
    (``hubspot_owner_id``), on Salesforce a User lookup relationship (``Owner``,
    ``CSM__r``) whose ``Name`` and ``Email`` are read. ``properties`` lists extra CRM
    properties copied verbatim into ``fields["properties"]``.
    """

    name: str
    renewal_date: str | None = None
    arr: str | None = None
    seats_licensed: str | None = None
    seats_active: str | None = None
    csm: str | None = None
    owner: str | None = None
    country: str | None = None
    timezone: str | None = None
    plan: str | None = None
    properties: tuple[str, ...] = ()


class ContactFieldMap(_Frozen):
    """Which CRM property holds each contact field; ``name`` parts are joined by a space."""

    email: str
    name: tuple[str, ...] = ()
    role: str | None = None
    locale: str | None = None
    timezone: str | None = None
    country: str | None = None


@runtime_checkable
class CrmBackend(Protocol):
    """What every CRM backend does. All methods raise ``touchpoint.crm.errors.CrmError``s."""

    name: str

    async def create_task(self, req: TaskRequest) -> CrmRecordRef:
        """Create a task on the account, or find the one an earlier try with ``req.key`` made."""
        ...

    async def add_note(self, req: NoteRequest) -> CrmRecordRef:
        """Log a note on the account, or find the one an earlier try with ``req.key`` made."""
        ...

    async def update_account(self, account_crm_id: str, fields: Mapping[str, object]) -> None:
        """Write account fields, already mapped to CRM property names (see ``map_fields``)."""
        ...

    def iter_accounts(self, *, page_size: int = 100) -> AsyncIterator[list[SyncedAccount]]:
        """Yield every account, one page at a time, never holding them all in memory."""
        ...

    async def completed_tasks(self, *, since: datetime) -> list[TaskStatus]:
        """Tasks created through the backend, completed and last modified at or after ``since``.

        ``since`` must be timezone-aware. CRMs index these reads with a lag: overlap the
        windows of successive calls and ignore keys already seen.
        """
        ...

    async def aclose(self) -> None:
        """Close the HTTP client; the backend cannot be used afterwards."""
        ...


@runtime_checkable
class AccountPager(Protocol):
    """A backend that reads accounts one page per call, resumable from a token.

    ``iter_accounts`` is simpler in one process; a Temporal activity reads one page per
    attempt and keeps the token in workflow state, so a sync survives worker restarts.
    """

    name: str

    async def accounts_page(self, *, token: str | None = None, page_size: int = 100) -> AccountPage:
        """The page that starts at ``token`` (None: the first page)."""
        ...


def map_fields(fields: Mapping[str, object], mapping: Mapping[str, str]) -> dict[str, object]:
    """Rename playbook field names to CRM property names (``crm.fields`` of workspace.yaml).

    Names without an entry in ``mapping`` are sent as they are. Values are not touched:
    each backend converts them to its wire format.

    Args:
        fields: The ``update`` step's fields, by playbook field name.
        mapping: Playbook field name → CRM property name.

    Returns:
        The same values keyed by CRM property name.

    Raises:
        ValueError: Two fields land on the same CRM property.
    """
    mapped: dict[str, object] = {}
    source: dict[str, str] = {}
    for name, value in fields.items():
        prop = mapping.get(name, name)
        if prop in mapped:
            raise ValueError(
                f"fields {source[prop]!r} and {name!r} both map to the CRM property {prop!r}; "
                "fix crm.fields in workspace.yaml or the update step so each property is "
                "written once"
            )
        mapped[prop] = value
        source[prop] = name
    return mapped
