"""The signed unsubscribe link, round trip: an email's link, the API's pages, later emails."""

from __future__ import annotations

import asyncio
import re
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any, TypeVar

import httpx
import pytest
from sqlalchemy import select

from tests.conftest import Stack, on_both_stores, write_folder
from tests.hosts import stored_status
from touchpoint.api.app import create_app
from touchpoint.config import load_settings
from touchpoint.dsl.runtime import RunStatus
from touchpoint.store import repo
from touchpoint.store.models import Suppression
from touchpoint.unsubscribe import make_token, read_token, unsubscribe_url

T = TypeVar("T")

WORKSPACE = """\
timezone: UTC
sender: {email: cs@example.com, name: CS}
send_window: {days: [mon, tue, wed, thu, fri, sat, sun], hours: "00:00-24:00"}
"""
PLAYBOOK = """\
playbook: tips
trigger: {event: account.created}
audience: [champion]
steps:
  - email: {template: tip}
    id: first
  - wait_for: {event: email.unsubscribed, timeout: 30d}
    id: opted_out
  - email: {template: tip}
    id: second
"""
TEMPLATES = {
    "templates/tip.subject.j2": "A tip for {{ account.name }}",
    "templates/tip.html.j2": "<p>Hi {{ contact.name }}, here is a tip.</p>",
}


@pytest.fixture
async def stack(own_stack: Stack) -> Stack:
    """A server of its own: account workflows run local activities that must not strand on a shared one."""
    return own_stack


@pytest.fixture
async def api(stack: Stack) -> AsyncIterator[httpx.AsyncClient]:
    # The worker's settings sign the links in emails; the API must share their secret.
    settings = load_settings(
        home=stack.settings.home,
        database_url=stack.settings.database_url,
        task_queue=stack.task_queue,
        secret_key=stack.settings.secret_key.get_secret_value(),
    )
    app = create_app(settings, stack.client, stack.deps.sessions)
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://touchpoint.test") as http:
        yield http


async def eventually(probe: Callable[[], T | Awaitable[T]], what: str, timeout: float = 15.0) -> T:
    """Poll ``probe`` until it returns something truthy (workflows run asynchronously)."""
    deadline = time.monotonic() + timeout
    while True:
        value = probe()
        if isinstance(value, Awaitable):
            value = await value
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.05)


def suppressions(stack: Stack) -> dict[str, str]:
    with stack.deps.sessions() as s:
        return {row.email: row.reason for row in s.scalars(select(Suppression))}


def messages(stack: Stack, to: str) -> list[Any]:
    with stack.deps.sessions() as s:
        return sorted(repo.list_messages(s, to_email=to), key=lambda m: m.step or "")


def test_unsubscribe_token_is_signed_and_carries_no_guessable_id() -> None:
    token = make_token("secret", " Kim@Acme.example ")
    assert read_token("secret", token) == "kim@acme.example"
    assert read_token("another secret", token) is None
    address, _, signature = token.partition(".")
    assert read_token("secret", f"{address}.{signature[:-1]}{'A' if signature[-1] != 'A' else 'B'}") is None
    assert read_token("secret", address) is None
    other = make_token("secret", "lee@acme.example").split(".")[1]
    assert read_token("secret", f"{address}.{other}") is None  # a valid signature of another address
    assert unsubscribe_url("https://cs.example.com/", "secret", "kim@acme.example") == f"https://cs.example.com/unsubscribe/{token}"


@on_both_stores()
async def test_unsubscribe_link_round_trip_through_the_api(stack: Stack, folder: Path, api: httpx.AsyncClient) -> None:
    write_folder(folder, {"workspace.yaml": WORKSPACE, "tips.yaml": PLAYBOOK, **TEMPLATES})
    stack.deploy(folder)
    acct = f"acct-{uuid.uuid4().hex[:8]}"
    to = f"kim-{acct}@acme.example"
    doc = {"name": "Acme", "contacts": [{"email": to, "name": "Kim", "role": "champion"}]}
    assert (await api.put(f"/accounts/{acct}", json=doc)).status_code == 202

    (first,) = await eventually(lambda: messages(stack, to), "the first email")
    assert first.status == "sent"
    links = set(re.findall(r"https?://[^\s\"'<>]+/unsubscribe/([A-Za-z0-9_\-.]+)", first.html + first.text))
    assert len(links) == 1, links
    token = links.pop()
    path = f"/unsubscribe/{token}"

    page = await api.get(path)
    assert page.status_code == 200
    assert to in page.text and "method='post'" in page.text
    assert suppressions(stack) == {}  # mail clients prefetch links: a GET changes nothing

    address, _, signature = token.partition(".")
    tampered = [
        f"{address}.{signature[:-1]}{'A' if signature[-1] != 'A' else 'B'}",
        f"{make_token('secret', to).split('.')[0][:-2]}xx.{signature}",
        make_token("not our secret", to),
        address,
    ]
    for bad in tampered:
        assert (await api.get(f"/unsubscribe/{bad}")).status_code == 404, bad
        assert (await api.post(f"/unsubscribe/{bad}")).status_code == 404, bad
    assert suppressions(stack) == {}

    done = await api.post(path)
    assert done.status_code == 200 and to in done.text
    assert suppressions(stack) == {to: "unsubscribed"}

    # The account hears of it, so the waiting run moves on, and its next email is not sent.
    async def ended() -> RunStatus | None:
        status = stored_status(stack.deps.sessions, acct, "tips")
        return status if status is not None and status.status == "ended" else None

    status = await eventually(ended, "the run to end")
    assert status.outcome == "completed"
    assert [(r.step, r.action) for r in status.history] == [("first", "email"), ("opted_out", "wait_for"), ("second", "email")]
    assert status.history[1].detail["timeout"] is False
    assert status.history[2].detail["status"] == "suppressed"
    with stack.deps.sessions() as s:
        heard = [e.data for e in repo.list_events(s, account_id=acct, type="email.unsubscribed")]
    assert heard == [{"to": to}]
    first_again, second = messages(stack, to)
    assert (first_again.step, second.step) == ("first", "second")
    assert second.status == "suppressed" and "suppression list" in (second.error or "")
    assert len(list(stack.settings.outbox_dir.glob("*.eml"))) == 1  # only the first email went out
