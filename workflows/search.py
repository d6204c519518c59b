"""The account workflow's search attributes: find every account at a step in Temporal's UI and CLI.

`temporal workflow list --query "TouchpointSteps = 'onboarding:kickoff' AND ExecutionStatus =
'Running'"` lists the accounts whose run of that playbook stands at that step. The workflow
keeps them current as runs start, move and end, when its namespace has them (`touchpoint dev`
registers them on its server, `touchpoint setup` on a cluster: `SEARCH_ATTRIBUTES` declares
them); on a namespace without them (the time-skipping test server) it sets none, since an
unknown search attribute fails the workflow task.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import TYPE_CHECKING, Any

from temporalio.common import SearchAttributeKey, SearchAttributePair, SearchAttributeUpdate, TypedSearchAttributes

if TYPE_CHECKING:
    from touchpoint.dsl.accounts import AccountDoc

ACCOUNT = SearchAttributeKey.for_keyword("TouchpointAccount")
SEGMENT = SearchAttributeKey.for_keyword("TouchpointSegment")
CSM = SearchAttributeKey.for_keyword("TouchpointCsm")
PLAYBOOKS = SearchAttributeKey.for_keyword_list("TouchpointPlaybooks")
STEPS = SearchAttributeKey.for_keyword_list("TouchpointSteps")
PAUSED = SearchAttributeKey.for_bool("TouchpointPaused")
KEYS: tuple[SearchAttributeKey[Any], ...] = (ACCOUNT, SEGMENT, CSM, PLAYBOOKS, STEPS, PAUSED)
SEARCH_ATTRIBUTES = ("TouchpointAccount=Keyword", "TouchpointSegment=Keyword", "TouchpointCsm=Keyword", "TouchpointPlaybooks=KeywordList", "TouchpointSteps=KeywordList", "TouchpointPaused=Bool")
"""``Name=Type`` pairs, as `temporal server start-dev --search-attribute` takes them."""


def values(account_id: str, segment: str | None, csm: str | None, runs: Iterable[tuple[str, str | None, str]]) -> dict[str, Any]:
    """The attributes of an account with ``runs`` in flight, each ``(playbook, step, status)``.

    Values are plain (JSON) so the workflow can carry what it last set across continue-as-new.
    An empty list is None (unset): the server keeps an empty keyword list as no value.
    """
    listed = sorted(runs, key=lambda r: (r[0], r[1] or ""))
    return {
        ACCOUNT.name: account_id,
        SEGMENT.name: segment,
        CSM.name: csm,
        PLAYBOOKS.name: sorted({playbook for playbook, _, _ in listed}) or None,
        STEPS.name: [f"{playbook}:{step}" for playbook, step, _ in listed if step] or None,
        PAUSED.name: any(status == "paused" for _, _, status in listed),
    }


def of_account(account_id: str, account: AccountDoc | None, runs: Iterable[tuple[str, str | None, str]] = ()) -> dict[str, Any]:
    """`values` for an account document (None: not known yet, no segment or CSM)."""
    csm = account.csm if account is not None else None
    return values(account_id, account.segment if account is not None else None, (csm.email or csm.name) if csm else None, runs)


def at_start(account_id: str, account: AccountDoc | None) -> TypedSearchAttributes:
    """The attributes to start an account's workflow with (no run yet), as the API knows the
    account: the workflow takes them as set (`seen`) and upserts only what differs."""
    found = of_account(account_id, account)
    return TypedSearchAttributes([SearchAttributePair(key, found[key.name]) for key in KEYS if found[key.name] is not None])


def seen(attributes: TypedSearchAttributes) -> dict[str, Any]:
    """What a workflow's search attributes hold, in `values`' form (an empty list is None)."""
    found: dict[str, Any] = {key.name: attributes.get(key) for key in KEYS}
    for key in (PLAYBOOKS, STEPS):
        found[key.name] = list(found[key.name] or ()) or None
    return found


def updates(before: Mapping[str, Any], after: Mapping[str, Any]) -> list[SearchAttributeUpdate[Any]]:
    """The upserts that turn ``before`` into ``after`` (a value of None unsets the attribute)."""
    found: list[SearchAttributeUpdate[Any]] = []
    for key in KEYS:
        value = after.get(key.name)
        if before.get(key.name) == value and key.name in before:
            continue
        found.append(key.value_unset() if value is None else key.value_set(value))
    return found
