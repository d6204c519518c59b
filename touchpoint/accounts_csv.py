"""Account documents from CSV: one row per account, or several rows per account for its contacts.

Columns are the fields of an account document, nested with dots: `id`, `name`, `segment`,
`country`, `timezone`, `arr`, `renewal_date`, `seats.licensed`, `csm.email`, `properties.industry`,
`metrics.weekly_active_users`, ... and `contact.email`, `contact.name`, `contact.role`,
`contact.locale`, `contact.timezone`, `contact.country` for one contact per row. Rows with the same
`id` add contacts to the same account. Empty cells are left out (defaults apply).
"""

from __future__ import annotations

import csv
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from touchpoint.dsl.accounts import AccountDoc
from touchpoint.dsl.errors import Problem

NUMERIC = {"arr", "seats.licensed", "seats.active"}


def read_accounts_csv(path: Path) -> tuple[list[AccountDoc], list[Problem]]:
    """Parse a CSV file into account documents, with one problem per bad row and field."""
    problems: list[Problem] = []
    docs: dict[str, dict[str, Any]] = {}
    rows: dict[str, int] = {}
    with path.open(newline="", encoding="utf-8-sig") as handle:
        reader = csv.DictReader(handle)
        if not reader.fieldnames or "id" not in reader.fieldnames:
            return [], [Problem(str(path), 1, "", "the header needs at least the columns `id` and `name`")]
        for line_no, row in enumerate(reader, start=2):
            account_id = (row.get("id") or "").strip()
            if not account_id:
                problems.append(Problem(str(path), line_no, "id", "empty: every row needs the account's id"))
                continue
            doc = docs.setdefault(account_id, {"contacts": []})
            rows.setdefault(account_id, line_no)
            contact: dict[str, Any] = {}
            for column, raw in row.items():
                value = (raw or "").strip()
                if column is None or not value:
                    continue
                if column.startswith("contact."):
                    contact[column.removeprefix("contact.")] = value
                    continue
                if column in NUMERIC or column.startswith("metrics."):
                    try:
                        number: Any = float(value) if "." in value or column.startswith("metrics.") or column == "arr" else int(value)
                    except ValueError:
                        problems.append(Problem(str(path), line_no, column, f"expected a number, found {value!r}"))
                        continue
                    _put(doc, column, number)
                else:
                    _put(doc, column, value)
            if contact:
                doc["contacts"].append(contact)
    result = []
    for account_id, doc in docs.items():
        try:
            result.append(AccountDoc.model_validate(doc))
        except ValidationError as exc:
            for error in exc.errors(include_url=False):
                field = ".".join(str(p) for p in error["loc"])
                problems.append(Problem(str(path), rows[account_id], field, f"{str(error['msg']).removeprefix('Value error, ')} (account {account_id})"))
    return result, sorted(problems)


def _put(doc: dict[str, Any], dotted: str, value: Any) -> None:
    keys = dotted.split(".")
    for key in keys[:-1]:
        doc = doc.setdefault(key, {})
    doc[keys[-1]] = value
