"""`Simulation`: drives one `PlaybookRun` through scripted events on the time-skipping server.

The driver starts the run as a child, sleeps to each event's offset and signals it, so the order
of timers and events is decided inside Temporal, not by the client's timing (TEMPORAL-NOTES.md).
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from temporalio import workflow
from temporalio.workflow import ParentClosePolicy

with workflow.unsafe.imports_passed_through():
    from pydantic import Field

    from touchpoint.dsl.runtime import Data, EventIn, RunInput, RunResult
    from touchpoint.engine.accounts import changes, patched
    from workflows import names


class SimEvent(Data):
    """An event at an offset from the start: ``{after: 10d, type, data}``."""

    after: float
    """Seconds after the start."""
    type: str | None = None
    data: dict[str, Any] = Field(default_factory=dict)
    account: dict[str, Any] | None = None
    """Fields merged into the account instead of an event (with the events an upsert emits)."""


class SimInput(Data):
    """A run, its events and the horizon."""

    run: RunInput
    events: list[SimEvent] = Field(default_factory=list)
    horizon: float = 730 * 86400.0


@workflow.defn(name=names.SIMULATION)
class Simulation:
    """Feeds events to a child run at their offsets until it ends or the horizon passes."""

    @workflow.run
    async def run(self, input: SimInput) -> RunResult:
        child = await workflow.start_child_workflow(
            names.PLAYBOOK_RUN,
            input.run,
            id=f"{workflow.info().workflow_id}/run",
            result_type=RunResult,
            parent_close_policy=ParentClosePolicy.TERMINATE,
        )
        start = workflow.now()
        offset = timedelta(seconds=input.run.clock_offset)
        account = input.run.account
        for index, event in sorted(enumerate(input.events), key=lambda item: (item[1].after, item[0])):
            due = start + timedelta(seconds=event.after)
            if await self._ended_before(child, due):
                return _result(child)
            at = workflow.now() + offset
            if event.account is not None and account is not None:
                previous, account = account, patched(account, event.account)
                signals: list[tuple[str, Any]] = [("account", account)]
                signals += [("event", e) for e in changes(previous, account, at, f"sim-{index}")]
            else:
                signals = [("event", EventIn(id=f"sim-{index}", type=str(event.type), data=event.data, at=at))]
            try:
                for name, arg in signals:
                    await child.signal(name, arg)
            except Exception:  # the run ended between the timer and the signal
                return _result(await child)
        if await self._ended_before(child, start + timedelta(seconds=input.horizon)):
            return _result(child)
        await child.signal("stop_simulation")
        return _result(await child)

    async def _ended_before(self, child: Any, due: Any) -> bool:
        remaining = due - workflow.now()
        if remaining > timedelta(0):
            try:
                await workflow.wait_condition(lambda: child.done(), timeout=remaining)
            except TimeoutError:
                pass
        return bool(child.done())


def _result(value: Any) -> RunResult:
    result = value.result() if hasattr(value, "result") and callable(value.result) else value
    assert isinstance(result, RunResult)
    return result
