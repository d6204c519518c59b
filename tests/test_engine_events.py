"""The engine's own events (contract section 9): `run.started`, `run.ended` and `email.sent`.

A playbook can start when another ends and wait for an email to go out; an event that nothing
listens to is still in the account's event log, written with the run's projection.
"""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest

from tests.conftest import Stack, eventually
from tests.test_events import account, api_client, deploy, uid
from touchpoint.store import repo


@pytest.fixture
async def stack(own_stack: Stack) -> Stack:
    return own_stack


@pytest.fixture
async def api(stack: Stack) -> httpx.AsyncClient:
    async with api_client(stack) as client:
        yield client  # type: ignore[misc]


FIRST = """\
playbook: first
trigger: {event: account.created}
audience: [champion]
steps:
  - email: {template: hi}
    id: hello
  - note: {text: "first done"}
"""
NEXT = """\
playbook: next
trigger: {event: run.ended, when: "event.data.playbook == 'first' and event.data.outcome == 'completed'"}
steps:
  - note: {text: "after {{ event.data.playbook }} ({{ event.data.outcome }})"}
"""
WATCHER = """\
playbook: watcher
trigger: {event: account.created}
steps:
  - wait_for: {event: email.sent, timeout: 1d, when: "event.data.playbook == 'first'"}
    id: sent
  - note: {text: "saw {{ event.data.template }} go to {{ event.data.to }} from step {{ event.data.step }}"}
"""
AGAIN = """\
playbook: again
trigger: {event: run.ended}
reenroll: always
steps:
  - note: {text: "ended"}
"""


def _log(stack: Stack, account_id: str) -> list[tuple[str, dict[str, object]]]:
    with stack.deps.sessions() as s:
        return [(e.type, dict(e.data)) for e in reversed(repo.event_log(s, account_id))]


def _ended_playbooks(log: list[tuple[str, dict[str, object]]]) -> list[str]:
    return [str(d["playbook"]) for t, d in log if t == "run.ended"]


def _ends(log: list[tuple[str, dict[str, object]]]) -> int:
    return len(_ended_playbooks(log))


async def test_a_playbook_starts_when_another_ends_and_one_waits_for_an_email(stack: Stack, folder: Path, api: httpx.AsyncClient) -> None:
    deploy(stack, folder, {"first.yaml": FIRST, "next.yaml": NEXT, "watcher.yaml": WATCHER})
    acct = uid()
    assert (await api.put(f"/accounts/{acct}", json=account(acct))).status_code == 202

    def ended_runs(playbook: str) -> object:
        return lambda s: [r for r in repo.list_runs(s, account_id=acct, playbook_id=playbook) if r.status == "ended"]

    first = (await eventually(stack, ended_runs("first")))[0]
    chained = (await eventually(stack, ended_runs("next")))[0]
    watcher = (await eventually(stack, ended_runs("watcher")))[0]
    with stack.deps.sessions() as s:
        assert [n.text for n in repo.list_notes(s, run_id=chained.id)] == ["after first (completed)"]
        assert [n.text for n in repo.list_notes(s, run_id=watcher.id)] == [f"saw hi go to kim@{acct}.example from step hello"]
    assert (first.outcome, watcher.outcome, chained.outcome) == ("completed", "completed", "completed")
    log = await eventually(stack, lambda s: _ends(log := _log(stack, acct)) == 3 and log)
    assert sorted(str(d["playbook"]) for t, d in log if t == "run.started") == ["first", "next", "watcher"]
    ends = {str(d["playbook"]): d for t, d in log if t == "run.ended"}
    assert ends["first"] == {"playbook": "first", "version": first.version, "outcome": "completed"}
    sent = [d for t, d in log if t == "email.sent"]
    assert len(sent) == 1 and sent[0]["to"] == f"kim@{acct}.example" and sent[0]["step"] == "hello" and sent[0]["message_id"]


async def test_a_playbooks_own_end_never_enrolls_it_again(stack: Stack, folder: Path, api: httpx.AsyncClient) -> None:
    deploy(stack, folder, {"first.yaml": FIRST, "again.yaml": AGAIN})
    acct = uid()
    await api.put(f"/accounts/{acct}", json=account(acct))
    # `again` ends at once; its own run.ended is applied in the store step that would write a
    # new run's row, so once that end is in the log a second run would be there too.
    log = await eventually(stack, lambda s: "again" in _ended_playbooks(log := _log(stack, acct)) and log)
    with stack.deps.sessions() as s:
        assert len(repo.list_runs(s, account_id=acct, playbook_id="again")) == 1
    assert [str(d["playbook"]) for t, d in log if t == "run.ended"] == ["first", "again"]


async def test_engine_events_nothing_listens_to_are_still_logged(stack: Stack, folder: Path, api: httpx.AsyncClient) -> None:
    deploy(stack, folder, {"first.yaml": FIRST})
    acct = uid()
    await api.put(f"/accounts/{acct}", json=account(acct))
    run = (await eventually(stack, lambda s: [r for r in repo.list_runs(s, account_id=acct) if r.status == "ended"]))[0]
    log = await eventually(stack, lambda s: (found := _log(stack, acct)) and any(t == "run.ended" for t, _ in found) and found)
    assert [t for t, _ in log if t.startswith(("run.", "email."))] == ["run.started", "email.sent", "run.ended"]
    # One event per kind and run, however often the projection was retried.
    with stack.deps.sessions() as s:
        ids = [e.id for e in repo.event_log(s, acct)]
    assert f"{run.id}:run.started" in ids and f"{run.id}:run.ended" in ids and len(ids) == len(set(ids))
