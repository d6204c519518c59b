"""HubSpot connector: companies are accounts, over the CRM v3 and v4 REST APIs.

Setup in the HubSpot portal, once:

- An app token (private app, or OAuth) in ``HUBSPOT_TOKEN`` with the scopes
  ``crm.objects.companies.read/write``, ``crm.objects.contacts.read/write`` (tasks and notes
  use these) and ``crm.objects.owners.read``.
- A unique text property ``touchpoint_key`` on **tasks and notes** (``POST
  /crm/v3/properties/tasks`` and ``/notes`` with ``{"name": "touchpoint_key", "label":
  "Touchpoint key", "type": "string", "fieldType": "text", "groupName": <a group>,
  "hasUniqueValue": true}``); another name can be passed as ``idempotency_property``.
- Number/date company properties for the fields HubSpot has no standard property for.

Default account mapping (``HUBSPOT_ACCOUNT_FIELDS``; pass ``account_fields=`` to change it):

=================  =====================================================================
account field      HubSpot company property
=================  =====================================================================
name               ``name``
renewal_date       ``renewal_date`` (custom, date)
arr                ``arr`` (custom, number)
seats.licensed     ``seats_licensed`` (custom, number)
seats.active       ``seats_active`` (custom, number)
csm                ``hubspot_owner_id``: the owner's name and email from the owners API
owner              not mapped
country            ``country``
timezone           ``timezone`` (HubSpot spells zones ``america_slash_new_york``)
plan               not mapped
=================  =====================================================================

Contacts (``HUBSPOT_CONTACT_FIELDS``): ``email``; name from ``firstname`` + ``lastname``;
role from ``touchpoint_role`` (custom); locale ``hs_language``; timezone ``hs_timezone``;
country ``country``. A company's contacts come from ``associations=contacts`` on the company
page (continued through the v4 associations API when HubSpot pages them), read 100 at a time
with ``POST /crm/v3/objects/contacts/batch/read``.

Idempotency (contract §9): HubSpot has no idempotency header. A task or note is first looked
up by its key (``GET /crm/v3/objects/tasks/{key}?idProperty=touchpoint_key``), and created
with the key set only if absent. Because the property is unique, a create racing a lost
earlier one is refused (409, or a 400): the record is then fetched by its key and returned
with ``created=False``. The search API is never used for this: its index lags writes.

Rate limits: a 429 raises ``CrmTransientError`` whose ``retry_after`` comes from
``Retry-After``, the ``X-HubSpot-RateLimit-*`` headers or the policy name (see
``rate_limit_retry_after``).
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Mapping, Sequence
from datetime import UTC, datetime
from types import TracebackType
from typing import Any, Self, TypeVar
from urllib.parse import quote

import httpx
from pydantic import BaseModel, ValidationError

from touchpoint.crm import _hubspot_wire as wire
from touchpoint.crm._http import build_client, check_base_url, send
from touchpoint.crm._sync import build_account, build_contact, person
from touchpoint.crm._values import iso_utc, parse_datetime, require_aware
from touchpoint.crm.base import (
    AccountFieldMap,
    AccountPage,
    ContactFieldMap,
    CrmRecordRef,
    NoteRequest,
    SyncedAccount,
    SyncedContact,
    TaskRequest,
    TaskStatus,
)
from touchpoint.crm.errors import (
    CrmConfigurationError,
    CrmNotFound,
    CrmRejected,
    CrmTransientError,
    CrmUnknownOwner,
)

__all__ = [
    "DEFAULT_URL",
    "HUBSPOT_ACCOUNT_FIELDS",
    "HUBSPOT_CONTACT_FIELDS",
    "HubSpotBackend",
]

DEFAULT_URL = "https://api.hubapi.com"

HUBSPOT_ACCOUNT_FIELDS = AccountFieldMap(
    name="name",
    renewal_date="renewal_date",
    arr="arr",
    seats_licensed="seats_licensed",
    seats_active="seats_active",
    csm="hubspot_owner_id",
    country="country",
    timezone="timezone",
)
HUBSPOT_CONTACT_FIELDS = ContactFieldMap(
    email="email",
    name=("firstname", "lastname"),
    role="touchpoint_role",
    locale="hs_language",
    timezone="hs_timezone",
    country="country",
)

# HUBSPOT_DEFINED association type ids (contract §3).
_TASK_TO_COMPANY = 192
_NOTE_TO_COMPANY = 190
_LIST_LIMIT = 100  # largest page of the list endpoints
_BATCH_LIMIT = 100  # inputs per batch read
_SEARCH_LIMIT = 200  # largest search page
_SEARCH_CAP = 10_000  # results one search query can page through
_INLINE_429_RETRIES = 3  # short 429s of one call waited out in place before the caller sees one
_INLINE_429_WAIT = 1.0  # longest wait done in place (the SECONDLY policy's); longer ones go to the caller

_M = TypeVar("_M", bound=BaseModel)


class HubSpotBackend:
    """A ``CrmBackend`` on HubSpot. Use as ``async with`` or call ``aclose()``.

    A missing token or a malformed URL is reported by the first call (as
    ``CrmConfigurationError``), so a worker can start and pause the runs that need the CRM.
    """

    name: str = "hubspot"

    def __init__(
        self,
        token: str | None,
        base_url: str = DEFAULT_URL,
        *,
        timeout: float = 10.0,
        max_connections: int = 10,
        idempotency_property: str = "touchpoint_key",
        account_fields: AccountFieldMap = HUBSPOT_ACCOUNT_FIELDS,
        contact_fields: ContactFieldMap = HUBSPOT_CONTACT_FIELDS,
    ) -> None:
        """Configure the backend; nothing is sent until the first call.

        Args:
            token: HubSpot access token (``HUBSPOT_TOKEN``), or None when unset.
            base_url: API root (``TOUCHPOINT_HUBSPOT_URL``), a fake server in tests.
            timeout: Seconds to wait for each request (connect at most 5 s).
            max_connections: Size of the connection pool.
            idempotency_property: The unique task/note property holding the request key.
            account_fields: Where account-document fields live on companies.
            contact_fields: Where contact fields live on contacts.
        """
        if timeout <= 0 or max_connections < 1:
            raise ValueError("timeout must be > 0 and max_connections >= 1")
        self._key_property = idempotency_property
        self._account_map = account_fields
        self._contact_map = contact_fields
        self._owner_ids: dict[str, str] = {}
        self._owners: dict[str, wire.Owner] | None = None
        self._client: httpx.AsyncClient | None = None
        self._setup_error: CrmConfigurationError | None = None
        if not token:
            self._setup_error = CrmConfigurationError(
                "HUBSPOT_TOKEN is not set: create a HubSpot private app with the "
                "crm.objects.companies/contacts read and write and crm.objects.owners.read "
                "scopes and put its access token in HUBSPOT_TOKEN.",
                provider=wire.PROVIDER,
            )
            return
        try:
            url = check_base_url(base_url or DEFAULT_URL, setting="TOUCHPOINT_HUBSPOT_URL", provider=wire.PROVIDER)
        except CrmConfigurationError as exc:
            self._setup_error = exc
            return
        self._client = build_client(
            base_url=url,
            headers={"Authorization": f"Bearer {token}", "Accept": "application/json"},
            timeout=timeout,
            max_connections=max_connections,
        )

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        """Close the HTTP client."""
        if self._client is not None:
            await self._client.aclose()

    # -- writes ---------------------------------------------------------------------------

    async def create_task(self, req: TaskRequest) -> CrmRecordRef:
        """Create a task on the company, or return the one an earlier try made.

        The task is a ``TODO``, ``NOT_STARTED``, due at ``req.due_at`` (``hs_timestamp``;
        now when None), associated with the company (type 192) and assigned to the owner
        whose email is ``req.owner_email``.

        Raises:
            CrmUnknownOwner: No HubSpot owner has ``req.owner_email``.
            CrmError: Any other failure, see ``touchpoint.crm.errors``.
        """
        existing = await self._find_by_key("tasks", req.key)
        if existing is not None:
            return CrmRecordRef(crm_id=existing, created=False)
        props = {
            self._key_property: req.key,
            "hs_task_subject": req.title,
            "hs_timestamp": iso_utc(req.due_at or datetime.now(UTC)),
            "hs_task_status": "NOT_STARTED",
            "hs_task_type": "TODO",
        }
        if req.body is not None:
            props["hs_task_body"] = req.body
        if req.priority is not None:
            props["hs_task_priority"] = req.priority.upper()
        if req.owner_email:
            props["hubspot_owner_id"] = await self._owner_id(req.owner_email)
        try:
            return await self._create("tasks", req.key, props, req.account_crm_id, _TASK_TO_COMPANY)
        except CrmRejected as exc:
            if not req.owner_email or "hubspot_owner_id" not in exc.fields:
                raise
            # HubSpot refuses an owner id it no longer knows (a user removed since we looked
            # it up): forget it, so a retry looks the email up again.
            self._owner_ids.pop(req.owner_email.strip().lower(), None)
            raise CrmUnknownOwner(
                f"{exc.message} HubSpot refused the owner of {req.owner_email!r}: the user was "
                "probably removed or deactivated. Fix the task's owner or set "
                "crm.fallback_owner in workspace.yaml.",
                provider=wire.PROVIDER,
                email=req.owner_email,
            ) from None

    async def add_note(self, req: NoteRequest) -> CrmRecordRef:
        """Log a note on the company's timeline at ``req.at``, once per ``req.key``.

        Raises:
            CrmError: See ``touchpoint.crm.errors``.
        """
        existing = await self._find_by_key("notes", req.key)
        if existing is not None:
            return CrmRecordRef(crm_id=existing, created=False)
        props = {
            self._key_property: req.key,
            "hs_note_body": req.text,
            "hs_timestamp": iso_utc(req.at),
        }
        return await self._create("notes", req.key, props, req.account_crm_id, _NOTE_TO_COMPANY)

    async def update_account(self, account_crm_id: str, fields: Mapping[str, object]) -> None:
        """Set company properties; every value is sent as a string (None clears it).

        Raises:
            CrmNotFound: No company has this id.
            CrmRejected: A property is unknown, read-only, or its value invalid.
            CrmError: Any other failure, see ``touchpoint.crm.errors``.
        """
        props = {name: wire.to_property_value(name, value) for name, value in fields.items()}
        if not props:
            return
        await self._call(
            "PATCH",
            f"/crm/v3/objects/companies/{quote(account_crm_id, safe='')}",
            json={"properties": props},
            hint=f"Check the company id {account_crm_id!r} and that each property "
            "exists on companies and is writable (crm.fields in workspace.yaml maps names).",
        )

    # -- reads ----------------------------------------------------------------------------

    async def iter_accounts(self, *, page_size: int = 100) -> AsyncIterator[list[SyncedAccount]]:
        """Yield all companies, ``page_size`` (at most 100) per page, with their contacts.

        Raises:
            CrmError: See ``touchpoint.crm.errors``; pages already yielded stay valid.
        """
        token: str | None = None
        while True:
            page = await self.accounts_page(token=token, page_size=page_size)
            yield page.accounts
            if page.next_token is None:
                return
            token = page.next_token

    async def accounts_page(self, *, token: str | None = None, page_size: int = 100) -> AccountPage:
        """One page of companies (at most 100) with their contacts, from ``token``.

        The token is HubSpot's ``after`` cursor. The owner directory (for ``csm``/``owner``)
        is read again on each first page (``token=None``), so a new sync sees new owners.

        Raises:
            CrmError: See ``touchpoint.crm.errors``.
        """
        limit = max(1, min(page_size, _LIST_LIMIT))
        if token is None:
            self._owners = None
        params = [
            ("limit", str(limit)),
            ("properties", ",".join(self._company_properties())),
            ("associations", "contacts"),
            ("archived", "false"),
        ]
        if token:
            params.append(("after", token))
        where = "GET /crm/v3/objects/companies"
        page = self._parse(
            await self._call("GET", "/crm/v3/objects/companies", params=params),
            wire.Page,
            where,
        )
        contact_ids = {rec.id: await self._contact_ids(rec) for rec in page.results}
        contacts = await self._read_contacts([i for ids in contact_ids.values() for i in ids])
        if self._owners is None and self._needs_owners(page.results):
            self._owners = await self._owner_directory()
        accounts = [
            self._account(rec, [contacts[i] for i in contact_ids[rec.id] if i in contacts], self._owners)
            for rec in page.results
        ]
        return AccountPage(accounts=accounts, next_token=wire.next_after(page.paging))

    async def completed_tasks(self, *, since: datetime) -> list[TaskStatus]:
        """Tasks with a key, ``COMPLETED`` and last modified at or after ``since``.

        Uses the search API (ascending ``hs_lastmodifieddate``); past its 10,000-result cap
        the search restarts from the last modification time seen.

        Raises:
            ValueError: ``since`` has no time zone.
            CrmError: See ``touchpoint.crm.errors``.
        """
        floor = require_aware(since, name="since")
        found: dict[str, TaskStatus] = {}
        while True:
            last_modified, exhausted = await self._search_completed(floor, found)
            if exhausted:
                return list(found.values())
            if last_modified is None or last_modified <= floor:
                raise CrmRejected(
                    f"More than {_SEARCH_CAP} HubSpot tasks were completed at "
                    f"{floor.isoformat()}; the search API cannot page past them. Call "
                    "completed_tasks more often.",
                    provider=wire.PROVIDER,
                )
            floor = last_modified

    async def _search_completed(self, floor: datetime, found: dict[str, TaskStatus]) -> tuple[datetime | None, bool]:
        """One search query from ``floor``; returns the last modification seen and done."""
        key = self._key_property
        body: dict[str, Any] = {
            "filterGroups": [
                {
                    "filters": [
                        {"propertyName": "hs_task_status", "operator": "EQ", "value": "COMPLETED"},
                        {
                            "propertyName": "hs_lastmodifieddate",
                            "operator": "GTE",
                            "value": str(int(floor.timestamp() * 1000)),
                        },
                        {"propertyName": key, "operator": "HAS_PROPERTY"},
                    ]
                }
            ],
            "properties": [key, "hs_task_status", "hs_task_completion_date", "hs_lastmodifieddate"],
            "sorts": [{"propertyName": "hs_lastmodifieddate", "direction": "ASCENDING"}],
            "limit": _SEARCH_LIMIT,
        }
        where = "POST /crm/v3/objects/tasks/search"
        fetched = 0
        last_modified: datetime | None = None
        while True:
            page = self._parse(
                await self._call("POST", "/crm/v3/objects/tasks/search", json=body),
                wire.Page,
                where,
            )
            for rec in page.results:
                found[rec.id] = TaskStatus(
                    crm_id=rec.id,
                    key=_text(rec.properties.get(key)),
                    completed=True,
                    completed_at=parse_datetime(rec.properties.get("hs_task_completion_date")),
                )
                last_modified = parse_datetime(rec.properties.get("hs_lastmodifieddate")) or last_modified
            fetched += len(page.results)
            after = wire.next_after(page.paging)
            if after is None:
                return last_modified, True
            if fetched >= _SEARCH_CAP:
                return last_modified, False
            body["after"] = after

    # -- helpers --------------------------------------------------------------------------

    def _require_client(self) -> httpx.AsyncClient:
        if self._setup_error is not None:
            raise self._setup_error
        assert self._client is not None  # set whenever there is no setup error
        return self._client

    async def _call(
        self,
        method: str,
        path: str,
        *,
        params: Sequence[tuple[str, str]] | None = None,
        json: Any = None,
        ok: tuple[int, ...] = (200,),
        hint: str = "",
    ) -> httpx.Response:
        # A 429 asking for a short wait (at most a second) is waited out here, call by call:
        # retrying the whole page instead repeats its earlier calls, and with a limit that refused
        # every third call a three-call page never got through (bench drill `crm-rate-limit`).
        # A 429 means the call was not served, so a write is safe to repeat. Longer waits (the
        # rolling ten-second and daily limits) go to the caller, whose retry honours them.
        for attempt in range(_INLINE_429_RETRIES + 1):
            response = await send(self._require_client(), method, path, provider="HubSpot", params=params, json=json)
            if response.status_code in ok:
                return response
            error = wire.error_from_response(response, where=f"{method} {path}", hint=hint)
            retry_after = getattr(error, "retry_after", None)
            if response.status_code != 429 or attempt == _INLINE_429_RETRIES or retry_after is None or retry_after > _INLINE_429_WAIT:
                raise error
            await asyncio.sleep(retry_after)
        raise AssertionError("unreachable")

    @staticmethod
    def _parse(response: httpx.Response, model: type[_M], where: str) -> _M:
        try:
            return model.model_validate(response.json())
        except (ValueError, ValidationError) as exc:
            # Seen behind proxies that answer 200 with an HTML page; retrying usually helps.
            raise CrmTransientError(
                f"HubSpot answered {where} with an unexpected body ({exc.__class__.__name__}: "
                f"{str(exc)[:200]}); the call will be retried.",
                provider=wire.PROVIDER,
                status_code=response.status_code,
            ) from None

    def _key_hint(self, object_type: str) -> str:
        return (
            f"Touchpoint finds {object_type} by the unique property {self._key_property!r}: "
            f"create it on {object_type} with hasUniqueValue: true (POST "
            f"/crm/v3/properties/{object_type}), or pass idempotency_property="
        )

    async def _find_by_key(self, object_type: str, key: str) -> str | None:
        path = f"/crm/v3/objects/{object_type}/{quote(key, safe='')}"
        try:
            response = await self._call(
                "GET",
                path,
                params=[("idProperty", self._key_property), ("properties", self._key_property)],
                hint=self._key_hint(object_type),
            )
        except CrmNotFound:
            return None
        except CrmRejected as exc:
            if exc.status_code != 400:
                raise
            # A read by idProperty is only refused when the property is missing or not unique.
            raise CrmConfigurationError(
                exc.message,
                provider=exc.provider,
                status_code=400,
                code=exc.code,
                provider_message=exc.provider_message,
                fields=exc.fields,
            ) from None
        return self._parse(response, wire.Record, f"GET {path}").id

    async def _create(
        self,
        object_type: str,
        key: str,
        properties: dict[str, str],
        company_id: str,
        association_type: int,
    ) -> CrmRecordRef:
        body = {
            "properties": properties,
            "associations": [
                {
                    "to": {"id": company_id},
                    "types": [
                        {
                            "associationCategory": "HUBSPOT_DEFINED",
                            "associationTypeId": association_type,
                        }
                    ],
                }
            ],
        }
        path = f"/crm/v3/objects/{object_type}"
        try:
            response = await self._call(
                "POST",
                path,
                json=body,
                ok=(200, 201),
                hint=f"Check the company id {company_id!r} and the owner. " + self._key_hint(object_type),
            )
        except CrmRejected as exc:
            # A unique-value clash means an earlier try (whose answer was lost) got there first.
            if exc.status_code not in (400, 409):
                raise
            existing = await self._find_by_key(object_type, key)
            if existing is None:
                raise
            return CrmRecordRef(crm_id=existing, created=False)
        return CrmRecordRef(crm_id=self._parse(response, wire.Record, f"POST {path}").id, created=True)

    async def _owner_id(self, email: str) -> str:
        wanted = email.strip().lower()
        if wanted in self._owner_ids:
            return self._owner_ids[wanted]
        page = self._parse(
            await self._call("GET", "/crm/v3/owners", params=[("email", email.strip()), ("archived", "false")]),
            wire.OwnerPage,
            "GET /crm/v3/owners",
        )
        matches = [o for o in page.results if (o.email or "").lower() == wanted] or page.results
        if not matches:
            raise CrmUnknownOwner(
                f"No HubSpot owner has the email {email!r} (GET /crm/v3/owners?email= found "
                "none). Add the user to HubSpot, fix the task's owner, or set "
                "crm.fallback_owner in workspace.yaml.",
                provider=wire.PROVIDER,
                email=email,
            )
        self._owner_ids[wanted] = matches[0].id
        return matches[0].id

    async def _owner_directory(self) -> dict[str, wire.Owner]:
        owners: dict[str, wire.Owner] = {}
        after: str | None = None
        while True:
            params = [("limit", str(_LIST_LIMIT)), ("archived", "false")]
            if after:
                params.append(("after", after))
            page = self._parse(
                await self._call("GET", "/crm/v3/owners", params=params),
                wire.OwnerPage,
                "GET /crm/v3/owners",
            )
            for owner in page.results:
                owners[owner.id] = owner
                if owner.email:
                    self._owner_ids.setdefault(owner.email.lower(), owner.id)
            after = wire.next_after(page.paging)
            if after is None:
                return owners

    def _company_properties(self) -> list[str]:
        m = self._account_map
        names = [
            m.name,
            m.renewal_date,
            m.arr,
            m.seats_licensed,
            m.seats_active,
            m.csm,
            m.owner,
            m.country,
            m.timezone,
            m.plan,
            *m.properties,
        ]
        return list(dict.fromkeys(n for n in names if n))

    def _contact_properties(self) -> list[str]:
        m = self._contact_map
        names = [m.email, *m.name, m.role, m.locale, m.timezone, m.country]
        return list(dict.fromkeys(n for n in names if n))

    def _needs_owners(self, records: list[wire.Record]) -> bool:
        props = [p for p in (self._account_map.csm, self._account_map.owner) if p]
        return any(_text(rec.properties.get(p)) for rec in records for p in props)

    async def _contact_ids(self, company: wire.Record) -> list[str]:
        embedded = company.associations.get("contacts")
        if embedded is None:
            return []
        ids = [ref.id for ref in embedded.results]
        if wire.next_after(embedded.paging) is None:
            return ids
        # HubSpot truncates embedded associations; the v4 API pages through all of them.
        after: str | None = None
        path = f"/crm/v4/objects/companies/{quote(company.id, safe='')}/associations/contacts"
        while True:
            params = [("limit", "500")] + ([("after", after)] if after else [])
            page = self._parse(await self._call("GET", path, params=params), wire.V4Page, path)
            ids.extend(str(ref.toObjectId) for ref in page.results)
            after = wire.next_after(page.paging)
            if after is None:
                return list(dict.fromkeys(ids))

    async def _read_contacts(self, ids: list[str]) -> dict[str, SyncedContact]:
        unique = list(dict.fromkeys(ids))
        contacts: dict[str, SyncedContact] = {}
        properties = self._contact_properties()
        for start in range(0, len(unique), _BATCH_LIMIT):
            chunk = unique[start : start + _BATCH_LIMIT]
            page = self._parse(
                await self._call(
                    "POST",
                    "/crm/v3/objects/contacts/batch/read",
                    json={"properties": properties, "inputs": [{"id": i} for i in chunk]},
                    # 207: some ids were not found (contacts deleted since); the rest are there.
                    ok=(200, 207),
                ),
                wire.Page,
                "POST /crm/v3/objects/contacts/batch/read",
            )
            for rec in page.results:
                contact = build_contact(rec.properties.get, self._contact_map)
                if contact is not None:
                    contacts[rec.id] = contact
        return contacts

    def _account(
        self,
        rec: wire.Record,
        contacts: list[SyncedContact],
        owners: dict[str, wire.Owner] | None,
    ) -> SyncedAccount:
        def owner_of(prop: str | None) -> dict[str, str] | None:
            owner_id = _text(rec.properties.get(prop)) if prop else None
            owner = (owners or {}).get(owner_id or "")
            return person(owner.full_name, owner.email) if owner else None

        return build_account(
            rec.id,
            rec.properties.get,
            self._account_map,
            csm=owner_of(self._account_map.csm),
            owner=owner_of(self._account_map.owner),
            contacts=contacts,
        )


def _text(value: object) -> str | None:
    return value if isinstance(value, str) and value else None
