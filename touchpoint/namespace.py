"""Whether a client's namespace has the account workflow's search attributes.

The API names them when it starts an account's workflow (`touchpoint.ingest`), and the workflow
sets them as its runs move; both only when the namespace has every one of them, since a start
or an upsert naming an unknown one fails. The answer is asked once a minute per client
(`touchpoint setup` may add them while processes run) and forgotten when a start that named
them failed.
"""

from __future__ import annotations

import time
import weakref

from temporalio.api.operatorservice.v1 import ListSearchAttributesRequest
from temporalio.client import Client
from temporalio.service import RPCError

from workflows import search

ASK_EVERY = 60.0
"""Seconds an answer is kept."""

_answers: weakref.WeakKeyDictionary[Client, tuple[float, bool]] = weakref.WeakKeyDictionary()


async def has_search_attributes(client: Client | None) -> bool:
    """Whether ``client``'s namespace has every search attribute of `workflows.search` (no
    client, or a server without the operator service, such as the time-skipping one: no)."""
    if client is None:
        return False
    now = time.monotonic()
    known = _answers.get(client)
    if known is not None and now - known[0] < ASK_EVERY:
        return known[1]
    try:
        listed = await client.operator_service.list_search_attributes(ListSearchAttributesRequest(namespace=client.namespace))
        found = all(key.name in listed.custom_attributes for key in search.KEYS)
    except RPCError:
        found = False
    _answers[client] = (now, found)
    return found


def forget(client: Client) -> None:
    """Drop the kept answer: the next question asks the server again."""
    _answers.pop(client, None)
