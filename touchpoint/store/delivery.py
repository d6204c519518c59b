"""What runs send and create: the exactly-once ledger, messages, tasks, notes, field
updates, suppressions and frequency-cap slots.

Every function takes a ``Session`` and leaves the transaction to the caller; see `repo`.
"""

from __future__ import annotations

import datetime as dt
from typing import Any, cast

from sqlalchemy import Table, bindparam, delete, select, update
from sqlalchemy.engine import CursorResult
from sqlalchemy.orm import Session
from sqlalchemy.orm.util import identity_key

from touchpoint.dsl.timing import earliest_free_slot

from . import rollups
from .columns import jsonable
from .common import (
    LEDGER_STATUSES,
    SUPPRESSION_REASONS,
    LedgerStatus,
    SuppressionReason,
    _add_once,
    _aware,
    insert_ignore,
    normalize_email,
)
from .models import (
    CapLock,
    FieldUpdate,
    Ledger,
    Message,
    Note,
    SendSlot,
    Suppression,
    Task,
    utcnow,
)

# --- ledger --------------------------------------------------------------------------------


def ledger_get(s: Session, key: str) -> Ledger | None:
    """The ledger entry for a side-effect key, or None."""
    return s.get(Ledger, key)


def ledger_reserve(s: Session, key: str, kind: str) -> Ledger:
    """Reserve a side-effect key; returns the entry, new (``reserved``) or as it already was.

    The caller performs the side effect only when the returned status is ``reserved`` (and
    decides what a ``reserved`` entry left by a crashed attempt means for its kind).
    """
    found = ledger_claim(s, key, kind)
    if found is not None:
        return found
    entry = s.get(Ledger, key)
    assert entry is not None  # inserted by this transaction
    return entry


def ledger_claim(s: Session, key: str, kind: str) -> Ledger | None:
    """Reserve a side-effect key: None when this call reserved it (one INSERT, no read), else
    the entry as it already was (the caller decides what its status means for its kind)."""
    now = utcnow()
    if insert_ignore(s, Ledger, {"key": key, "kind": kind, "status": "reserved", "created_at": now, "updated_at": now}):
        return None
    return s.get(Ledger, key)


def ledger_finish(s: Session, key: str, status: LedgerStatus, result: Any = None) -> None:
    """Record the outcome of a reserved side effect."""
    if status not in LEDGER_STATUSES:
        raise ValueError(f"ledger status must be one of {', '.join(LEDGER_STATUSES)}, got {status!r}")
    done = cast(CursorResult[Any], s.execute(_FINISH, {"key_": key, "status": status, "result": jsonable(result), "updated_at": utcnow()}))
    if done.rowcount == 0:
        raise LookupError(f"no ledger entry {key!r}: call ledger_reserve(s, key, kind) first")
    held = s.identity_map.get(identity_key(Ledger, key))
    if held is not None:
        s.expire(held)  # an entry this session read before reads the outcome


_LEDGER = cast(Table, Ledger.__table__)
_FINISH = (
    update(_LEDGER)
    .where(_LEDGER.c.key == bindparam("key_"))
    .values(status=bindparam("status"), result=bindparam("result"), updated_at=bindparam("updated_at"))
    .execution_options(preserve_rowcount=True)
)


# --- messages, tasks, notes, field updates -------------------------------------------------


def add_message(s: Session, *, run: rollups.RunOfLine | None = None, **fields: Any) -> bool:
    """Record an email (sent, failed, skipped, suppressed or uncertain), once per ``ledger_key``.

    A new message counts in the analytics rollups of its step; ``run`` (its playbook, version and
    start) saves reading the run's row for that.

    Returns:
        False when a message with that ledger key was stored before (a retried send): nothing changes.
    """
    if isinstance(fields.get("to_email"), str):
        fields["to_email"] = normalize_email(fields["to_email"])
    added = _add_once(s, Message, fields)
    if added:
        rollups.count_message(s, fields.get("run_id"), fields.get("step"), str(fields.get("status")), run=run)
    return added


def get_message(s: Session, id: str) -> Message | None:
    """A message by our id, or None."""
    return s.get(Message, id)


def list_messages(
    s: Session, *, run_id: str | None = None, to_email: str | None = None, limit: int = 100
) -> list[Message]:
    """The latest messages first, filtered by run and recipient."""
    query = select(Message).order_by(Message.sent_at.desc(), Message.id).limit(limit)
    if run_id is not None:
        query = query.where(Message.run_id == run_id)
    if to_email is not None:
        query = query.where(Message.to_email == normalize_email(to_email))
    return list(s.scalars(query))


def add_task(s: Session, **fields: Any) -> bool:
    """Record a task; False (nothing changes) when its ``ledger_key`` was recorded before."""
    return _add_once(s, Task, fields)


def get_task(s: Session, id: str) -> Task | None:
    """A task by id, or None."""
    return s.get(Task, id)


def list_tasks(s: Session, *, status: str | None = None, account_id: str | None = None) -> list[Task]:
    """Tasks in creation order, filtered by status and account."""
    query = select(Task).order_by(Task.created_at, Task.id)
    if status is not None:
        query = query.where(Task.status == status)
    if account_id is not None:
        query = query.where(Task.account_id == account_id)
    return list(s.scalars(query))


def complete_task(s: Session, id: str, at: dt.datetime) -> Task | None:
    """Mark a task completed at ``at``; a task completed before keeps its first time.

    Returns:
        The task, or None if there is no task with that id.
    """
    task = s.get(Task, id)
    if task is None:
        return None
    if task.status != "completed":
        task.status = "completed"
        task.completed_at = at
        s.flush()
    return task


def add_note(s: Session, **fields: Any) -> bool:
    """Record a note; False (nothing changes) when its ``ledger_key`` was recorded before."""
    return _add_once(s, Note, fields)


def list_notes(s: Session, *, account_id: str | None = None, run_id: str | None = None) -> list[Note]:
    """Notes in creation order, filtered by account and run."""
    query = select(Note).order_by(Note.created_at, Note.id)
    if account_id is not None:
        query = query.where(Note.account_id == account_id)
    if run_id is not None:
        query = query.where(Note.run_id == run_id)
    return list(s.scalars(query))


def add_field_update(s: Session, **fields: Any) -> bool:
    """Record an ``update`` step's fields; False (nothing changes) when its ``ledger_key`` was recorded before."""
    if "fields" in fields:
        fields["fields"] = jsonable(fields["fields"])
    return _add_once(s, FieldUpdate, fields)


def list_field_updates(s: Session, *, account_id: str | None = None, run_id: str | None = None) -> list[FieldUpdate]:
    """Field updates in creation order, filtered by account and run."""
    query = select(FieldUpdate).order_by(FieldUpdate.created_at, FieldUpdate.id)
    if account_id is not None:
        query = query.where(FieldUpdate.account_id == account_id)
    if run_id is not None:
        query = query.where(FieldUpdate.run_id == run_id)
    return list(s.scalars(query))


# --- suppressions --------------------------------------------------------------------------


def suppress(s: Session, email: str, reason: SuppressionReason, source: str | None = None) -> bool:
    """Add an address to the suppression list; False if it was already there (kept as is)."""
    if reason not in SUPPRESSION_REASONS:
        raise ValueError(f"suppression reason must be one of {', '.join(SUPPRESSION_REASONS)}, got {reason!r}")
    return insert_ignore(s, Suppression, {"email": normalize_email(email), "reason": reason, "source": source})


def unsuppress(s: Session, email: str) -> bool:
    """Remove an address from the suppression list; False if it was not there."""
    result = cast(
        CursorResult[Any],
        s.execute(delete(Suppression).where(Suppression.email == normalize_email(email))),
    )
    return result.rowcount > 0


def is_suppressed(s: Session, email: str) -> str | None:
    """The reason the address is suppressed, or None if it may be emailed."""
    return s.scalar(_SUPPRESSED, {"email": normalize_email(email)})


_SUPPRESSED = select(Suppression.reason).where(Suppression.email == bindparam("email"))


def list_suppressions(s: Session) -> list[Suppression]:
    """Every suppressed address, in address order."""
    return list(s.scalars(select(Suppression).order_by(Suppression.email)))


# --- frequency caps ------------------------------------------------------------------------


def _lock_contact(s: Session, email: str) -> None:
    insert_ignore(s, CapLock, {"contact_email": email})
    if s.get_bind().dialect.name == "postgresql":
        # ON CONFLICT DO NOTHING takes no row lock; this does, until the transaction ends.
        s.execute(select(CapLock.contact_email).where(CapLock.contact_email == email).with_for_update())


def reserve_send_slot(
    s: Session,
    contact_email: str,
    ledger_key: str,
    desired_at: dt.datetime,
    cap: int,
    period: dt.timedelta,
) -> dt.datetime:
    """Reserve a send time for a contact under a frequency cap of ``cap`` sends per ``period``.

    Must run inside ``write_tx``: the contact's lock row serialises concurrent reservations
    (``SELECT ... FOR UPDATE`` on PostgreSQL; ``BEGIN IMMEDIATE`` on SQLite). Retrying with the
    same ``ledger_key`` returns the slot reserved the first time.

    Args:
        s: A session inside ``write_tx``.
        contact_email: The recipient (compared lower-cased).
        ledger_key: The send's side-effect key.
        desired_at: When the send would like to go out (timezone-aware).
        cap: Sends allowed per rolling period (at least 1).
        period: The rolling period.

    Returns:
        The reserved time (UTC): ``desired_at`` if the cap allows it, else the earliest later
        time that keeps every rolling window within the cap.
    """
    desired = _aware(desired_at, "desired_at")
    email = normalize_email(contact_email)
    _lock_contact(s, email)
    existing = s.scalar(select(SendSlot.slot_at).where(SendSlot.ledger_key == ledger_key))
    if existing is not None:
        return existing
    slots = s.scalars(
        select(SendSlot.slot_at).where(SendSlot.contact_email == email, SendSlot.slot_at > desired - period)
    ).all()
    slot_at = earliest_free_slot(slots, desired, cap, period)
    s.add(SendSlot(contact_email=email, slot_at=slot_at, ledger_key=ledger_key))
    s.flush()
    return slot_at


def release_send_slot(s: Session, ledger_key: str) -> bool:
    """Give back a slot whose send did not happen (e.g. suppressed); False if there was none."""
    result = cast(CursorResult[Any], s.execute(delete(SendSlot).where(SendSlot.ledger_key == ledger_key)))
    return result.rowcount > 0
