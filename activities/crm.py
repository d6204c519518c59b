"""CRM side effects: tasks, notes and field updates, in the local store or a remote CRM.

The local store always records them (for `touchpoint tasks` and status); with a remote backend
(HubSpot, Salesforce) the record is also created there, idempotently by the ledger key.
"""

from __future__ import annotations

from sqlalchemy.orm import Session
from temporalio import activity
from temporalio.exceptions import ApplicationError

from activities.deps import Deps
from activities.render import context_of, render
from activities.store import project_runs, write_carried
from touchpoint.dsl.expressions import ExpressionError
from touchpoint.dsl.runtime import EffectInput, EffectResult, NoteInput, TaskInput, TaskResult, UpdateInput
from touchpoint.engine.effects import task_result, update_values
from touchpoint.engine.people import stable_id, with_note
from touchpoint.store import repo
from workflows import names


def _remote_error(exc: Exception) -> Exception:
    from touchpoint.crm.errors import CrmConfigurationError, CrmRejected, CrmTransientError

    if isinstance(exc, CrmConfigurationError):
        return ApplicationError(str(exc), type=names.CONFIGURATION_ERROR, non_retryable=True)
    if isinstance(exc, CrmTransientError):
        from datetime import timedelta

        delay = timedelta(seconds=exc.retry_after) if exc.retry_after else None
        return ApplicationError(str(exc), type="CrmTransient", next_retry_delay=delay)
    if isinstance(exc, CrmRejected):
        return ApplicationError(str(exc), type="Rejected", non_retryable=True)
    return exc


class CrmActivities:
    """`task`, `note` and `update` steps."""

    def __init__(self, deps: Deps) -> None:
        self.deps = deps

    @activity.defn(name=names.CREATE_TASK)
    async def create_task(self, input: TaskInput) -> TaskResult:
        """Create a CRM task once per ledger key.

        The owner is the account's CSM (or owner, or an address); without one, the
        workspace's ``crm.fallback_owner``. When the CRM has no active user with the
        owner's email, the task is created again for the fallback owner (or unassigned
        without one), and its notes say so. The run projections it carries are written first
        when a CRM is called (where the run stands shows while it answers), else with the task.
        """
        remote = self.deps.crm_backend is not None and input.account is not None and not input.simulation
        if remote:
            await write_carried(self.deps, input)
        try:
            planned, notes = task_result(input)
        except ExpressionError as exc:
            if not remote:
                await write_carried(self.deps, input)  # the lines it carries outlive the failed step
            raise ApplicationError(str(exc), type="Rejected", non_retryable=True) from None
        title = planned.title
        owner, owner_note = planned.owner, planned.owner_note
        task_id = planned.task_id
        crm_id = None
        if remote:
            from touchpoint.crm.errors import CrmError, CrmUnknownOwner

            # The owner, then the fallback owner, then nobody (the CRM's default owner).
            candidates: list[str | None] = [owner]
            if input.fallback_owner and input.fallback_owner != owner:
                candidates.append(input.fallback_owner)
            candidates.append(None)
            try:
                for candidate in candidates:
                    try:
                        crm_id = await self._create_remote(input, task_id, title, with_note(notes, owner_note), candidate)
                        break
                    except CrmUnknownOwner as exc:
                        if candidate is None:
                            raise
                        nxt = candidates[candidates.index(candidate) + 1]
                        owner_note = (f"{owner_note} " if owner_note else "") + f"{candidate} is not a user in {exc.provider}: " + (
                            f"assigned to the fallback owner {nxt} (crm.fallback_owner)."
                            if nxt
                            else "left unassigned (the CRM's default owner); set crm.fallback_owner to a CRM user."
                        )
                        owner = nxt or owner
            except CrmError as exc:
                raise _remote_error(exc) from None
        notes = with_note(notes, owner_note)

        def work(s: Session) -> None:
            if not remote and input.projections and not input.simulation:
                project_runs(s, input.projections)
            repo.add_task(
                s,
                id=task_id,
                ledger_key=input.key,
                run_id=input.run.id,
                account_id=effect_account_id(input),
                playbook_id=input.run.playbook,
                step=input.step,
                title=title,
                owner=owner,
                due_at=input.due_at,
                priority=input.priority,
                notes=notes,
                crm_id=crm_id,
                created_at=input.now,
            )
            if input.writes_timeline:
                repo.add_run_step(s, input.run.id, input.now, input.run.day, input.step, "task", {"task_id": task_id, "title": title, "owner": owner})

        await self.deps.db(work)
        return TaskResult(task_id=task_id, title=title, owner=owner, due_at=input.due_at, owner_note=owner_note)

    async def _create_remote(self, input: TaskInput, task_id: str, title: str, body: str | None, owner: str | None) -> str:
        from touchpoint.crm.base import TaskRequest

        ref = await self.deps.crm_backend.create_task(
            TaskRequest(
                key=task_id,
                account_crm_id=crm_account_id(input),
                title=title,
                body=body,
                due_at=input.due_at,
                priority=input.priority,  # type: ignore[arg-type]
                owner_email=owner if owner and "@" in owner else None,
            )
        )
        return str(ref.crm_id)

    @activity.defn(name=names.ADD_NOTE)
    async def add_note(self, input: NoteInput) -> EffectResult:
        """Log a note on the account's timeline once per ledger key."""
        await write_carried(self.deps, input)
        text = render(input.text, context_of(input))
        note_id = stable_id("note", input.key)
        if self.deps.crm_backend is not None and input.account is not None and not input.simulation:
            from touchpoint.crm.base import NoteRequest
            from touchpoint.crm.errors import CrmError

            try:
                await self.deps.crm_backend.add_note(
                    NoteRequest(key=note_id, account_crm_id=crm_account_id(input), text=text, at=input.now)
                )
            except CrmError as exc:
                raise _remote_error(exc) from None

        def work(s: Session) -> None:
            repo.add_note(s, id=note_id, ledger_key=input.key, account_id=effect_account_id(input), run_id=input.run.id, step=input.step, text=text, created_at=input.now)

        await self.deps.db(work)
        return EffectResult(detail={"text": text})

    @activity.defn(name=names.UPDATE_FIELDS)
    async def update_fields(self, input: UpdateInput) -> EffectResult:
        """Write account fields (mapped through `crm.fields`) once per ledger key."""
        await write_carried(self.deps, input)
        try:
            fields = update_values(input.fields, context_of(input))
        except ExpressionError as exc:
            raise ApplicationError(str(exc), type="Rejected", non_retryable=True) from None
        if self.deps.crm_backend is not None and input.account is not None and not input.simulation:
            from touchpoint.crm.errors import CrmError

            mapped = {input.crm_fields.get(k, k): v for k, v in fields.items()}
            ledger_done = await self.deps.db(lambda s: repo.ledger_get(s, input.key))
            if ledger_done is None or ledger_done.status != "done":
                try:
                    await self.deps.crm_backend.update_account(crm_account_id(input), mapped)
                except CrmError as exc:
                    raise _remote_error(exc) from None

        def work(s: Session) -> None:
            repo.add_field_update(s, ledger_key=input.key, account_id=effect_account_id(input), run_id=input.run.id, step=input.step, fields=fields, created_at=input.now)
            repo.ledger_reserve(s, input.key, "update")
            repo.ledger_finish(s, input.key, "done", {"fields": fields})

        await self.deps.db(work)
        return EffectResult(detail={"fields": fields})


def effect_account_id(input: EffectInput) -> str:
    """The account an effect is about ('' for schedule runs)."""
    return input.account.id if input.account else ""


def crm_account_id(input: EffectInput) -> str:
    """The account's record id in the CRM: `properties.crm_id` when synced, else our id."""
    assert input.account is not None
    return str(input.account.properties.get("crm_id") or input.account.id)
