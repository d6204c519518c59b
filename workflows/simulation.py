"""Simulations on a Temporal server: an `Account` workflow in simulation mode, fed a script.

`simulated_account` builds the state of an account workflow that starts one playbook, receives
the scripted events at their offsets from the run's start (on its own clock: the order of timers
and events is decided inside Temporal, not by the client's timing), stops the run at the horizon
(outcome ``running``) and ends with the run's `RunResult`, timeline included. The client awaits
that result, so the time-skipping server skips the waits.
"""

from __future__ import annotations

import uuid
from typing import Any

from pydantic import Field

from touchpoint.dsl.accounts import AccountDoc
from touchpoint.dsl.runtime import Data, EventIn, StartRequest
from touchpoint.engine.accounts import patched
from workflows.messages import AccountState, Envelope, Scripted


class SimEvent(Data):
    """An event at an offset from the start: ``{after: 10d, type, data}``."""

    after: float
    """Seconds after the start."""
    type: str | None = None
    data: dict[str, Any] = Field(default_factory=dict)
    account: dict[str, Any] | None = None
    """Fields merged into the account instead of an event (the workflow derives its events)."""


class SimInput(Data):
    """A run to simulate: the account, the playbook and its trigger, the events, the horizon."""

    account: AccountDoc
    playbook: str
    event: EventIn = Field(default_factory=lambda: EventIn(type="manual"))
    clock_offset: float = 0.0
    events: list[SimEvent] = Field(default_factory=list)
    horizon: float = 730 * 86400.0


def simulated_account(sim: SimInput) -> AccountState:
    """The input of an `Account` workflow that runs ``sim`` and returns its run's result.

    Event ids are unique per simulation: several simulations may share one store, where a
    repeated event id is a duplicate.
    """
    prefix = f"sim-{uuid.uuid4().hex[:12]}"
    script: list[Scripted] = []
    account = sim.account
    for index, event in sorted(enumerate(sim.events), key=lambda item: (item[1].after, item[0])):
        if event.account is not None:
            account = patched(account, event.account)
            envelope = Envelope(event=EventIn(id=f"{prefix}-{index}", type="account.upserted"), account=account)
        else:
            envelope = Envelope(event=EventIn(id=f"{prefix}-{index}", type=str(event.type), data=event.data))
        script.append(Scripted(after=event.after, envelope=envelope))
    return AccountState(
        account_id=sim.account.id,
        account=sim.account,
        clock_offset=sim.clock_offset,
        simulation=True,
        finish_after_run=True,
        starts=[StartRequest(playbook=sim.playbook, event=sim.event)],
        script=script,
        horizon=sim.horizon,
    )
