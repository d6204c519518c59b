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
from typing import Any

from temporalio.common import SearchAttributeKey, SearchAttributeUpdate

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
    """
    listed = sorted(runs, key=lambda r: (r[0], r[1] or ""))
    return {
        ACCOUNT.name: account_id,
        SEGMENT.name: segment,
        CSM.name: csm,
        PLAYBOOKS.name: sorted({playbook for playbook, _, _ in listed}),
        STEPS.name: [f"{playbook}:{step}" for playbook, step, _ in listed if step],
        PAUSED.name: any(status == "paused" for _, _, status in listed),
    }


def updates(before: Mapping[str, Any], after: Mapping[str, Any]) -> list[SearchAttributeUpdate[Any]]:
    """The upserts that turn ``before`` into ``after`` (a value of None unsets the attribute)."""
    found: list[SearchAttributeUpdate[Any]] = []
    for key in KEYS:
        value = after.get(key.name)
        if before.get(key.name) == value and key.name in before:
            continue
        found.append(key.value_unset() if value is None else key.value_set(value))
    return found
