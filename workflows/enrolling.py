"""Who an event enrolls: the account workflow's decisions on an upsert or an event, as pure functions.

The account workflow calls them for every event; the store step of a fresh workflow's first
upsert (`activities.store.AccountActivities.apply_first`) calls the same functions, so that a new
account's first event costs one store step instead of a context read and then a store step.
Nothing here reads a clock, a random source or the store: every input is an argument.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from datetime import datetime

from touchpoint.dsl import expressions as ex
from touchpoint.dsl.accounts import AccountDoc
from touchpoint.dsl.durations import parse_duration
from touchpoint.dsl.runtime import EventIn, build_context, segment_of
from touchpoint.dsl.workspace import Workspace
from touchpoint.engine.accounts import apply_event, changes
from workflows.messages import DeployedIndex, PlannedStart

log = logging.getLogger(__name__)

#: ``new_id(playbook, position)``: the id of a run a plan starts (position: of the derived event).
RunIds = Callable[[str, int], str]


def with_defaults(doc: AccountDoc, previous: AccountDoc | None, workspace: Workspace | None, now: datetime) -> AccountDoc:
    """An upserted document with the workspace's segment and time zone where it has none, and
    the current health when it sends none (health is computed here, not sent in)."""
    if doc.segment is None and workspace and workspace.segments:
        doc = doc.model_copy(update={"segment": segment_of(doc, workspace, now)})
    if doc.timezone is None and workspace:
        doc = doc.model_copy(update={"timezone": workspace.timezone})
    if previous is not None and doc.health.score is None and doc.health.tier is None:
        doc = doc.model_copy(update={"health": previous.health})
    return doc


def derive_upsert(previous: AccountDoc | None, doc: AccountDoc, event: EventIn, account_id: str, fallback_id: str) -> list[EventIn]:
    """The events an upsert amounts to (`account.created`, else `account.updated`, `seats.changed`),
    each with its own id: ``<event id>:<type>`` (a replayed upsert derives the same ones)."""
    derived = changes(previous, doc, event.at, event.id)
    for item in derived:
        item.id = f"{event.id or fallback_id}:{item.type}"
        item.account_id = account_id
    return derived


def account_after(account: AccountDoc | None, event: EventIn) -> AccountDoc | None:
    """The account document after an event that is not an upsert (`seats.changed` and the like)."""
    if account is None:
        return None
    return apply_event(account, event) or account


def triggered(
    index: DeployedIndex | None,
    account: AccountDoc | None,
    event: EventIn,
    now: datetime,
    last_started: Mapping[str, datetime],
    warn: Callable[[str], None] = log.warning,
) -> list[str]:
    """The playbooks whose event trigger fires for ``event`` (`when` and `reenroll` checked)."""
    if index is None or account is None:
        return []
    found: list[str] = []
    for entry in index.triggers:
        if not entry.fires_on(event.type):
            continue
        if event.type in ("run.started", "run.ended") and event.data.get("playbook") == entry.playbook:
            continue  # a playbook's own start or end never enrolls it again (no endless chain)
        context = build_context(account=account, event=event, run=None, now=now, tz=account.timezone or "UTC")
        try:
            if not ex.is_true(entry.when, context):
                continue
        except ex.ExpressionError as exc:
            warn(f"trigger of {entry.playbook} failed: {exc}")
            continue
        last = last_started.get(entry.playbook)
        if last is not None:
            if entry.reenroll == "never":
                continue
            if entry.reenroll.startswith("after") and now - last < parse_duration(entry.reenroll[5:].strip()):
                continue
        found.append(entry.playbook)
    return found


def plan(
    index: DeployedIndex | None,
    account: AccountDoc | None,
    derived: list[EventIn],
    *,
    now: datetime,
    taken: set[str],
    last_started: Mapping[str, datetime],
    workflow_id: str,
    new_id: RunIds,
    warn: Callable[[str], None] = log.warning,
) -> list[list[PlannedStart]]:
    """For each derived event, the runs it starts: once per playbook, none of ``taken`` (in flight)."""
    taken = set(taken)
    planned: list[list[PlannedStart]] = []
    for position, item in enumerate(derived):
        starts = [
            PlannedStart(playbook=playbook, run_id=new_id(playbook, position), workflow_id=workflow_id, started_at=now, event=item)
            for playbook in triggered(index, account, item, now, last_started, warn)
            if playbook not in taken
        ]
        taken.update(start.playbook for start in starts)
        planned.append(starts)
    return planned
