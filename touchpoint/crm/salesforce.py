"""Salesforce connector: Accounts, their Contacts and Tasks, over the REST API (v46.0+).

Setup in the org, once:

- An access token in ``SALESFORCE_ACCESS_TOKEN`` and the org's ``instance_url`` in
  ``SALESFORCE_INSTANCE_URL`` (from the OAuth token response). The integration user needs
  API Enabled, read/edit on Account, Contact and Task, and read on User.
- A Task field ``Touchpoint_Key__c``: Text(255), **External ID and Unique**
  (``external_id_field=`` names another).
- Custom Account fields for the defaults below, or a changed map.

Default account mapping (``SALESFORCE_ACCOUNT_FIELDS``; pass ``account_fields=``). SOQL
refuses unknown fields (400 ``INVALID_FIELD``), so every mapped field must exist:

=================  =====================================================================
account field      Salesforce Account field
=================  =====================================================================
name               ``Name``
renewal_date       ``Renewal_Date__c`` (custom, Date)
arr                ``AnnualRevenue`` (standard; orgs with ``ARR__c`` should map that)
seats.licensed     ``Seats_Licensed__c`` (custom, Number)
seats.active       ``Seats_Active__c`` (custom, Number)
csm                ``Owner``: the owning User's ``Name`` and ``Email`` (a SOQL relationship;
                   use e.g. ``CSM__r`` for a custom User lookup)
owner              not mapped (set ``Owner`` here when the CSM is a custom lookup)
country            ``BillingCountry``
timezone, plan     not mapped
=================  =====================================================================

Contacts (``SALESFORCE_CONTACT_FIELDS``) come from a ``Contacts`` subquery of the same SOQL
query: ``Email``, ``Name``, country ``MailingCountry``; Contact has no standard role,
locale or time zone, so map custom fields (e.g. ``role="Touchpoint_Role__c"``) to sync them.

Tasks are upserted by external id (``PATCH /sobjects/Task/Touchpoint_Key__c/{key}``): 201
created, 200 found and updated (``created=False``), 300 several matches (``CrmRejected``:
make the field Unique). An upsert re-applies the same fields, so a retry that comes after a
person has edited the task would reset them; retries follow a lost answer within minutes,
which makes this rare.

Notes are **completed Tasks** (``Subject`` "Note: <first line>", ``Description`` the text,
``ActivityDate`` the note's date), upserted with the external id ``note:<key>``. A
``ContentNote`` would need a second call (``ContentDocumentLink``) to attach it to the
Account and has no external id, so a lost answer could leave a duplicate or an orphan; a
completed Task is one idempotent call and shows in the Account's activity history.
``completed_tasks`` leaves notes out.

Errors arrive as JSON arrays; 403 ``REQUEST_LIMIT_EXCEEDED`` (the org's daily API limit) is
transient with a long ``retry_after``, and ``last_api_usage`` keeps the latest
``Sforce-Limit-Info`` usage.
"""

from __future__ import annotations

import re
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from datetime import datetime
from types import TracebackType
from typing import Any, Self, TypeVar
from urllib.parse import quote

import httpx
from pydantic import BaseModel, ValidationError

from touchpoint.crm import _salesforce_wire as wire
from touchpoint.crm._http import build_client, check_base_url, send
from touchpoint.crm._salesforce_wire import ApiUsage
from touchpoint.crm._sync import build_account, build_contact, person
from touchpoint.crm._values import parse_datetime, require_aware
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
    "SALESFORCE_ACCOUNT_FIELDS",
    "SALESFORCE_CONTACT_FIELDS",
    "ApiUsage",
    "SalesforceBackend",
]

SALESFORCE_ACCOUNT_FIELDS = AccountFieldMap(
    name="Name",
    renewal_date="Renewal_Date__c",
    arr="AnnualRevenue",
    seats_licensed="Seats_Licensed__c",
    seats_active="Seats_Active__c",
    csm="Owner",
    country="BillingCountry",
)
SALESFORCE_CONTACT_FIELDS = ContactFieldMap(email="Email", name=("Name",), country="MailingCountry")

NOTE_KEY_PREFIX = "note:"
_PRIORITY = {"low": "Low", "medium": "Normal", "high": "High"}
_SUBJECT_MAX = 255
_DESCRIPTION_MAX = 32_000
_BATCH_MIN, _BATCH_MAX = 200, 2000  # what Sforce-Query-Options batchSize accepts
_VERSION = re.compile(r"(\d+)\.(\d)")

_M = TypeVar("_M", bound=BaseModel)


class SalesforceBackend:
    """A ``CrmBackend`` on Salesforce. Use as ``async with`` or call ``aclose()``.

    A missing token or instance URL is reported by the first call (as
    ``CrmConfigurationError``), so a worker can start and pause the runs that need the CRM.

    Attributes:
        last_api_usage: The org's API usage from the latest answer, or None before one.
    """

    name: str = "salesforce"

    def __init__(
        self,
        instance_url: str | None,
        access_token: str | None,
        *,
        api_version: str = "59.0",
        timeout: float = 10.0,
        max_connections: int = 10,
        external_id_field: str = "Touchpoint_Key__c",
        account_fields: AccountFieldMap = SALESFORCE_ACCOUNT_FIELDS,
        contact_fields: ContactFieldMap = SALESFORCE_CONTACT_FIELDS,
        limit_retry_after: float = 3600.0,
    ) -> None:
        """Configure the backend; nothing is sent until the first call.

        Args:
            instance_url: The org's URL (``SALESFORCE_INSTANCE_URL``), or None when unset.
            access_token: OAuth access token (``SALESFORCE_ACCESS_TOKEN``), or None.
            api_version: REST API version, at least 46.0 (upserts answer 200 with a body).
            timeout: Seconds to wait for each request (connect at most 5 s).
            max_connections: Size of the connection pool.
            external_id_field: The unique External ID Task field holding request keys.
            account_fields: Where account-document fields live on Account.
            contact_fields: Where contact fields live on Contact.
            limit_retry_after: Seconds to wait once the org's daily API limit is used up.
        """
        version = _VERSION.fullmatch(api_version)
        if version is None or (int(version[1]), int(version[2])) < (46, 0):
            raise ValueError(f"api_version={api_version!r}: use 'NN.0', at least '46.0'")
        if timeout <= 0 or max_connections < 1:
            raise ValueError("timeout must be > 0 and max_connections >= 1")
        self.last_api_usage: ApiUsage | None = None
        self._base = f"/services/data/v{api_version}"
        self._ext = external_id_field
        self._account_map = account_fields
        self._contact_map = contact_fields
        self._limit_retry_after = limit_retry_after
        self._user_ids: dict[str, str] = {}
        self._client: httpx.AsyncClient | None = None
        self._setup_error: CrmConfigurationError | None = None
        missing = [
            name
            for name, value in (
                ("SALESFORCE_INSTANCE_URL", instance_url),
                ("SALESFORCE_ACCESS_TOKEN", access_token),
            )
            if not value
        ]
        if missing:
            self._setup_error = CrmConfigurationError(
                f"{' and '.join(missing)} {'is' if len(missing) == 1 else 'are'} not set: "
                "get an access token and the org's instance_url from Salesforce's OAuth "
                "token endpoint (e.g. the client-credentials flow of a connected app) and "
                "set SALESFORCE_INSTANCE_URL and SALESFORCE_ACCESS_TOKEN.",
                provider=wire.PROVIDER,
            )
            return
        assert instance_url is not None
        try:
            url = check_base_url(instance_url, setting="SALESFORCE_INSTANCE_URL", provider=wire.PROVIDER)
        except CrmConfigurationError as exc:
            self._setup_error = exc
            return
        self._client = build_client(
            base_url=url,
            headers={"Authorization": f"Bearer {access_token}", "Accept": "application/json"},
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
        """Upsert a ``Not Started`` Task on the Account (``WhatId``) by its key.

        ``ActivityDate`` is the date of ``req.due_at`` as given (convert it to the
        account's time zone first); ``Subject`` is cut to 255 characters.

        Raises:
            CrmUnknownOwner: No active User has ``req.owner_email``.
            CrmError: Any other failure, see ``touchpoint.crm.errors``.
        """
        fields: dict[str, object] = {
            "Subject": _cut(req.title, _SUBJECT_MAX),
            "Status": "Not Started",
            "WhatId": req.account_crm_id,
        }
        if req.body is not None:
            fields["Description"] = _cut(req.body, _DESCRIPTION_MAX)
        if req.due_at is not None:
            fields["ActivityDate"] = req.due_at.date().isoformat()
        if req.priority is not None:
            fields["Priority"] = _PRIORITY[req.priority]
        if req.owner_email:
            fields["OwnerId"] = await self._user_id(req.owner_email)
        try:
            return await self._upsert_task(req.key, fields)
        except CrmRejected as exc:
            if not req.owner_email or exc.code != "INVALID_CROSS_REFERENCE_KEY" or "OwnerId" not in exc.fields:
                raise
            # The User was deleted or deactivated since we looked it up: forget the cached Id
            # so that a retry looks the email up again.
            self._user_ids.pop(req.owner_email.strip().lower(), None)
            raise CrmUnknownOwner(
                f"{exc.message} Salesforce refused the owner {req.owner_email!r}: the User was "
                "probably deactivated. Fix the task's owner or set crm.fallback_owner in "
                "workspace.yaml.",
                provider=wire.PROVIDER,
                email=req.owner_email,
            ) from None

    async def add_note(self, req: NoteRequest) -> CrmRecordRef:
        """Upsert a completed Task "Note: …" on the Account, keyed ``note:<key>``.

        Raises:
            CrmError: See ``touchpoint.crm.errors``.
        """
        first_line = req.text.strip().splitlines()[0] if req.text.strip() else req.text
        fields: dict[str, object] = {
            "Subject": _cut(f"Note: {first_line}", _SUBJECT_MAX),
            "Description": _cut(req.text, _DESCRIPTION_MAX),
            "Status": "Completed",
            "ActivityDate": req.at.date().isoformat(),
            "WhatId": req.account_crm_id,
        }
        return await self._upsert_task(NOTE_KEY_PREFIX + req.key, fields)

    async def update_account(self, account_crm_id: str, fields: Mapping[str, object]) -> None:
        """Set Account fields (``PATCH``, 204); None clears a field.

        Raises:
            CrmNotFound: No Account has this Id.
            CrmRejected: A field is unknown, read-only, or its value invalid.
            CrmError: Any other failure, see ``touchpoint.crm.errors``.
        """
        body = {name: wire.to_field_value(name, value) for name, value in fields.items()}
        if not body:
            return
        await self._call(
            "PATCH",
            f"{self._base}/sobjects/Account/{quote(account_crm_id, safe='')}",
            json=body,
            ok=(204,),
            hint=f"Check the Account Id {account_crm_id!r} and that each field exists on "
            "Account and is editable (crm.fields in workspace.yaml maps names).",
        )

    # -- reads ----------------------------------------------------------------------------

    async def iter_accounts(self, *, page_size: int = 2000) -> AsyncIterator[list[SyncedAccount]]:
        """Yield all Accounts with their Contacts, one query batch per page.

        ``page_size`` is sent as ``Sforce-Query-Options: batchSize`` (200 to 2,000);
        Salesforce may answer smaller batches.

        Raises:
            CrmError: See ``touchpoint.crm.errors``; pages already yielded stay valid.
        """
        async for page in self._query(self._accounts_soql(), batch_size=page_size):
            yield [await self._account(record) for record in page.records]

    async def accounts_page(self, *, token: str | None = None, page_size: int = 2000) -> AccountPage:
        """One query batch of Accounts with their Contacts, from ``token``.

        The token is the previous batch's ``nextRecordsUrl`` (a query locator: Salesforce
        keeps it for about 15 minutes of inactivity; an expired one is refused with 400
        ``INVALID_QUERY_LOCATOR``, and the sync starts over).

        Raises:
            CrmError: See ``touchpoint.crm.errors``.
        """
        size = max(_BATCH_MIN, min(page_size, _BATCH_MAX))
        headers = {"Sforce-Query-Options": f"batchSize={size}"}
        hint = "Check that every field in the query exists (the account field map)."
        if token is None:
            path = f"{self._base}/query"
            response = await self._call("GET", path, params=[("q", self._accounts_soql())], headers=headers, hint=hint)
        else:
            if not token.startswith(f"{self._base}/query/"):
                raise ValueError(f"token {token!r} is not a nextRecordsUrl of this backend")
            path = token
            response = await self._call("GET", path, headers=headers, hint=hint)
        page = self._parse(response, wire.QueryPage, f"GET {path}")
        accounts = [await self._account(record) for record in page.records]
        more = not page.done and page.nextRecordsUrl
        return AccountPage(accounts=accounts, next_token=page.nextRecordsUrl if more else None)

    async def completed_tasks(self, *, since: datetime) -> list[TaskStatus]:
        """Keyed Tasks with ``Status = 'Completed'`` last modified at or after ``since``.

        Raises:
            ValueError: ``since`` has no time zone.
            CrmError: See ``touchpoint.crm.errors``.
        """
        require_aware(since, name="since")
        ext = self._ext
        soql = (
            f"SELECT Id, {ext}, CompletedDateTime, LastModifiedDate FROM Task "
            f"WHERE Status = 'Completed' AND LastModifiedDate >= {wire.soql_datetime(since)} "
            f"AND {ext} != null AND (NOT {ext} LIKE {wire.soql_string(NOTE_KEY_PREFIX + '%')}) "
            "ORDER BY LastModifiedDate"
        )
        found: list[TaskStatus] = []
        async for page in self._query(soql, batch_size=_BATCH_MAX):
            for record in page.records:
                found.append(
                    TaskStatus(
                        crm_id=str(record.get("Id")),
                        key=_str(record.get(ext)),
                        completed=True,
                        completed_at=parse_datetime(record.get("CompletedDateTime")),
                    )
                )
        return found

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
        headers: Mapping[str, str] | None = None,
        ok: tuple[int, ...] = (200,),
        hint: str = "",
    ) -> httpx.Response:
        response = await send(
            self._require_client(),
            method,
            path,
            provider="Salesforce",
            params=params,
            json=json,
            headers=headers,
        )
        usage = wire.parse_limit_info(response.headers.get("Sforce-Limit-Info"))
        if usage is not None:
            self.last_api_usage = usage
        if response.status_code in ok:
            return response
        raise wire.error_from_response(
            response,
            where=f"{method} {path.split('?', 1)[0]}",
            hint=hint,
            limit_retry_after=self._limit_retry_after,
            usage=usage,
        )

    @staticmethod
    def _parse(response: httpx.Response, model: type[_M], where: str) -> _M:
        try:
            return model.model_validate(response.json())
        except (ValueError, ValidationError) as exc:
            # Seen behind proxies that answer 200 with an HTML page; retrying usually helps.
            raise CrmTransientError(
                f"Salesforce answered {where} with an unexpected body "
                f"({exc.__class__.__name__}: {str(exc)[:200]}); the call will be retried.",
                provider=wire.PROVIDER,
                status_code=response.status_code,
            ) from None

    async def _query(self, soql: str, *, batch_size: int) -> AsyncIterator[wire.QueryPage]:
        size = max(_BATCH_MIN, min(batch_size, _BATCH_MAX))
        headers = {"Sforce-Query-Options": f"batchSize={size}"}
        hint = "Check that every field in the query exists (the account field map)."
        path = f"{self._base}/query"
        response = await self._call("GET", path, params=[("q", soql)], headers=headers, hint=hint)
        while True:
            page = self._parse(response, wire.QueryPage, f"GET {path}")
            yield page
            if page.done or not page.nextRecordsUrl:
                return
            path = page.nextRecordsUrl
            response = await self._call("GET", path, headers=headers, hint=hint)

    async def _upsert_task(self, external_id: str, fields: dict[str, object]) -> CrmRecordRef:
        path = f"{self._base}/sobjects/Task/{self._ext}/{quote(external_id, safe='')}"
        try:
            response = await self._call(
                "PATCH",
                path,
                json=fields,
                ok=(200, 201),
                hint="Check the Account Id (WhatId), the owner and the field values.",
            )
        except CrmNotFound as exc:
            raise CrmConfigurationError(
                f'Salesforce answered 404 to PATCH {path}: "{exc.provider_message}". Task has no '
                f"External ID field {self._ext!r}: create it (Text(255), External ID, Unique) "
                "or pass external_id_field=.",
                provider=exc.provider,
                status_code=exc.status_code,
                code=exc.code,
                provider_message=exc.provider_message,
            ) from None
        result = self._parse(response, wire.UpsertResult, f"PATCH {path}")
        return CrmRecordRef(crm_id=result.id, created=response.status_code == 201)

    async def _user_id(self, email: str) -> str:
        wanted = email.strip().lower()
        if wanted in self._user_ids:
            return self._user_ids[wanted]
        soql = f"SELECT Id FROM User WHERE Email = {wire.soql_string(email.strip())} AND IsActive = true LIMIT 1"
        async for page in self._query(soql, batch_size=_BATCH_MIN):
            for record in page.records:
                if user_id := _str(record.get("Id")):
                    self._user_ids[wanted] = user_id
                    return user_id
        raise CrmUnknownOwner(
            f"No active Salesforce User has the email {email!r}. Add or activate the user, "
            "fix the task's owner, or set crm.fallback_owner in workspace.yaml.",
            provider=wire.PROVIDER,
            email=email,
        )

    def _accounts_soql(self) -> str:
        m, c = self._account_map, self._contact_map
        fields = [
            "Id",
            m.name,
            m.renewal_date,
            m.arr,
            m.seats_licensed,
            m.seats_active,
            m.country,
            m.timezone,
            m.plan,
            *m.properties,
        ]
        for relationship in (m.csm, m.owner):
            if relationship:
                fields += [f"{relationship}.Name", f"{relationship}.Email"]
        contact = ["Id", c.email, *c.name, c.role, c.locale, c.timezone, c.country]
        contacts = f"(SELECT {', '.join(_unique(contact))} FROM Contacts WHERE {c.email} != null ORDER BY Id)"
        return f"SELECT {', '.join(_unique(fields))}, {contacts} FROM Account ORDER BY Id"

    async def _account(self, record: dict[str, Any]) -> SyncedAccount:
        def user(relationship: str | None) -> dict[str, str] | None:
            value = record.get(relationship) if relationship else None
            return person(value.get("Name"), value.get("Email")) if isinstance(value, dict) else None

        return build_account(
            str(record.get("Id")),
            _getter(record),
            self._account_map,
            csm=user(self._account_map.csm),
            owner=user(self._account_map.owner),
            contacts=await self._contacts(record.get("Contacts")),
        )

    async def _contacts(self, related: object) -> list[SyncedContact]:
        if not isinstance(related, dict):
            return []  # null: the Account has no contacts
        page = wire.QueryPage.model_validate(related)
        records = list(page.records)
        # A long child list comes back in batches too, each with its own nextRecordsUrl.
        while not page.done and page.nextRecordsUrl:
            response = await self._call("GET", page.nextRecordsUrl)
            page = self._parse(response, wire.QueryPage, "GET Contacts batch")
            records.extend(page.records)
        contacts = [build_contact(_getter(r), self._contact_map) for r in records]
        return [c for c in contacts if c is not None]


def _getter(record: Mapping[str, Any]) -> Callable[[str], object]:
    """Read ``Field`` or ``Relationship.Field`` from a query record."""

    def get(path: str) -> object:
        value: object = record
        for part in path.split("."):
            if not isinstance(value, Mapping):
                return None
            value = value.get(part)
        return value

    return get


def _unique(names: Sequence[str | None]) -> list[str]:
    return list(dict.fromkeys(n for n in names if n))


def _cut(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _str(value: object) -> str | None:
    return value if isinstance(value, str) and value else None
