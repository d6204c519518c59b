"""The account workflow as a next release might change it, for `tests/test_replay.py`.

Both variants add one command (a timer) before anything else: `Patched` guards it with
`workflow.patched()`, the way a change reaches account workflows in flight after the first
release (README, "After the first release"); `Unguarded` does not.
"""

from __future__ import annotations

from datetime import timedelta

from temporalio import workflow

from workflows.account import AccountWorkflow

with workflow.unsafe.imports_passed_through():
    from touchpoint.dsl.runtime import RunResult
    from workflows import names
    from workflows.messages import AccountState


@workflow.defn(name=names.ACCOUNT)
class Patched(AccountWorkflow):
    """The new command only in workflows that reach it on the new code."""

    @workflow.init
    def __init__(self, state: AccountState) -> None:
        super().__init__(state)

    @workflow.run
    async def run(self, state: AccountState) -> RunResult | None:
        if workflow.patched("example-settle-first"):
            await workflow.sleep(timedelta(milliseconds=1))
        return await super().run(state)


@workflow.defn(name=names.ACCOUNT)
class Unguarded(AccountWorkflow):
    """The same change without the guard: breaks every account workflow in flight."""

    @workflow.init
    def __init__(self, state: AccountState) -> None:
        super().__init__(state)

    @workflow.run
    async def run(self, state: AccountState) -> RunResult | None:
        await workflow.sleep(timedelta(milliseconds=1))
        return await super().run(state)
