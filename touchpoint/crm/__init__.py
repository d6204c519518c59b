"""CRM connectors: tasks, notes and account fields out; accounts and completed tasks in.

``make_crm_backend`` builds the remote providers (HubSpot, Salesforce) only; the ``local``
backend, which keeps tasks and notes in Touchpoint's own store, is built on the store
elsewhere and implements the same ``CrmBackend`` protocol. This package imports neither the
store nor Temporal.
"""

from __future__ import annotations

from typing import Literal

from touchpoint.crm.base import (
    AccountFieldMap,
    AccountPage,
    AccountPager,
    ContactFieldMap,
    CrmBackend,
    CrmRecordRef,
    NoteRequest,
    SyncedAccount,
    SyncedContact,
    TaskRequest,
    TaskStatus,
    idempotency_key,
    map_fields,
)
from touchpoint.crm.errors import (
    CrmConfigurationError,
    CrmError,
    CrmNotFound,
    CrmRejected,
    CrmTransientError,
    CrmUnknownOwner,
)
from touchpoint.crm.hubspot import DEFAULT_URL as HUBSPOT_DEFAULT_URL
from touchpoint.crm.hubspot import HubSpotBackend
from touchpoint.crm.salesforce import ApiUsage, SalesforceBackend

__all__ = [
    "AccountFieldMap",
    "AccountPage",
    "AccountPager",
    "ApiUsage",
    "ContactFieldMap",
    "CrmBackend",
    "CrmConfigurationError",
    "CrmError",
    "CrmNotFound",
    "CrmRecordRef",
    "CrmRejected",
    "CrmTransientError",
    "CrmUnknownOwner",
    "HubSpotBackend",
    "NoteRequest",
    "SalesforceBackend",
    "SyncedAccount",
    "SyncedContact",
    "TaskRequest",
    "TaskStatus",
    "idempotency_key",
    "make_crm_backend",
    "map_fields",
]

REMOTE_BACKENDS = ("hubspot", "salesforce")


def make_crm_backend(
    name: Literal["hubspot", "salesforce"],
    *,
    hubspot_token: str | None = None,
    hubspot_url: str | None = None,
    salesforce_instance_url: str | None = None,
    salesforce_access_token: str | None = None,
) -> CrmBackend:
    """Build the backend named by ``TOUCHPOINT_CRM_BACKEND`` from its settings.

    Missing secrets are not an error here: the backend raises ``CrmConfigurationError`` on
    its first call, naming the variable to set, so runs pause instead of the worker failing.

    Args:
        name: ``"hubspot"`` or ``"salesforce"``.
        hubspot_token: ``HUBSPOT_TOKEN``.
        hubspot_url: ``TOUCHPOINT_HUBSPOT_URL``; None for https://api.hubapi.com.
        salesforce_instance_url: ``SALESFORCE_INSTANCE_URL``.
        salesforce_access_token: ``SALESFORCE_ACCESS_TOKEN``.

    Returns:
        A backend owning one HTTP client; close it with ``aclose()``.

    Raises:
        ValueError: ``name`` is not a remote provider.
    """
    if name == "hubspot":
        return HubSpotBackend(hubspot_token, hubspot_url or HUBSPOT_DEFAULT_URL)
    if name == "salesforce":
        return SalesforceBackend(salesforce_instance_url, salesforce_access_token)
    raise ValueError(
        f"unknown CRM backend {name!r}: make_crm_backend builds {' or '.join(REMOTE_BACKENDS)}; "
        "the 'local' backend is built on the store by the worker, not here. Check "
        "TOUCHPOINT_CRM_BACKEND."
    )
