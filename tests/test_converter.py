"""The data converter: payloads leave out fields at their default and read back equal."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from touchpoint.converter import DATA_CONVERTER
from touchpoint.dsl.accounts import AccountDoc
from touchpoint.dsl.runtime import EventIn
from touchpoint.dsl.validate import load_project
from workflows.messages import AccountState, Envelope, Loaded

LIBRARY = Path(__file__).resolve().parent.parent / "playbooks"


def round_trip(value: Any, type_hint: type) -> tuple[Any, dict[str, Any]]:
    converter = DATA_CONVERTER.payload_converter
    (payload,) = converter.to_payloads([value])
    assert payload.metadata["encoding"] == b"json/plain"
    (back,) = converter.from_payloads([payload], [type_hint])
    return back, json.loads(payload.data)


@pytest.mark.parametrize("name", sorted(p.stem for p in LIBRARY.glob("*.yaml") if p.stem not in ("workspace", "health")))
def test_converter_carries_every_library_playbook_unchanged(name: str) -> None:
    project = load_project(LIBRARY)
    project.raise_for_problems()
    loaded = Loaded(playbook=project.playbooks[name].playbook, version="v1", workspace=project.workspace)
    back, _ = round_trip(loaded, Loaded)
    assert back == loaded
    assert back.playbook.model_dump() == loaded.playbook.model_dump()


def test_converter_leaves_defaults_out_and_reads_them_back() -> None:
    account = AccountDoc.model_validate({"id": "acme", "name": "Acme", "seats": {"licensed": 100, "active": 10}, "contacts": [{"email": "kim@acme.example", "role": "champion"}]})
    event = EventIn(id="e1", type="account.upserted", account_id="acme", at=datetime(2026, 12, 6, tzinfo=UTC))
    state = AccountState(account_id="acme", account=account, pending=[Envelope(event=event, account=account)], indexed=False)
    back, sent = round_trip(state, AccountState)
    assert back == state
    assert back.account is not None and back.account.segment is None and back.account.metrics == {} and back.simulation is False
    # Only what differs from a default travels (False differs from the default None here).
    assert set(sent) == {"account_id", "account", "pending", "indexed"}
    assert set(sent["account"]) == {"id", "name", "seats", "contacts"}


def test_converter_reads_payloads_written_in_full() -> None:
    """A payload with every field (as pydantic's own converter writes them) reads the same."""
    state = AccountState(account_id="acme", account=AccountDoc(id="acme", name="Acme"))
    (full,) = DATA_CONVERTER.payload_converter.to_payloads([state.model_dump(mode="json")])
    (back,) = DATA_CONVERTER.payload_converter.from_payloads([full], [AccountState])
    assert back == state
