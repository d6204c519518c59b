"""The Salesforce connector against a real local HTTP server that follows Salesforce's contract."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from datetime import UTC, date, datetime, timedelta

import pytest

from tests.servers.salesforce_server import FakeSalesforce, run_salesforce_server
from touchpoint.crm import (
    ApiUsage,
    CrmConfigurationError,
    CrmNotFound,
    CrmRejected,
    CrmTransientError,
    CrmUnknownOwner,
    NoteRequest,
    SalesforceBackend,
    SyncedAccount,
    TaskRequest,
    make_crm_backend,
)
from touchpoint.crm.salesforce import SALESFORCE_ACCOUNT_FIELDS, SALESFORCE_CONTACT_FIELDS

TOKEN = "00Dxx0000001gPL!AQ4AQtest"


@pytest.fixture
def salesforce() -> Iterator[FakeSalesforce]:
    with run_salesforce_server(TOKEN) as fake:
        yield fake


@pytest.fixture
async def crm(salesforce: FakeSalesforce) -> AsyncIterator[SalesforceBackend]:
    async with SalesforceBackend(salesforce.url, TOKEN, timeout=5.0) as backend:
        yield backend


def _task(key: str, account_id: str, **options: object) -> TaskRequest:
    return TaskRequest.model_validate({"key": key, "account_crm_id": account_id, "title": "Kickoff call", **options})


def _requests(salesforce: FakeSalesforce, method: str, contains: str) -> int:
    return sum(1 for r in salesforce.requests if r.method == method and contains in r.path)


async def _collect(crm: SalesforceBackend, **options: int) -> list[list[SyncedAccount]]:
    return [page async for page in crm.iter_accounts(**options)]


async def test_crm_salesforce_iter_accounts_pages_ten_thousand_accounts(
    salesforce: FakeSalesforce, crm: SalesforceBackend
) -> None:
    for i in range(10_000):
        salesforce.add_account(f"Account {i}", Seats_Licensed__c=i)

    pages = await _collect(crm, page_size=2000)  # its speed is `bench/crm.py`'s

    assert [len(page) for page in pages] == [2000] * 5
    ids = [account.crm_id for page in pages for account in page]
    assert len(set(ids)) == 10_000
    assert sorted(a.fields["seats"]["licensed"] for page in pages for a in page) == list(range(10_000))  # type: ignore[index]
    assert _requests(salesforce, "GET", "/query/01g") == 4  # nextRecordsUrl pages after the first


async def test_crm_salesforce_iter_accounts_maps_fields_owner_and_contacts(
    salesforce: FakeSalesforce, crm: SalesforceBackend
) -> None:
    dana = salesforce.add_user("dana@example.com", name="Dana Lee")
    acme = salesforce.add_account(
        "Acme Inc",
        owner_id=dana,
        Seats_Licensed__c=400,
        Seats_Active__c=310,
        Renewal_Date__c=date(2027, 1, 5),
        AnnualRevenue=120000.0,
        BillingCountry="US",
    )
    bare = salesforce.add_account("Bare Co")
    for i in range(250):  # more than one batch of child rows: the rest via nextRecordsUrl
        salesforce.add_contact(f"user{i}@acme.example", account_id=acme, name=f"User {i}", MailingCountry="DE")
    salesforce.add_contact(None, account_id=acme, name="No Email")

    pages = await _collect(crm)

    accounts = {a.crm_id: a for page in pages for a in page}
    account = accounts[acme]
    assert account.name == "Acme Inc"
    assert account.fields == {
        "renewal_date": date(2027, 1, 5),
        "arr": 120000,
        "country": "US",
        "seats": {"licensed": 400, "active": 310},
        "csm": {"name": "Dana Lee", "email": "dana@example.com"},
    }
    assert len(account.contacts) == 250
    assert account.contacts[0].model_dump() == {
        "email": "user0@acme.example",
        "name": "User 0",
        "role": None,
        "locale": None,
        "timezone": None,
        "country": "DE",
    }
    assert accounts[bare].fields == {} and accounts[bare].contacts == []


async def test_crm_salesforce_iter_accounts_follows_a_custom_field_map(salesforce: FakeSalesforce) -> None:
    salesforce.add_field("Account", "CSM__c", lookup="User")
    salesforce.add_field("Account", "ARR__c", kind="double")
    salesforce.add_field("Account", "Plan__c")
    salesforce.add_field("Contact", "Touchpoint_Role__c")
    csm = salesforce.add_user("kim@example.com", name="Kim Park")
    ae = salesforce.add_user("sam@example.com", name="Sam Ortiz")
    acme = salesforce.add_account("Acme", owner_id=ae, CSM__c=csm, ARR__c=98000.5, Plan__c="business")
    salesforce.add_contact("cto@acme.example", account_id=acme, name="Ada", Touchpoint_Role__c="Executive")
    fields = SALESFORCE_ACCOUNT_FIELDS.model_copy(
        update={"arr": "ARR__c", "csm": "CSM__r", "owner": "Owner", "plan": "Plan__c"}
    )
    contacts = SALESFORCE_CONTACT_FIELDS.model_copy(update={"role": "Touchpoint_Role__c"})

    async with SalesforceBackend(salesforce.url, TOKEN, account_fields=fields, contact_fields=contacts) as crm:
        [[account]] = await _collect(crm)

    assert account.fields == {
        "arr": 98000.5,
        "plan": "business",
        "csm": {"name": "Kim Park", "email": "kim@example.com"},
        "owner": {"name": "Sam Ortiz", "email": "sam@example.com"},
    }
    assert account.contacts[0].role == "executive"


async def test_crm_salesforce_missing_custom_field_is_rejected_with_soql_message() -> None:
    with run_salesforce_server(TOKEN, touchpoint_fields=False) as salesforce:
        salesforce.add_account("Acme")
        async with SalesforceBackend(salesforce.url, TOKEN) as crm:
            with pytest.raises(CrmRejected) as caught:
                await _collect(crm)

    assert caught.value.code == "INVALID_FIELD"
    assert "No such column 'Renewal_Date__c' on entity 'Account'" in str(caught.value)


async def test_crm_salesforce_create_task_resolves_owner_and_links_account(
    salesforce: FakeSalesforce, crm: SalesforceBackend
) -> None:
    acme = salesforce.add_account("Acme")
    dana = salesforce.add_user("dana@example.com", name="Dana Lee")
    salesforce.add_user("dana@example.com", name="Old Dana", active=False)

    ref = await crm.create_task(
        _task(
            "run-1:steps[2]",
            acme,
            body="Agenda attached",
            due_at=datetime(2026, 12, 1, 15, 30, tzinfo=UTC),
            priority="medium",
            owner_email="Dana@Example.com",
        )
    )
    second = await crm.create_task(_task("run-2:steps[2]", acme, owner_email="dana@example.com"))

    assert ref.created and second.created
    task = salesforce.tasks[ref.crm_id]
    assert {
        k: task[k] for k in ("Subject", "Description", "ActivityDate", "Priority", "Status", "WhatId", "OwnerId")
    } == {
        "Subject": "Kickoff call",
        "Description": "Agenda attached",
        "ActivityDate": "2026-12-01",
        "Priority": "Normal",
        "Status": "Not Started",
        "WhatId": acme,
        "OwnerId": dana,
    }
    assert task["Touchpoint_Key__c"] == "run-1:steps~5b2~5d"
    owner_queries = [r for r in salesforce.requests if "FROM User" in (r.query.get("q") or [""])[0]]
    assert len(owner_queries) == 1  # the user id is cached


async def test_crm_salesforce_owner_email_is_escaped_in_soql(
    salesforce: FakeSalesforce, crm: SalesforceBackend
) -> None:
    acme = salesforce.add_account("Acme")
    user = salesforce.add_user("o'brien@example.com", name="Pat O'Brien")

    ref = await crm.create_task(_task("run-1:kickoff", acme, owner_email="o'brien@example.com"))

    assert salesforce.tasks[ref.crm_id]["OwnerId"] == user


async def test_crm_salesforce_create_task_retry_after_dropped_response_creates_one(
    salesforce: FakeSalesforce, crm: SalesforceBackend
) -> None:
    acme = salesforce.add_account("Acme")
    salesforce.drop_next_response(match="PATCH /services/data/v59.0/sobjects/Task/")

    with pytest.raises(CrmTransientError):
        await crm.create_task(_task("run-1:kickoff", acme))
    assert len(salesforce.tasks) == 1  # the write happened; only the answer was lost

    retried = await crm.create_task(_task("run-1:kickoff", acme))

    assert retried.created is False
    assert list(salesforce.tasks) == [retried.crm_id]


async def test_crm_salesforce_several_matches_on_upsert_is_rejected(
    salesforce: FakeSalesforce, crm: SalesforceBackend
) -> None:
    acme = salesforce.add_account("Acme")
    salesforce.add_task(Subject="Copy 1", WhatId=acme, Touchpoint_Key__c="run-1:kickoff")
    salesforce.add_task(Subject="Copy 2", WhatId=acme, Touchpoint_Key__c="run-1:kickoff")

    with pytest.raises(CrmRejected) as caught:
        await crm.create_task(_task("run-1:kickoff", acme))

    assert caught.value.status_code == 300
    assert "2 records have this external id" in str(caught.value) and "Unique" in str(caught.value)
    assert len(salesforce.tasks) == 2


async def test_crm_salesforce_unknown_owner_raises(salesforce: FakeSalesforce, crm: SalesforceBackend) -> None:
    acme = salesforce.add_account("Acme")
    salesforce.add_user("gone@example.com", active=False)

    with pytest.raises(CrmUnknownOwner) as caught:
        await crm.create_task(_task("run-1:kickoff", acme, owner_email="gone@example.com"))

    assert caught.value.email == "gone@example.com"
    assert salesforce.tasks == {}


async def test_crm_salesforce_missing_external_id_field_is_configuration_error() -> None:
    with run_salesforce_server(TOKEN, touchpoint_fields=False) as salesforce:
        acme = salesforce.add_account("Acme")
        async with SalesforceBackend(salesforce.url, TOKEN) as crm:
            with pytest.raises(CrmConfigurationError) as caught:
                await crm.create_task(_task("run-1:kickoff", acme))

    assert caught.value.status_code == 404 and caught.value.code == "NOT_FOUND"
    assert "Touchpoint_Key__c" in str(caught.value) and "External ID" in str(caught.value)


async def test_crm_salesforce_add_note_is_an_idempotent_completed_task(
    salesforce: FakeSalesforce, crm: SalesforceBackend
) -> None:
    acme = salesforce.add_account("Acme")
    note = NoteRequest(
        key="run-1:note",
        account_crm_id=acme,
        text="Renewal call went well\nDetails follow.",
        at=datetime(2026, 11, 2, 9, tzinfo=UTC),
    )

    first = await crm.add_note(note)
    second = await crm.add_note(note)

    assert first.created and not second.created and first.crm_id == second.crm_id
    stored = salesforce.tasks[first.crm_id]
    assert stored["Subject"] == "Note: Renewal call went well"
    assert stored["Description"] == "Renewal call went well\nDetails follow."
    assert (stored["Status"], stored["ActivityDate"], stored["WhatId"]) == ("Completed", "2026-11-02", acme)
    assert stored["Touchpoint_Key__c"] == "note:run-1:note"
    assert await crm.completed_tasks(since=datetime.now(UTC) - timedelta(hours=1)) == []


async def test_crm_salesforce_completed_tasks_returns_tasks_completed_since(
    salesforce: FakeSalesforce, crm: SalesforceBackend
) -> None:
    acme = salesforce.add_account("Acme")
    done = await crm.create_task(_task("run-1:a", acme))
    done_earlier = await crm.create_task(_task("run-1:b", acme))
    await crm.create_task(_task("run-1:c", acme))  # still open
    by_hand = salesforce.add_task(Subject="Made in Salesforce", WhatId=acme)
    since = datetime.now(UTC) - timedelta(minutes=5)
    salesforce.complete_task(done.crm_id)
    salesforce.complete_task(done_earlier.crm_id, at=since - timedelta(hours=1))
    salesforce.complete_task(by_hand)

    statuses = await crm.completed_tasks(since=since)

    assert [(s.crm_id, s.key, s.completed) for s in statuses] == [(done.crm_id, "run-1:a", True)]
    assert statuses[0].completed_at is not None and statuses[0].completed_at >= since


async def test_crm_salesforce_update_account_sends_json_types(
    salesforce: FakeSalesforce, crm: SalesforceBackend
) -> None:
    acme = salesforce.add_account("Acme", BillingCountry="US", Seats_Licensed__c=10)

    await crm.update_account(
        acme,
        {
            "Seats_Licensed__c": 450,
            "Renewal_Date__c": date(2027, 1, 5),
            "AnnualRevenue": 130000.25,
            "BillingCountry": None,
        },
    )

    sent = [r for r in salesforce.requests if r.method == "PATCH"][-1].body
    assert sent == {
        "Seats_Licensed__c": 450,
        "Renewal_Date__c": "2027-01-05",
        "AnnualRevenue": 130000.25,
        "BillingCountry": None,
    }
    account = salesforce.accounts[acme]
    assert (account["Seats_Licensed__c"], account["Renewal_Date__c"], account["BillingCountry"]) == (
        450.0,
        "2027-01-05",
        None,
    )


async def test_crm_salesforce_unknown_account_is_not_found(salesforce: FakeSalesforce, crm: SalesforceBackend) -> None:
    with pytest.raises(CrmNotFound) as caught:
        await crm.update_account("001000000000999AAA", {"BillingCountry": "US"})

    assert caught.value.code == "NOT_FOUND"
    assert '"The requested resource does not exist"' in str(caught.value)


async def test_crm_salesforce_validation_error_quotes_message_and_fields(
    salesforce: FakeSalesforce, crm: SalesforceBackend
) -> None:
    acme = salesforce.add_account("Acme")
    salesforce.fail_next(
        400,
        body=[
            {
                "message": "Renewal date must be in the future",
                "errorCode": "FIELD_CUSTOM_VALIDATION_EXCEPTION",
                "fields": ["Renewal_Date__c"],
            }
        ],
    )

    with pytest.raises(CrmRejected) as caught:
        await crm.update_account(acme, {"Renewal_Date__c": date(2020, 1, 1)})

    assert caught.value.code == "FIELD_CUSTOM_VALIDATION_EXCEPTION"
    assert caught.value.fields == ("Renewal_Date__c",)
    assert '"Renewal date must be in the future" (fields: Renewal_Date__c)' in str(caught.value)


async def test_crm_salesforce_invalid_session_is_configuration_error(salesforce: FakeSalesforce) -> None:
    async with SalesforceBackend(salesforce.url, "expired-token") as crm:
        with pytest.raises(CrmConfigurationError) as caught:
            await _collect(crm)

    assert caught.value.status_code == 401 and caught.value.code == "INVALID_SESSION_ID"
    assert '"Session expired or invalid"' in str(caught.value) and "SALESFORCE_ACCESS_TOKEN" in str(caught.value)


async def test_crm_salesforce_missing_settings_are_configuration_errors(salesforce: FakeSalesforce) -> None:
    async with SalesforceBackend(None, None) as crm:
        with pytest.raises(
            CrmConfigurationError, match="SALESFORCE_INSTANCE_URL and SALESFORCE_ACCESS_TOKEN are not set"
        ):
            await crm.update_account("001", {"Name": "x"})
    async with SalesforceBackend("ftp://example.com", TOKEN) as crm:
        with pytest.raises(CrmConfigurationError, match="not an http"):
            await _collect(crm)

    assert salesforce.requests == []


async def test_crm_salesforce_request_limit_exceeded_is_transient_with_usage(
    salesforce: FakeSalesforce, crm: SalesforceBackend
) -> None:
    acme = salesforce.add_account("Acme")
    await crm.update_account(acme, {"BillingCountry": "US"})
    assert crm.last_api_usage == ApiUsage(used=1, max=15_000)
    salesforce.exhaust_api_limit()

    with pytest.raises(CrmTransientError) as caught:
        await crm.update_account(acme, {"BillingCountry": "DE"})

    assert caught.value.status_code == 403 and caught.value.code == "REQUEST_LIMIT_EXCEEDED"
    assert caught.value.retry_after == 3600
    assert crm.last_api_usage == ApiUsage(used=15_000, max=15_000)
    assert crm.last_api_usage.remaining == 0
    assert "api-usage 15000/15000" in str(caught.value) and '"TotalRequests Limit exceeded."' in str(caught.value)


async def test_crm_salesforce_other_403_is_configuration_error(
    salesforce: FakeSalesforce, crm: SalesforceBackend
) -> None:
    acme = salesforce.add_account("Acme")
    salesforce.fail_next(
        403,
        body=[{"message": "insufficient access rights on object id", "errorCode": "INSUFFICIENT_ACCESS_OR_READONLY"}],
    )

    with pytest.raises(CrmConfigurationError) as caught:
        await crm.update_account(acme, {"BillingCountry": "US"})

    assert caught.value.code == "INSUFFICIENT_ACCESS_OR_READONLY"
    assert "insufficient access rights" in str(caught.value)


@pytest.mark.parametrize("status", [500, 503])
async def test_crm_salesforce_server_errors_are_transient(
    salesforce: FakeSalesforce, crm: SalesforceBackend, status: int
) -> None:
    acme = salesforce.add_account("Acme")
    salesforce.fail_next(status)

    with pytest.raises(CrmTransientError) as caught:
        await crm.update_account(acme, {"BillingCountry": "US"})
    await crm.update_account(acme, {"BillingCountry": "US"})

    assert caught.value.status_code == status
    assert salesforce.accounts[acme]["BillingCountry"] == "US"


async def test_crm_salesforce_connection_refused_is_transient() -> None:
    with run_salesforce_server(TOKEN) as salesforce:
        url = salesforce.url  # the port is free again once the server is gone

    async with SalesforceBackend(url, TOKEN) as crm:
        with pytest.raises(CrmTransientError, match="connection failed"):
            await crm.update_account("001000000000001AAA", {"BillingCountry": "US"})


async def test_crm_salesforce_make_crm_backend_builds_salesforce(salesforce: FakeSalesforce) -> None:
    acme = salesforce.add_account("Acme")
    backend = make_crm_backend("salesforce", salesforce_instance_url=salesforce.url, salesforce_access_token=TOKEN)
    try:
        assert backend.name == "salesforce"
        await backend.update_account(acme, {"BillingCountry": "FR"})
    finally:
        await backend.aclose()

    assert salesforce.accounts[acme]["BillingCountry"] == "FR"


async def test_crm_salesforce_create_task_user_deactivated_since_lookup_is_unknown_owner(
    salesforce: FakeSalesforce, crm: SalesforceBackend
) -> None:
    acme = salesforce.add_account("Acme")
    user = salesforce.add_user("dana@example.com")
    await crm.create_task(_task("run-1:first", acme, owner_email="dana@example.com"))  # caches the User Id
    del salesforce.records["User"][user]  # OwnerId now fails with INVALID_CROSS_REFERENCE_KEY

    with pytest.raises(CrmUnknownOwner) as caught:
        await crm.create_task(_task("run-1:second", acme, owner_email="dana@example.com"))

    assert caught.value.email == "dana@example.com" and "INVALID_CROSS_REFERENCE_KEY" in str(caught.value)
    assert len(salesforce.tasks) == 1


async def test_crm_salesforce_accounts_page_follows_next_records_url(
    salesforce: FakeSalesforce, crm: SalesforceBackend
) -> None:
    for i in range(450):
        salesforce.add_account(f"Account {i:03}")

    pages = [await crm.accounts_page(page_size=200)]
    while pages[-1].next_token is not None:
        pages.append(await crm.accounts_page(token=pages[-1].next_token, page_size=200))

    assert [len(p.accounts) for p in pages] == [200, 200, 50]
    assert pages[0].next_token is not None and "/query/01g" in pages[0].next_token
    assert _requests(salesforce, "GET", "/query/01g") == 2
    with pytest.raises(ValueError):
        await crm.accounts_page(token="https://elsewhere.example/steal", page_size=200)
