"""The HubSpot connector against a real local HTTP server that follows HubSpot's contract."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from datetime import UTC, date, datetime, timedelta

import pytest

from tests.servers.hubspot_server import FakeHubSpot, run_hubspot_server
from touchpoint.crm import (
    CrmConfigurationError,
    CrmNotFound,
    CrmRejected,
    CrmTransientError,
    CrmUnknownOwner,
    HubSpotBackend,
    NoteRequest,
    SyncedAccount,
    TaskRequest,
    make_crm_backend,
    map_fields,
)
from touchpoint.crm.hubspot import HUBSPOT_ACCOUNT_FIELDS

TOKEN = "pat-na1-test-token"


@pytest.fixture
def hubspot() -> Iterator[FakeHubSpot]:
    with run_hubspot_server(TOKEN) as fake:
        yield fake


@pytest.fixture
async def crm(hubspot: FakeHubSpot) -> AsyncIterator[HubSpotBackend]:
    async with HubSpotBackend(TOKEN, hubspot.url, timeout=5.0) as backend:
        yield backend


def _task(key: str, company_id: str, **options: object) -> TaskRequest:
    return TaskRequest.model_validate({"key": key, "account_crm_id": company_id, "title": "Kickoff call", **options})


def _requests(hubspot: FakeHubSpot, method: str, prefix: str) -> int:
    return sum(1 for r in hubspot.requests if r.method == method and r.path.startswith(prefix))


async def _collect(crm: HubSpotBackend, **options: int) -> list[list[SyncedAccount]]:
    return [page async for page in crm.iter_accounts(**options)]


async def test_crm_hubspot_iter_accounts_pages_ten_thousand_companies(
    hubspot: FakeHubSpot, crm: HubSpotBackend
) -> None:
    for i in range(10_000):
        hubspot.add_company(f"Company {i}", seats_licensed=i)

    pages = await _collect(crm)  # its speed is `bench/crm.py`'s

    assert [len(page) for page in pages] == [100] * 100
    ids = [account.crm_id for page in pages for account in page]
    assert len(set(ids)) == 10_000 == len(hubspot.companies)
    assert sorted(a.fields["seats"]["licensed"] for page in pages for a in page) == list(range(10_000))  # type: ignore[index]
    assert _requests(hubspot, "GET", "/crm/v3/objects/companies") == 100


async def test_crm_hubspot_iter_accounts_maps_fields_owner_and_contacts(hubspot: FakeHubSpot) -> None:
    dana = hubspot.add_owner("dana@example.com", first_name="Dana", last_name="Lee")
    acme = hubspot.add_company(
        "Acme Inc",
        seats_licensed="400",
        seats_active="310.0",
        renewal_date="1799107200000",  # epoch ms, as older date properties come back
        arr="120000.50",
        country="US",
        timezone="america_slash_chicago",
        hubspot_owner_id=dana,
        industry="software",
    )
    bare = hubspot.add_company("Bare Co")
    for i in range(150):  # more than HubSpot embeds: the rest come from the v4 associations API
        hubspot.add_contact(
            f"user{i}@acme.example",
            company_id=acme,
            firstname="User",
            lastname=str(i),
            touchpoint_role="CHAMPION" if i == 0 else "user",
            hs_language="de",
            hs_timezone="europe_slash_berlin",
            country="DE",
        )
    no_email = hubspot.add_contact("", firstname="Nobody")
    hubspot.associate(acme, no_email)
    fields = HUBSPOT_ACCOUNT_FIELDS.model_copy(update={"properties": ("industry",)})

    async with HubSpotBackend(TOKEN, hubspot.url, account_fields=fields) as crm:
        pages = await _collect(crm)

    accounts = {a.crm_id: a for page in pages for a in page}
    account = accounts[acme]
    assert account.name == "Acme Inc"
    assert account.fields == {
        "renewal_date": date(2027, 1, 5),
        "arr": 120000.5,
        "country": "US",
        "timezone": "America/Chicago",
        "seats": {"licensed": 400, "active": 310},
        "csm": {"name": "Dana Lee", "email": "dana@example.com"},
        "properties": {"industry": "software"},
    }
    assert len(account.contacts) == 150
    first = account.contacts[0]
    assert (first.email, first.name, first.role, first.locale, first.timezone, first.country) == (
        "user0@acme.example",
        "User 0",
        "champion",
        "de",
        "Europe/Berlin",
        "DE",
    )
    assert accounts[bare].fields == {} and accounts[bare].contacts == []
    assert _requests(hubspot, "GET", "/crm/v4/objects/companies/") == 1


async def test_crm_hubspot_create_task_resolves_owner_and_associates_company(
    hubspot: FakeHubSpot, crm: HubSpotBackend
) -> None:
    company = hubspot.add_company("Acme")
    dana = hubspot.add_owner("dana@example.com", first_name="Dana", last_name="Lee")
    due = datetime(2026, 12, 1, 15, 30, tzinfo=UTC)

    ref = await crm.create_task(
        _task(
            "run-1:steps[2]",
            company,
            body="Agenda attached",
            due_at=due,
            priority="high",
            owner_email="Dana@Example.com",
        )
    )
    second = await crm.create_task(_task("run-2:steps[2]", company, owner_email="dana@example.com"))

    assert ref.created and second.created
    task = hubspot.tasks[ref.crm_id]
    assert task.properties == {
        "touchpoint_key": "run-1:steps~5b2~5d",
        "hs_task_subject": "Kickoff call",
        "hs_task_body": "Agenda attached",
        "hs_timestamp": "2026-12-01T15:30:00.000Z",
        "hs_task_status": "NOT_STARTED",
        "hs_task_type": "TODO",
        "hs_task_priority": "HIGH",
        "hubspot_owner_id": dana,
        "hs_lastmodifieddate": task.properties["hs_lastmodifieddate"],
    }
    assert task.associations == {"companies": {company: 192}}
    assert _requests(hubspot, "GET", "/crm/v3/owners") == 1  # the owner id is cached


async def test_crm_hubspot_create_task_retry_after_dropped_response_creates_one(
    hubspot: FakeHubSpot, crm: HubSpotBackend
) -> None:
    company = hubspot.add_company("Acme")
    hubspot.drop_next_response(match="POST /crm/v3/objects/tasks")

    with pytest.raises(CrmTransientError):
        await crm.create_task(_task("run-1:kickoff", company))
    assert len(hubspot.tasks) == 1  # the write happened; only the answer was lost

    retried = await crm.create_task(_task("run-1:kickoff", company))

    assert retried.created is False
    assert list(hubspot.tasks) == [retried.crm_id]


@pytest.mark.parametrize("duplicate_status", [409, 400])
async def test_crm_hubspot_create_task_duplicate_on_create_returns_existing(
    hubspot: FakeHubSpot, crm: HubSpotBackend, duplicate_status: int
) -> None:
    company = hubspot.add_company("Acme")
    first = await crm.create_task(_task("run-1:kickoff", company))
    hubspot.duplicate_status = duplicate_status
    # The look-up by key misses (e.g. a read replica behind), so the create is what clashes.
    hubspot.fail_next(404, match="GET /crm/v3/objects/tasks/")

    again = await crm.create_task(_task("run-1:kickoff", company))

    assert again == first.model_copy(update={"created": False})
    assert len(hubspot.tasks) == 1
    assert _requests(hubspot, "POST", "/crm/v3/objects/tasks") == 2


async def test_crm_hubspot_create_task_unknown_owner_raises(hubspot: FakeHubSpot, crm: HubSpotBackend) -> None:
    company = hubspot.add_company("Acme")

    with pytest.raises(CrmUnknownOwner) as caught:
        await crm.create_task(_task("run-1:kickoff", company, owner_email="ghost@example.com"))

    assert caught.value.email == "ghost@example.com"
    assert "fallback_owner" in str(caught.value)
    assert hubspot.tasks == {}


async def test_crm_hubspot_add_note_is_idempotent(hubspot: FakeHubSpot, crm: HubSpotBackend) -> None:
    company = hubspot.add_company("Acme")
    note = NoteRequest(
        key="run-1:note", account_crm_id=company, text="Renewal call went well", at=datetime(2026, 11, 2, 9, tzinfo=UTC)
    )

    first = await crm.add_note(note)
    second = await crm.add_note(note)

    assert first.created and not second.created and first.crm_id == second.crm_id
    stored = hubspot.notes[first.crm_id]
    assert stored.properties["hs_note_body"] == "Renewal call went well"
    assert stored.properties["hs_timestamp"] == "2026-11-02T09:00:00.000Z"
    assert stored.associations == {"companies": {company: 190}}


async def test_crm_hubspot_long_key_is_hashed_stably(hubspot: FakeHubSpot, crm: HubSpotBackend) -> None:
    company = hubspot.add_company("Acme")
    key = "run-" + "x" * 200

    first = await crm.create_task(_task(key, company))
    second = await crm.create_task(_task(key, company))

    stored_key = hubspot.tasks[first.crm_id].properties["touchpoint_key"]
    assert len(stored_key) == 80 and stored_key.startswith("run-xxxxxxxxxxx-")
    assert second.created is False and len(hubspot.tasks) == 1


def test_crm_hubspot_task_key_survives_a_serialization_round_trip() -> None:
    request = _task("run-1/steps[2] ü", "1001")

    again = TaskRequest.model_validate_json(request.model_dump_json())

    assert request.key == "run-1~2fsteps~5b2~5d~20~c3~bc"
    assert again.key == request.key


async def test_crm_hubspot_missing_unique_property_is_configuration_error() -> None:
    with run_hubspot_server(TOKEN, unique_property=None) as hubspot:
        company = hubspot.add_company("Acme")
        async with HubSpotBackend(TOKEN, hubspot.url) as crm:
            with pytest.raises(CrmConfigurationError) as caught:
                await crm.create_task(_task("run-1:kickoff", company))

    assert "touchpoint_key" in str(caught.value) and "hasUniqueValue" in str(caught.value)
    assert caught.value.status_code == 400


async def test_crm_hubspot_interval_rate_limit_gives_retry_after(hubspot: FakeHubSpot, crm: HubSpotBackend) -> None:
    company = hubspot.add_company("Acme")
    hubspot.set_interval_limit(1)
    await crm.update_account(company, {"country": "US"})

    with pytest.raises(CrmTransientError) as caught:
        await crm.update_account(company, {"country": "DE"})

    assert caught.value.status_code == 429
    assert caught.value.retry_after == 10.0  # one X-HubSpot-RateLimit-Interval-Milliseconds
    assert "ten_secondly_rolling" in str(caught.value)


async def test_crm_hubspot_retry_after_header_wins(hubspot: FakeHubSpot, crm: HubSpotBackend) -> None:
    company = hubspot.add_company("Acme")
    hubspot.fail_next(429, headers={"Retry-After": "3"})

    with pytest.raises(CrmTransientError) as caught:
        await crm.update_account(company, {"country": "US"})

    assert caught.value.retry_after == 3.0


async def test_crm_hubspot_short_retry_after_is_waited_out_per_call(hubspot: FakeHubSpot, crm: HubSpotBackend) -> None:
    company = hubspot.add_company("Acme")
    hubspot.fail_next(429, headers={"Retry-After": "0.1"}, times=2)
    await crm.update_account(company, {"country": "US"})  # two refusals waited out in place
    assert hubspot.companies[company].properties["country"] == "US"
    assert [r.method for r in hubspot.requests if r.path.endswith(company)] == ["PATCH"] * 3

    hubspot.fail_next(429, headers={"Retry-After": "0.1"}, times=4)  # one more than it waits out
    with pytest.raises(CrmTransientError) as caught:
        await crm.update_account(company, {"country": "DE"})
    assert caught.value.retry_after == 0.1
    assert hubspot.companies[company].properties["country"] == "US"


async def test_crm_hubspot_daily_rate_limit_waits_until_midnight(hubspot: FakeHubSpot, crm: HubSpotBackend) -> None:
    company = hubspot.add_company("Acme")
    hubspot.exhaust_daily_limit()

    with pytest.raises(CrmTransientError) as caught:
        await crm.update_account(company, {"country": "US"})

    now = datetime.now(UTC)
    midnight = datetime.combine(now.date() + timedelta(days=1), datetime.min.time(), UTC)
    assert caught.value.retry_after is not None
    assert abs(caught.value.retry_after - (midnight - now).total_seconds()) < 60
    assert "daily limit" in str(caught.value)


async def test_crm_hubspot_bad_token_is_configuration_error(hubspot: FakeHubSpot) -> None:
    async with HubSpotBackend("pat-wrong", hubspot.url) as crm:
        with pytest.raises(CrmConfigurationError) as caught:
            await anext(aiter(crm.iter_accounts()))

    assert caught.value.status_code == 401
    assert caught.value.code == "INVALID_AUTHENTICATION"
    assert "Authentication credentials not found" in str(caught.value)
    assert "HUBSPOT_TOKEN" in str(caught.value)


async def test_crm_hubspot_missing_token_is_configuration_error(hubspot: FakeHubSpot) -> None:
    async with HubSpotBackend(None, hubspot.url) as crm:
        with pytest.raises(CrmConfigurationError, match="HUBSPOT_TOKEN is not set"):
            await crm.update_account("1", {"country": "US"})

    assert hubspot.requests == []


async def test_crm_hubspot_unknown_company_is_not_found(hubspot: FakeHubSpot, crm: HubSpotBackend) -> None:
    with pytest.raises(CrmNotFound) as caught:
        await crm.update_account("999", {"country": "US"})

    assert caught.value.status_code == 404 and caught.value.code == "OBJECT_NOT_FOUND"
    assert "'999'" in str(caught.value)


async def test_crm_hubspot_server_error_is_transient(hubspot: FakeHubSpot, crm: HubSpotBackend) -> None:
    company = hubspot.add_company("Acme")
    hubspot.fail_next(500)

    with pytest.raises(CrmTransientError) as caught:
        await crm.update_account(company, {"country": "US"})
    await crm.update_account(company, {"country": "US"})

    assert caught.value.status_code == 500
    assert hubspot.companies[company].properties["country"] == "US"


async def test_crm_hubspot_timeout_is_transient(hubspot: FakeHubSpot) -> None:
    company = hubspot.add_company("Acme")
    hubspot.slow_next(1.0)

    async with HubSpotBackend(TOKEN, hubspot.url, timeout=0.2) as crm:
        with pytest.raises(CrmTransientError, match="did not answer"):
            await crm.update_account(company, {"country": "US"})


async def test_crm_hubspot_update_account_sends_strings(hubspot: FakeHubSpot, crm: HubSpotBackend) -> None:
    company = hubspot.add_company("Acme", country="US")
    hubspot.add_property("companies", "onboarding_stage")
    hubspot.add_property("companies", "is_strategic")
    hubspot.add_property("companies", "last_qbr_at")
    hubspot.add_property("companies", "modules")
    fields = map_fields(
        {
            "stage": "live",
            "seats_licensed": 450,
            "arr": 130000.25,
            "is_strategic": True,
            "renewal_date": date(2027, 1, 5),
            "last_qbr_at": datetime(2026, 11, 2, 9, 30, tzinfo=UTC),
            "modules": ["sso", "ai"],
            "country": None,
        },
        {"stage": "onboarding_stage"},
    )

    await crm.update_account(company, fields)

    sent = [r for r in hubspot.requests if r.method == "PATCH"][-1].body["properties"]
    assert sent == {
        "onboarding_stage": "live",
        "seats_licensed": "450",
        "arr": "130000.25",
        "is_strategic": "true",
        "renewal_date": "2027-01-05",
        "last_qbr_at": "2026-11-02T09:30:00.000Z",
        "modules": "sso;ai",
        "country": "",
    }
    assert hubspot.companies[company].properties["seats_licensed"] == "450"


async def test_crm_hubspot_rejected_update_quotes_message(hubspot: FakeHubSpot, crm: HubSpotBackend) -> None:
    company = hubspot.add_company("Acme")

    with pytest.raises(CrmRejected) as caught:
        await crm.update_account(company, {"bogus_field": "x"})

    assert caught.value.status_code == 400 and caught.value.code == "VALIDATION_ERROR"
    assert caught.value.fields == ("bogus_field",)
    assert 'Property "bogus_field" does not exist' in str(caught.value)


async def test_crm_hubspot_map_fields_refuses_two_fields_on_one_property() -> None:
    with pytest.raises(ValueError, match="both map to the CRM property 'stage'"):
        map_fields({"stage": 1, "onboarding_stage": 2}, {"onboarding_stage": "stage"})


async def test_crm_hubspot_completed_tasks_returns_tasks_completed_since(
    hubspot: FakeHubSpot, crm: HubSpotBackend
) -> None:
    company = hubspot.add_company("Acme")
    done = await crm.create_task(_task("run-1:a", company))
    done_earlier = await crm.create_task(_task("run-1:b", company))
    await crm.create_task(_task("run-1:c", company))  # still open
    by_hand = hubspot.add_task(hs_task_subject="Made in HubSpot", hs_timestamp="2026-11-01T00:00:00Z")
    since = datetime.now(UTC) - timedelta(minutes=5)
    hubspot.complete_task(done.crm_id)
    hubspot.complete_task(done_earlier.crm_id, at=since - timedelta(hours=1))
    hubspot.complete_task(by_hand)

    statuses = await crm.completed_tasks(since=since)

    assert [(s.crm_id, s.key, s.completed) for s in statuses] == [(done.crm_id, "run-1:a", True)]
    assert statuses[0].completed_at is not None and statuses[0].completed_at >= since


async def test_crm_hubspot_completed_tasks_needs_aware_since(crm: HubSpotBackend) -> None:
    with pytest.raises(ValueError, match="no time zone"):
        await crm.completed_tasks(since=datetime(2026, 11, 1))


async def test_crm_hubspot_make_crm_backend_builds_hubspot(hubspot: FakeHubSpot) -> None:
    company = hubspot.add_company("Acme")
    backend = make_crm_backend("hubspot", hubspot_token=TOKEN, hubspot_url=hubspot.url)
    try:
        assert backend.name == "hubspot"
        await backend.update_account(company, {"country": "FR"})
    finally:
        await backend.aclose()

    assert hubspot.companies[company].properties["country"] == "FR"
    with pytest.raises(ValueError, match="'local' backend is built on the store"):
        make_crm_backend("local")  # type: ignore[arg-type]


async def test_crm_hubspot_create_task_owner_removed_since_lookup_is_unknown_owner(
    hubspot: FakeHubSpot, crm: HubSpotBackend
) -> None:
    company = hubspot.add_company("Acme")
    owner = hubspot.add_owner("dana@example.com")
    await crm.create_task(_task("run-1:first", company, owner_email="dana@example.com"))  # caches the owner id
    del hubspot.owners[owner]  # HubSpot now answers 400 INVALID_OWNER_ID for it

    with pytest.raises(CrmUnknownOwner) as caught:
        await crm.create_task(_task("run-1:second", company, owner_email="dana@example.com"))

    assert caught.value.email == "dana@example.com" and "not a valid owner id" in str(caught.value)
    assert len(hubspot.tasks) == 1
    with pytest.raises(CrmUnknownOwner):  # the stale id was forgotten: looked up again
        await crm.create_task(_task("run-1:second", company, owner_email="dana@example.com"))


async def test_crm_hubspot_accounts_page_resumes_from_its_token(hubspot: FakeHubSpot, crm: HubSpotBackend) -> None:
    for i in range(5):
        hubspot.add_company(f"Company {i}")

    first = await crm.accounts_page(page_size=2)
    again = await crm.accounts_page(token=first.next_token, page_size=2)
    retried = await crm.accounts_page(token=first.next_token, page_size=2)  # a retry reads the same page
    last = await crm.accounts_page(token="4", page_size=2)

    assert [a.name for a in first.accounts] == ["Company 0", "Company 1"]
    assert [a.name for a in again.accounts] == [a.name for a in retried.accounts] == ["Company 2", "Company 3"]
    assert [a.name for a in last.accounts] == ["Company 4"] and last.next_token is None
