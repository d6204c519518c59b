"""Who an email goes to, and who a task is for: pure rules shared by the interpreter and activities."""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from typing import Any

from touchpoint.dsl.accounts import AccountDoc
from touchpoint.dsl.runtime import Recipient
from touchpoint.dsl.schema import INTERNAL_RECIPIENTS, EmailStep, Playbook, is_address
from touchpoint.dsl.workspace import Workspace


def recipients(
    step: EmailStep,
    playbook: Playbook,
    workspace: Workspace,
    account: AccountDoc | None,
    evaluate: Callable[[str], Any],
) -> list[Recipient]:
    """The recipients of an email step, each once (contract section 4, `to` and `audience`).

    ``to`` entries are role names, `csm`/`owner`, literal addresses, or expressions giving
    addresses (evaluated with ``evaluate``); without `to` the playbook's `audience`, and
    without either every contact of the account.
    """
    contacts = account.contacts if account else []
    roles = workspace.known_roles()
    found: list[Recipient] = []

    def add(r: Recipient) -> None:
        if r.email and all(x.email.lower() != r.email.lower() for x in found):
            found.append(r)

    def address(value: str) -> Recipient:
        known = next((c for c in contacts if c.email.lower() == value.lower()), None)
        return Recipient(**known.model_dump()) if known else Recipient(email=value)

    targets = step.email.to if step.email.to is not None else (playbook.audience or None)
    if targets is None:
        for c in contacts:
            add(Recipient(**c.model_dump()))
    for target in targets or []:
        if target in INTERNAL_RECIPIENTS:
            who = getattr(account, target, None) if account else None
            if who and who.email:
                add(Recipient(email=who.email, name=who.name, role=target, timezone=account.timezone if account else None))
        elif target in roles:
            for c in contacts:
                if c.role == target:
                    add(Recipient(**c.model_dump()))
        elif is_address(target):
            add(address(target))
        else:
            value = evaluate(target)
            for item in value if isinstance(value, (list, tuple)) else [value]:
                if item:
                    add(address(str(item)))
    return found


def task_owner(spec: str, account: AccountDoc | None, fallback: str | None) -> tuple[str, str | None]:
    """A task's owner email and, when it is the fallback owner, the line saying why.

    ``spec`` is `csm`, `owner` or an address; without such a person on the account the
    workspace's `crm.fallback_owner` (else ``unassigned``) gets the task.
    """
    person = None
    if spec in ("csm", "owner") and account is not None:
        who = getattr(account, spec)
        person = who.email if who else None
    elif "@" in spec:
        person = spec
    if person:
        return person, None
    owner = fallback or "unassigned"
    who = "CSM" if spec == "csm" else spec
    return owner, f"No {who} on this account: assigned to the fallback owner {owner} (crm.fallback_owner)."


def with_note(notes: str | None, line: str | None) -> str | None:
    """A task's notes with the owner line (why the fallback owner has it) at the end."""
    if not line:
        return notes
    return f"{notes}\n\n{line}" if notes else line


def stable_id(prefix: str, key: str) -> str:
    """An id derived from a ledger key: the same side effect always gets the same id."""
    return f"{prefix}_{hashlib.sha256(key.encode()).hexdigest()[:16]}"


def held_out(percent: float, account: str, playbook: str) -> bool:
    """A `holdout` choice, stable per account and playbook and independent of every `split`
    (its own hash input): the account held out once stays held out when it re-enrolls."""
    digest = hashlib.sha256(f"holdout|{account}|{playbook}".encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2**64 < percent / 100


def variant_of(weights: dict[str, float], subject: str, playbook: str, step: str) -> str:
    """A `split` variant, stable per account: the same subject always lands in the same one."""
    digest = hashlib.sha256(f"{subject}|{playbook}|{step}".encode()).digest()
    point = int.from_bytes(digest[:8], "big") / 2**64
    total = sum(weights.values())
    cumulative = 0.0
    for variant, weight in weights.items():
        cumulative += weight / total
        if point < cumulative:
            return variant
    return list(weights)[-1]
