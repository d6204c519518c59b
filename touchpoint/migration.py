"""`touchpoint migrate` and `POST /playbooks/{id}/migrate`: move live runs to another version.

The store says which runs of a playbook are in flight on another version; each of their account
workflows moves its own runs in a `migrate` update (`workflows/account.py`, the rules in
`touchpoint.engine.migrate`) and answers what it did, so the report is what happened, and the
command returns when the runs have moved. A dry run asks the same workflows the same question
with ``dry_run`` set: they answer what they would do and change nothing.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy.orm import Session
from temporalio.client import Client, WorkflowUpdateFailedError
from temporalio.service import RPCError, RPCStatusCode

from touchpoint.dsl.schema import Playbook
from touchpoint.engine.migrate import Move
from touchpoint.store import repo
from workflows.account import account_workflow_id
from workflows.messages import Loaded, MigrateRequest

CONCURRENCY = 32
"""Account workflows asked at once."""


class MigrationError(Exception):
    """The playbook or the version asked for is not deployed (the message says what is)."""


@dataclass
class Report:
    """What a migration did (or, dry, would do): one `Move` per run found in flight."""

    playbook: str
    to_version: str
    dry_run: bool
    moves: list[Move] = field(default_factory=list)

    @property
    def moved(self) -> list[Move]:
        return [m for m in self.moves if m.moved]

    @property
    def stayed(self) -> list[Move]:
        return [m for m in self.moves if not m.moved]

    def as_dict(self) -> dict[str, Any]:
        return {
            "playbook": self.playbook,
            "to_version": self.to_version,
            "dry_run": self.dry_run,
            "moved": len(self.moved),
            "stayed": len(self.stayed),
            "runs": [m.model_dump(mode="json") for m in self.moves],
        }


def target_version(s: Session, playbook: str, to: str = "latest") -> str:
    """The version id ``to`` names (``latest``: the current one).

    Raises:
        MigrationError: the playbook or that version was never deployed.
    """
    current = repo.get_deployment(s, "playbook", playbook)
    known = repo.playbook_versions(s, playbook)
    if not known:
        raise MigrationError(f"playbook {playbook!r} is not deployed: `touchpoint deploy` it first")
    if to == "latest":
        if current is None:
            raise MigrationError(f"playbook {playbook!r} has no current version (it was removed): name one with --to ({', '.join(known)})")
        return current.version
    if to not in known:
        raise MigrationError(f"playbook {playbook!r} has no version {to!r}; its versions, newest first: {', '.join(known)}")
    return to


def _program(s: Session, playbook: str, version: str) -> Loaded:
    """The target version as account workflows run it, read once for all of them."""
    from activities.store import current_workspace

    found = repo.get_deployment(s, "playbook", playbook, version)
    assert found is not None  # `target_version` found it
    return Loaded(playbook=Playbook.model_validate(found.content["playbook"]), version=version, workspace=current_workspace(s))


def runs_to_move(s: Session, playbook: str, version: str, account_id: str | None = None) -> dict[str, list[str]]:
    """The runs of ``playbook`` in flight on another version, by account."""
    found: dict[str, list[str]] = {}
    for run in repo.list_runs(s, account_id=account_id, playbook_id=playbook):
        if run.status != "ended" and run.version != version and run.account_id:
            found.setdefault(run.account_id, []).append(run.id)
    return found


async def migrate(
    client: Client,
    sessions: Callable[[], Session],
    playbook: str,
    *,
    to: str = "latest",
    account_id: str | None = None,
    dry_run: bool = False,
) -> Report:
    """Move (or, dry, plan moving) the playbook's runs in flight on other versions to ``to``."""
    with sessions() as s:
        version = target_version(s, playbook, to)
        accounts = runs_to_move(s, playbook, version, account_id)
        program = _program(s, playbook, version)
    report = Report(playbook=playbook, to_version=version, dry_run=dry_run)
    limit = asyncio.Semaphore(CONCURRENCY)

    async def one(account: str) -> list[Move]:
        async with limit:
            handle = client.get_workflow_handle(account_workflow_id(account))
            request = MigrateRequest(playbook=playbook, version=version, dry_run=dry_run, program=program)
            try:
                moves: list[Move] = await handle.execute_update("migrate", request, result_type=list[Move])
            except RPCError as exc:
                if exc.status != RPCStatusCode.NOT_FOUND:
                    raise
                return []  # the account's workflow has ended since: its runs ended with it
            except WorkflowUpdateFailedError as exc:
                raise MigrationError(f"account {account}: {exc.cause or exc}") from None
            return moves

    for moves in await asyncio.gather(*(one(account) for account in sorted(accounts))):
        report.moves.extend(moves)
    report.moves.sort(key=lambda m: (m.account_id or "", m.run_id))
    return report


def command(playbook: str, to: str = "latest", account_id: str | None = None) -> str:
    """The command line that moves the playbook's runs (printed after a deploy)."""
    parts = ["touchpoint", "migrate", playbook]
    if to != "latest":
        parts += ["--to", to]
    if account_id:
        parts += ["--account", account_id]
    return " ".join(parts)
