"""Building account documents from CRM records, the same way for every provider.

Each connector reads raw values its own way (HubSpot string properties, Salesforce JSON
fields and relationships) and hands a lookup function here, so the typing rules (what a
seat count is, which values are dropped) live in one place.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

from touchpoint.crm._values import (
    as_text,
    parse_date,
    parse_number,
    parse_timezone,
)
from touchpoint.crm.base import AccountFieldMap, ContactFieldMap, SyncedAccount, SyncedContact

__all__ = ["Lookup", "build_account", "build_contact", "person"]

log = logging.getLogger(__name__)

Lookup = Callable[[str], object]
"""Raw value of a CRM property by name (None when absent)."""


def person(name: object, email: object) -> dict[str, str] | None:
    """``{name, email}`` for ``csm``/``owner``, or None without an email."""
    address = as_text(email)
    if address is None:
        return None
    return {"name": as_text(name) or address, "email": address}


def _seat_count(value: object, *, prop: str, crm_id: str) -> int | None:
    number = parse_number(value)
    if number is None:
        if as_text(value) is not None:
            log.warning("account %s: %s=%r is not a number; seats left out", crm_id, prop, value)
        return None
    return round(number)


def build_account(
    crm_id: str,
    get: Lookup,
    fmap: AccountFieldMap,
    *,
    csm: dict[str, str] | None,
    owner: dict[str, str] | None,
    contacts: list[SyncedContact],
) -> SyncedAccount:
    """Type the mapped properties of one CRM account into an account document.

    Values that are empty or unreadable are left out of ``fields`` (with a log line for the
    unreadable ones), so a sync only ever fills fields in.
    """
    fields: dict[str, object] = {}

    def read(key: str, prop: str | None, parse: Callable[[object], object | None]) -> None:
        if prop is None:
            return
        raw = get(prop)
        value = parse(raw)
        if value is not None:
            fields[key] = value
        elif as_text(raw) is not None:
            log.warning("account %s: %s=%r is not a valid %s; left out", crm_id, prop, raw, key)

    read("renewal_date", fmap.renewal_date, parse_date)
    read("arr", fmap.arr, parse_number)
    read("country", fmap.country, as_text)
    read("timezone", fmap.timezone, parse_timezone)
    read("plan", fmap.plan, as_text)
    seats: dict[str, int] = {}
    for key, prop in (("licensed", fmap.seats_licensed), ("active", fmap.seats_active)):
        if prop is not None and (count := _seat_count(get(prop), prop=prop, crm_id=crm_id)) is not None:
            seats[key] = count
    if seats:
        fields["seats"] = seats
    if csm:
        fields["csm"] = csm
    if owner:
        fields["owner"] = owner
    extra = {prop: get(prop) for prop in fmap.properties if get(prop) is not None}
    if extra:
        fields["properties"] = extra
    name = as_text(get(fmap.name)) or crm_id
    return SyncedAccount(crm_id=crm_id, name=name, fields=fields, contacts=contacts)


def build_contact(get: Lookup, cmap: ContactFieldMap) -> SyncedContact | None:
    """One contact in the account document's shape, or None when it has no email."""
    email = as_text(get(cmap.email))
    if email is None:
        return None
    parts = [text for prop in cmap.name if (text := as_text(get(prop)))]

    def opt(prop: str | None) -> str | None:
        return as_text(get(prop)) if prop else None

    return SyncedContact(
        email=email,
        name=" ".join(parts) or None,
        role=(opt(cmap.role) or "").lower() or None,
        locale=opt(cmap.locale),
        timezone=parse_timezone(get(cmap.timezone)) if cmap.timezone else None,
        country=opt(cmap.country),
    )
