"""Queries and idempotent writes over the store's tables.

Every function takes a ``Session`` and leaves the transaction to the caller
(``with factory.begin() as s`` or ``with write_tx(factory) as s``). Writes that an activity may
repeat on retry are idempotent: they are keyed (event id, ledger key, provider event id...) and
a repeat returns what the first call stored instead of raising.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping, Sequence
from typing import Any, Literal, TypeVar, cast

from sqlalchemy import Table, delete, func, select, text, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import CursorResult
from sqlalchemy.orm import Session

from touchpoint.dsl.timing import earliest_free_slot

from .columns import UTC, jsonable
from .models import (
    Account,
    Base,
    CapLock,
    Contact,
    Cursor,
    DateTriggerFired,
    Deployment,
    Event,
    FieldUpdate,
    HealthScore,
    Ledger,
    Message,
    Note,
    ProviderEvent,
    Run,
    RunStep,
    SendSlot,
    Suppression,
    Task,
    utcnow,
)

LedgerStatus = Literal["reserved", "done", "failed", "skipped"]
SuppressionReason = Literal["unsubscribed", "bounced", "spamreport", "manual"]

CONTACT_FIELDS = ("email", "name", "role", "locale", "timezone", "country")
LEDGER_STATUSES = ("reserved", "done", "failed", "skipped")
SUPPRESSION_REASONS = ("unsubscribed", "bounced", "spamreport", "manual")

_M = TypeVar("_M", bound=Base)


# --- helpers -------------------------------------------------------------------------------


def insert_ignore(s: Session, table: type[Base] | Table, values: Mapping[str, Any]) -> bool:
    """Insert a row unless it would violate a unique key (``INSERT ... ON CONFLICT DO NOTHING``).

    Column defaults (ids, timestamps) apply as for a normal insert.

    Args:
        s: The session whose transaction the insert joins.
        table: A model class or a ``Table``.
        values: Column name to value.

    Returns:
        True if the row was inserted, False if a conflicting row already existed.
    """
    tbl = table if isinstance(table, Table) else cast(Table, table.__table__)
    dialect = s.get_bind().dialect.name
    stmt: postgresql.Insert | sqlite.Insert
    if dialect == "postgresql":
        stmt = postgresql.insert(tbl).values(dict(values)).on_conflict_do_nothing()
    elif dialect == "sqlite":
        stmt = sqlite.insert(tbl).values(dict(values)).on_conflict_do_nothing()
    else:
        raise ValueError(f"insert_ignore supports sqlite and postgresql, not {dialect!r}")
    # Without preserve_rowcount, drivers may report -1 for an INSERT.
    result = cast(CursorResult[Any], s.execute(stmt, execution_options={"preserve_rowcount": True}))
    return result.rowcount == 1


def normalize_email(email: str) -> str:
    """The form in which the store keeps and compares email addresses."""
    return email.strip().lower()


def _aware(value: dt.datetime, what: str) -> dt.datetime:
    if value.tzinfo is None or value.utcoffset() is None:
        raise ValueError(
            f"{what} must be timezone-aware, got naive {value.isoformat()}: "
            "use e.g. datetime.now(UTC) or value.replace(tzinfo=UTC)"
        )
    return value.astimezone(UTC)


def _check_fields(model: type[Base], fields: Mapping[str, Any]) -> None:
    known = set(model.__table__.columns.keys())
    unknown = sorted(set(fields) - known)
    if unknown:
        raise ValueError(
            f"unknown {model.__name__} field(s) {', '.join(unknown)}; known fields: {', '.join(sorted(known))}"
        )


def _add_once(s: Session, model: type[_M], fields: Mapping[str, Any]) -> _M:
    # A retried activity passes the same ledger key: hand back the row it stored the first time.
    _check_fields(model, fields)
    key = fields.get("ledger_key")
    if key is not None:
        column = model.__table__.columns["ledger_key"]
        existing = s.scalars(select(model).where(column == key)).first()
        if existing is not None:
            return existing
    row = model(**fields)
    s.add(row)
    s.flush()
    return row


# --- accounts ------------------------------------------------------------------------------


def _as_date(value: Any, what: str) -> dt.date | None:
    if value is None or value == "":
        return None
    if isinstance(value, dt.datetime):
        return value.date()
    if isinstance(value, dt.date):
        return value
    if isinstance(value, str):
        try:
            return dt.date.fromisoformat(value[:10])
        except ValueError:
            pass
    raise ValueError(f"{what} must be a date such as 2025-06-30, got {value!r}")


def _account_columns(doc: Mapping[str, Any]) -> dict[str, Any]:
    csm = doc.get("csm") or {}
    csm_email = csm.get("email") if isinstance(csm, Mapping) else None
    return {
        "name": doc.get("name"),
        "segment": doc.get("segment"),
        "timezone": doc.get("timezone"),
        "csm_email": normalize_email(csm_email) if isinstance(csm_email, str) else None,
        "renewal_date": _as_date(doc.get("renewal_date"), "account.renewal_date"),
    }


def _normalize_contacts(contacts: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
    by_email: dict[str, dict[str, Any]] = {}
    for i, contact in enumerate(contacts):
        unknown = sorted(set(contact) - set(CONTACT_FIELDS))
        if unknown:
            raise ValueError(
                f"contacts[{i}]: unknown field(s) {', '.join(unknown)}; a contact has {', '.join(CONTACT_FIELDS)}"
            )
        email = contact.get("email")
        if not isinstance(email, str) or not email.strip():
            raise ValueError(f"contacts[{i}]: 'email' is required, got {email!r}")
        row = {field: contact.get(field) for field in CONTACT_FIELDS}
        row["email"] = normalized = normalize_email(email)
        # The same address twice would break unique(account_id, email): the last one wins.
        by_email[normalized] = row
    return list(by_email.values())


def _contact_dict(c: Contact) -> dict[str, Any]:
    return {field: getattr(c, field) for field in CONTACT_FIELDS}


def contacts_by_account(s: Session, account_ids: Sequence[str]) -> dict[str, list[dict[str, Any]]]:
    """The contacts of each account, in insertion order (an empty list for none)."""
    result: dict[str, list[dict[str, Any]]] = {account_id: [] for account_id in account_ids}
    if not account_ids:
        return result
    rows = s.scalars(select(Contact).where(Contact.account_id.in_(account_ids)).order_by(Contact.id))
    for c in rows:
        result[c.account_id].append(_contact_dict(c))
    return result


def upsert_account(
    s: Session, doc: Mapping[str, Any], contacts: Sequence[Mapping[str, Any]]
) -> tuple[bool, dict[str, Any] | None]:
    """Insert or update an account and replace its contacts.

    Idempotent: the same document twice changes nothing (not even ``updated_at``).

    Args:
        s: The session.
        doc: The account document (``id`` required); a ``contacts`` key in it is ignored.
        contacts: The account's contacts (``email`` required; emails are lower-cased, and a
            repeated address keeps its last entry).

    Returns:
        ``(created, previous_doc)``: ``(True, None)`` for a new account, else ``(False, the
        document stored before)``.
    """
    account_id = doc.get("id")
    if not isinstance(account_id, str) or not account_id:
        raise ValueError(f"an account document needs a non-empty string 'id', got {account_id!r}")
    new_doc: dict[str, Any] = jsonable({k: v for k, v in doc.items() if k != "contacts"})
    columns = _account_columns(doc)
    new_contacts = _normalize_contacts(contacts)
    now = utcnow()
    created = insert_ignore(
        s,
        Account,
        {"id": account_id, **columns, "doc": new_doc, "created_at": now, "updated_at": now},
    )
    if created:
        s.add_all(Contact(account_id=account_id, **c) for c in new_contacts)
        s.flush()
        return True, None
    account = s.execute(
        select(Account).where(Account.id == account_id).with_for_update().execution_options(populate_existing=True)
    ).scalar_one()
    previous = account.doc
    changed = False
    if previous != new_doc:
        for name, value in columns.items():
            setattr(account, name, value)
        account.doc = new_doc
        changed = True
    if contacts_by_account(s, [account_id])[account_id] != new_contacts:
        s.execute(delete(Contact).where(Contact.account_id == account_id))
        s.add_all(Contact(account_id=account_id, **c) for c in new_contacts)
        changed = True
    if changed:
        account.updated_at = now
    s.flush()
    return False, previous


def get_account(s: Session, account_id: str) -> tuple[dict[str, Any], list[dict[str, Any]]] | None:
    """The account's document and contacts, or None if unknown."""
    account = s.get(Account, account_id)
    if account is None:
        return None
    return account.doc, contacts_by_account(s, [account_id])[account_id]


def get_accounts(s: Session, account_ids: Sequence[str]) -> dict[str, tuple[dict[str, Any], list[dict[str, Any]]]]:
    """The documents and contacts of these accounts in two queries (unknown ids left out)."""
    if not account_ids:
        return {}
    accounts = list(s.scalars(select(Account).where(Account.id.in_(list(account_ids)))))
    contacts = contacts_by_account(s, [a.id for a in accounts])
    return {a.id: (a.doc, contacts[a.id]) for a in accounts}


def list_accounts(
    s: Session, *, after: str | None = None, limit: int = 500, csm_email: str | None = None
) -> list[tuple[dict[str, Any], list[dict[str, Any]]]]:
    """One page of accounts ordered by id, with their contacts.

    Iterate with keyset paging, which stays fast however many accounts there are::

        page = list_accounts(s)
        while page:
            ...
            page = list_accounts(s, after=page[-1][0]["id"])

    Args:
        s: The session.
        after: Return accounts whose id sorts after this one (None: from the start).
        limit: Page size.
        csm_email: Only this CSM's book (case-insensitive).
    """
    query = select(Account).order_by(Account.id).limit(limit)
    if after is not None:
        query = query.where(Account.id > after)
    if csm_email is not None:
        query = query.where(func.lower(Account.csm_email) == csm_email.lower())
    accounts = list(s.scalars(query))
    contacts = contacts_by_account(s, [a.id for a in accounts])
    return [(a.doc, contacts[a.id]) for a in accounts]


# --- events --------------------------------------------------------------------------------


def record_event(
    s: Session, id: str, account_id: str, type: str, at: dt.datetime, data: Mapping[str, Any], *, applied_by: str | None = None
) -> bool:
    """Store an accepted event; False (and nothing changes) if its id was seen before."""
    return insert_ignore(
        s,
        Event,
        {
            "id": id,
            "account_id": account_id,
            "type": type,
            "at": _aware(at, "event.at"),
            "data": jsonable(dict(data)),
            "applied_by": applied_by,
        },
    )


#: The order in which an account upsert derives its events.
_DERIVED_ORDER = {"account.created": 0, "account.updated": 1, "seats.changed": 2}


def derived_events(s: Session, event_id: str) -> list[Event]:
    """The events recorded as derived from ``event_id`` (ids ``<event_id>:<type>``), in order."""
    rows = list(s.scalars(select(Event).where(Event.id.startswith(f"{event_id}:", autoescape=True))))
    return sorted(rows, key=lambda e: (_DERIVED_ORDER.get(e.type, 9), e.id))


def list_events(
    s: Session,
    *,
    account_id: str | None = None,
    type: str | None = None,
    since: dt.datetime | None = None,
    until: dt.datetime | None = None,
    limit: int | None = None,
) -> list[Event]:
    """Events in time order, filtered; ``since`` is exclusive and ``until`` inclusive."""
    query = select(Event).order_by(Event.at, Event.id)
    if account_id is not None:
        query = query.where(Event.account_id == account_id)
    if type is not None:
        query = query.where(Event.type == type)
    if since is not None:
        query = query.where(Event.at > since)
    if until is not None:
        query = query.where(Event.at <= until)
    if limit is not None:
        query = query.limit(limit)
    return list(s.scalars(query))


# --- deployments ---------------------------------------------------------------------------


def deploy(s: Session, kind: str, name: str, version: str, content: Mapping[str, Any], source: str) -> bool:
    """Make ``version`` the current deployment of (kind, name).

    Deploying an older version again makes it current again (a rollback).

    Args:
        s: The session; use ``write_tx`` so that two deploys do not interleave (on
            PostgreSQL an advisory lock on (kind, name) serialises them anyway).
        kind: ``playbook``, ``workspace`` or ``health``.
        name: The playbook id (or ``workspace`` / ``health``).
        version: The content hash.
        content: The validated model, dumped to JSON.
        source: The YAML text.

    Returns:
        False if that version already was the current one, else True.
    """
    if s.get_bind().dialect.name == "postgresql":
        # Two deploys of the same name must not both leave a current version; there may be
        # no row to lock yet, hence an advisory lock (released at the end of the transaction).
        s.execute(
            text("SELECT pg_advisory_xact_lock(hashtext(:key))"),
            {"key": f"touchpoint.deploy:{kind}/{name}"},
        )
    existing = s.get(Deployment, (kind, name, version))
    if existing is not None and existing.current:
        return False
    s.execute(
        update(Deployment)
        .where(Deployment.kind == kind, Deployment.name == name, Deployment.current.is_(True))
        .values(current=False)
        .execution_options(synchronize_session="fetch")
    )
    if existing is None:
        s.add(
            Deployment(
                kind=kind,
                name=name,
                version=version,
                content=jsonable(dict(content)),
                source=source,
                current=True,
            )
        )
    else:
        existing.current = True
        existing.deployed_at = utcnow()
    s.flush()
    return True


def current_deployments(s: Session, kind: str | None = None) -> list[Deployment]:
    """The current deployments, of one kind or all, ordered by kind and name."""
    query = select(Deployment).where(Deployment.current.is_(True)).order_by(Deployment.kind, Deployment.name)
    if kind is not None:
        query = query.where(Deployment.kind == kind)
    return list(s.scalars(query))


def get_deployment(s: Session, kind: str, name: str, version: str | None = None) -> Deployment | None:
    """A given version of (kind, name), or its current one when ``version`` is None."""
    if version is not None:
        return s.get(Deployment, (kind, name, version))
    return s.scalars(
        select(Deployment).where(Deployment.kind == kind, Deployment.name == name, Deployment.current.is_(True))
    ).first()


def undeploy(s: Session, kind: str, name: str) -> bool:
    """Leave (kind, name) without a current version; False if it had none."""
    result = cast(
        CursorResult[Any],
        s.execute(
            update(Deployment)
            .where(Deployment.kind == kind, Deployment.name == name, Deployment.current.is_(True))
            .values(current=False)
            .execution_options(synchronize_session="fetch")
        ),
    )
    return result.rowcount > 0


# --- runs ----------------------------------------------------------------------------------

_NEW_RUN_FIELDS = ("workflow_id", "playbook_id", "version", "started_at")


def upsert_run(s: Session, **fields: Any) -> Run:
    """Insert or update the projection of a run (by ``id``); other fields are set as given.

    Args:
        s: The session.
        **fields: ``id`` and any ``Run`` columns; a new run also needs ``workflow_id``,
            ``playbook_id``, ``version`` and ``started_at``. ``updated_at`` defaults to now.

    Returns:
        The stored run.
    """
    _check_fields(Run, fields)
    run_id = fields.get("id")
    if not isinstance(run_id, str) or not run_id:
        raise ValueError(f"upsert_run needs the run's 'id', got {run_id!r}")
    fields.setdefault("updated_at", utcnow())
    for name in ("vars", "scorecard"):
        if name in fields:
            fields[name] = jsonable(fields[name])
    run = s.get(Run, run_id)
    if run is None:
        missing = [f for f in _NEW_RUN_FIELDS if fields.get(f) is None]
        if missing:
            raise ValueError(f"run {run_id!r} is not in the store yet, so upsert_run needs {', '.join(missing)} too")
        run = Run(**fields)
        s.add(run)
    else:
        for name, value in fields.items():
            setattr(run, name, value)
    s.flush()
    return run


def add_run_step(
    s: Session,
    run_id: str,
    at: dt.datetime,
    day: int,
    step: str,
    action: str,
    detail: Mapping[str, Any],
    *,
    seq: int | None = None,
) -> bool:
    """Append a line to the run's timeline; with ``seq``, once (False if it is there already)."""
    values = {"run_id": run_id, "at": at, "day": day, "step": step, "action": action, "detail": jsonable(dict(detail)), "seq": seq}
    if seq is None:
        s.add(RunStep(**values))
        s.flush()
        return True
    return insert_ignore(s, RunStep, values)


def project_run(s: Session, *, id: str, position: int, **fields: Any) -> bool:
    """Write where a run stands unless the row holds a newer projection (a higher ``position``).

    Args:
        s: The session.
        id: The run id.
        position: The projection's counter (`RunState.position`).
        **fields: ``Run`` columns; a run not in the store yet needs ``workflow_id``,
            ``playbook_id``, ``version`` and ``started_at``.

    Returns:
        False when a newer projection was there already (nothing written).
    """
    run = s.get(Run, id)
    if run is not None and run.position > position:
        return False
    upsert_run(s, id=id, position=position, **fields)
    return True


def get_run(s: Session, run_id: str) -> Run | None:
    """The run's projection, or None."""
    return s.get(Run, run_id)


def list_runs(
    s: Session,
    *,
    account_id: str | None = None,
    playbook_id: str | None = None,
    status: str | None = None,
) -> list[Run]:
    """Runs ordered by start time, filtered by account, playbook and status."""
    query = select(Run).order_by(Run.started_at, Run.id)
    if account_id is not None:
        query = query.where(Run.account_id == account_id)
    if playbook_id is not None:
        query = query.where(Run.playbook_id == playbook_id)
    if status is not None:
        query = query.where(Run.status == status)
    return list(s.scalars(query))


def run_steps(s: Session, run_id: str) -> list[RunStep]:
    """The run's timeline in order."""
    return list(s.scalars(select(RunStep).where(RunStep.run_id == run_id).order_by(RunStep.at, RunStep.seq, RunStep.id)))


def count_runs_on_older_versions(s: Session, playbook_id: str, current_version: str) -> int:
    """How many runs of the playbook are in flight (not ended) on another version."""
    count = s.scalar(
        select(func.count())
        .select_from(Run)
        .where(
            Run.playbook_id == playbook_id,
            Run.version != current_version,
            Run.status != "ended",
        )
    )
    return int(count or 0)


# --- ledger --------------------------------------------------------------------------------


def ledger_get(s: Session, key: str) -> Ledger | None:
    """The ledger entry for a side-effect key, or None."""
    return s.get(Ledger, key)


def ledger_reserve(s: Session, key: str, kind: str) -> Ledger:
    """Reserve a side-effect key; returns the entry, new (``reserved``) or as it already was.

    The caller performs the side effect only when the returned status is ``reserved`` (and
    decides what a ``reserved`` entry left by a crashed attempt means for its kind).
    """
    now = utcnow()
    insert_ignore(
        s,
        Ledger,
        {"key": key, "kind": kind, "status": "reserved", "created_at": now, "updated_at": now},
    )
    return s.execute(select(Ledger).where(Ledger.key == key).execution_options(populate_existing=True)).scalar_one()


def ledger_finish(s: Session, key: str, status: LedgerStatus, result: Any = None) -> Ledger:
    """Record the outcome of a reserved side effect."""
    if status not in LEDGER_STATUSES:
        raise ValueError(f"ledger status must be one of {', '.join(LEDGER_STATUSES)}, got {status!r}")
    entry = s.get(Ledger, key)
    if entry is None:
        raise LookupError(f"no ledger entry {key!r}: call ledger_reserve(s, key, kind) first")
    entry.status = status
    entry.result = jsonable(result)
    entry.updated_at = utcnow()
    s.flush()
    return entry


# --- messages, tasks, notes, field updates -------------------------------------------------


def add_message(s: Session, **fields: Any) -> Message:
    """Record an email (sent, failed, skipped, suppressed or uncertain).

    With a ``ledger_key`` already recorded, returns the stored message instead (retry-safe).
    """
    if isinstance(fields.get("to_email"), str):
        fields["to_email"] = normalize_email(fields["to_email"])
    return _add_once(s, Message, fields)


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


def add_task(s: Session, **fields: Any) -> Task:
    """Record a task; with a ``ledger_key`` already recorded, returns the stored task."""
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


def add_note(s: Session, **fields: Any) -> Note:
    """Record a note; with a ``ledger_key`` already recorded, returns the stored note."""
    return _add_once(s, Note, fields)


def list_notes(s: Session, *, account_id: str | None = None, run_id: str | None = None) -> list[Note]:
    """Notes in creation order, filtered by account and run."""
    query = select(Note).order_by(Note.created_at, Note.id)
    if account_id is not None:
        query = query.where(Note.account_id == account_id)
    if run_id is not None:
        query = query.where(Note.run_id == run_id)
    return list(s.scalars(query))


def add_field_update(s: Session, **fields: Any) -> FieldUpdate:
    """Record an ``update`` step's fields; retry-safe with a ``ledger_key``."""
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
    return s.scalar(select(Suppression.reason).where(Suppression.email == normalize_email(email)))


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


# --- dedupe, health, date triggers ---------------------------------------------------------


def record_provider_event(s: Session, id: str) -> bool:
    """Remember a provider webhook event id; False if it was processed before."""
    return insert_ignore(s, ProviderEvent, {"id": id})


def add_health_score(
    s: Session,
    account_id: str,
    at: dt.datetime,
    score: int,
    tier: str,
    breakdown: Mapping[str, Any],
) -> HealthScore:
    """Record an account's health score."""
    row = HealthScore(account_id=account_id, at=at, score=score, tier=tier, breakdown=jsonable(dict(breakdown)))
    s.add(row)
    s.flush()
    return row


def health_history(s: Session, account_id: str, *, since: dt.datetime | None = None) -> list[HealthScore]:
    """The account's health scores, oldest first (``since`` exclusive)."""
    query = select(HealthScore).where(HealthScore.account_id == account_id).order_by(HealthScore.at, HealthScore.id)
    if since is not None:
        query = query.where(HealthScore.at > since)
    return list(s.scalars(query))


def latest_health(s: Session, account_id: str) -> HealthScore | None:
    """The account's most recent health score, or None."""
    return s.scalars(
        select(HealthScore)
        .where(HealthScore.account_id == account_id)
        .order_by(HealthScore.at.desc(), HealthScore.id.desc())
        .limit(1)
    ).first()


def mark_date_trigger_fired(s: Session, account_id: str, playbook_id: str, date_value: dt.date) -> bool:
    """Remember that a date trigger fired; False if it already had for that date value."""
    return insert_ignore(
        s,
        DateTriggerFired,
        {"account_id": account_id, "playbook_id": playbook_id, "date_value": date_value},
    )


# --- cursors -------------------------------------------------------------------------------


def get_cursor(s: Session, name: str) -> Cursor | None:
    """A cursor of scheduled work, or None before its first run."""
    return s.get(Cursor, name)


def set_cursor(s: Session, name: str, *, at: dt.datetime | None = None, value: Any = None) -> None:
    """Create or move a cursor (call inside the transaction that did the work it records)."""
    row = s.get(Cursor, name)
    if row is None:
        row = Cursor(name=name)
        s.add(row)
    row.at = _aware(at, "cursor.at") if at is not None else None
    row.value = jsonable(value) if value is not None else None
    row.updated_at = utcnow()
    s.flush()


def delete_cursor(s: Session, name: str) -> bool:
    """Forget a cursor (the work starts afresh); False if there was none."""
    row = s.get(Cursor, name)
    if row is None:
        return False
    s.delete(row)
    s.flush()
    return True
