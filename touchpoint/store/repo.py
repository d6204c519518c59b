"""Queries and idempotent writes over the store's tables, by area.

Every function takes a ``Session`` and leaves the transaction to the caller
(``with factory.begin() as s`` or ``with write_tx(factory) as s``). Writes that an activity may
repeat on retry are idempotent: they are keyed (event id, ledger key, provider event id...) and
a repeat returns what the first call stored instead of raising.

The functions live in one module per area (`accounts`, `deployments`, `runs`, `delivery`,
`bookkeeping`; `health`, `triggers` and `reviews` hold the batch queries); this module is the
one name callers use for the per-row ones (`repo.get_run`, `repo.add_task`, ...).
"""

from __future__ import annotations

from .accounts import (
    account_history,
    contacts_by_account,
    derived_events,
    get_account,
    get_accounts,
    list_accounts,
    list_events,
    record_event,
    upsert_account,
)
from .bookkeeping import (
    add_health_score,
    delete_cursor,
    get_cursor,
    health_history,
    latest_health,
    mark_date_trigger_fired,
    record_provider_event,
    set_cursor,
)
from .common import (
    CONTACT_FIELDS,
    LEDGER_STATUSES,
    SUPPRESSION_REASONS,
    LedgerStatus,
    SuppressionReason,
    insert_ignore,
    normalize_email,
)
from .delivery import (
    add_field_update,
    add_message,
    add_note,
    add_task,
    complete_task,
    get_message,
    get_task,
    is_suppressed,
    ledger_finish,
    ledger_get,
    ledger_reserve,
    list_field_updates,
    list_messages,
    list_notes,
    list_suppressions,
    list_tasks,
    release_send_slot,
    reserve_send_slot,
    suppress,
    unsuppress,
)
from .deployments import (
    current_deployments,
    deploy,
    get_deployment,
    undeploy,
)
from .runs import (
    add_run_step,
    count_runs_on_older_versions,
    get_run,
    list_runs,
    project_run,
    run_steps,
    upsert_run,
)

__all__ = [
    "account_history",
    "CONTACT_FIELDS",
    "LEDGER_STATUSES",
    "LedgerStatus",
    "SUPPRESSION_REASONS",
    "SuppressionReason",
    "add_field_update",
    "add_health_score",
    "add_message",
    "add_note",
    "add_run_step",
    "add_task",
    "complete_task",
    "contacts_by_account",
    "count_runs_on_older_versions",
    "current_deployments",
    "delete_cursor",
    "deploy",
    "derived_events",
    "get_account",
    "get_accounts",
    "get_cursor",
    "get_deployment",
    "get_message",
    "get_run",
    "get_task",
    "health_history",
    "insert_ignore",
    "is_suppressed",
    "latest_health",
    "ledger_finish",
    "ledger_get",
    "ledger_reserve",
    "list_accounts",
    "list_events",
    "list_field_updates",
    "list_messages",
    "list_notes",
    "list_runs",
    "list_suppressions",
    "list_tasks",
    "mark_date_trigger_fired",
    "normalize_email",
    "project_run",
    "record_event",
    "record_provider_event",
    "release_send_slot",
    "reserve_send_slot",
    "run_steps",
    "set_cursor",
    "suppress",
    "undeploy",
    "unsuppress",
    "upsert_account",
    "upsert_run",
]
