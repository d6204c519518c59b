"""A portfolio of account documents: from the store, a file or a folder (`forecast --accounts`).

A file holds one account document or a list of them (YAML or JSON, as `simulate --account`
takes), or rows in the CSV format of `touchpoint accounts import`; a folder holds such files
(`*.yaml`, `*.yml`, `*.json`, `*.csv`, top level only). Every problem is reported at once as
`file:line: field: message`. The store is read, never written (not even migrated).

Reading is on the forecast's path, so the common case is fast: each file is parsed with the
plain C loader first, and only a file with a problem is parsed again keeping line numbers.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from touchpoint.dsl.accounts import AccountDoc
from touchpoint.dsl.errors import ContractError, Problem
from touchpoint.dsl.workspace import Workspace

SUFFIXES = (".yaml", ".yml", ".json", ".csv")
STORE = "store"
"""`--accounts store`: every account of the store at `TOUCHPOINT_DATABASE_URL`."""


def load_portfolio(
    source: str | Path, workspace: Workspace, *, database_url: str | None = None, warn: Callable[[str], None] | None = None
) -> list[AccountDoc]:
    """The accounts of ``source`` (`store`, a file or a folder), workspace defaults applied.

    A stored document the schema no longer accepts is skipped with a warning (as the date
    sweep does), so one old row does not stop a forecast of the whole book.

    Raises:
        ContractError: naming the file, line and field of every bad account; or (as one
            problem) a missing file or folder, or a store that does not exist.
    """
    from touchpoint.simulate import apply_workspace_defaults

    if str(source) == STORE:
        accounts = list(_from_store(database_url, warn))
    else:
        path = Path(source)
        if path.is_dir():
            files = sorted(f for f in path.iterdir() if f.is_file() and f.suffix.lower() in SUFFIXES)
        elif path.is_file():
            files = [path]
        else:
            raise ContractError([Problem(str(path), 1, "", "no such file or folder (expected `store`, an account file or a folder of them)")])
        accounts, problems = [], []
        for file in files:
            found, bad = read_accounts(file, only_accounts=path.is_dir())
            accounts.extend(found)
            problems.extend(bad)
        if problems:
            raise ContractError(problems)
    ids: set[str] = set()
    for account in accounts:
        if account.id in ids:
            raise ContractError([Problem(str(source), 1, "id", f"account {account.id!r} appears more than once")])
        ids.add(account.id)
    return [apply_workspace_defaults(a, workspace) for a in accounts]


def read_accounts(file: Path, *, only_accounts: bool = False) -> tuple[list[AccountDoc], list[Problem]]:
    """The account documents in one file, and its problems (with lines).

    With ``only_accounts`` (a file found in a folder) a file that holds no account documents
    (an events file, `changes.yaml`: items without an `id`) is passed over, as `validate` passes
    over the sample folder's event files.
    """
    if file.suffix.lower() == ".csv":
        from touchpoint.accounts_csv import read_accounts_csv

        return read_accounts_csv(file)
    text = file.read_text(encoding="utf-8")
    try:
        data = _fast_parse(file, text)
        items = data if isinstance(data, list) else [data]
        if only_accounts and not all(isinstance(item, dict) and "id" in item for item in items):
            return [], []
        return [AccountDoc.model_validate(item) for item in items], []
    except (ValueError, ValidationError):
        return [], _problems(file, text)


def _fast_parse(file: Path, text: str) -> Any:
    if file.suffix.lower() == ".json":
        return json.loads(text)
    import yaml

    loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
    try:
        return yaml.load(text, Loader=loader)
    except yaml.YAMLError as exc:
        raise ValueError(str(exc)) from None


def _problems(file: Path, text: str) -> list[Problem]:
    """The same file again, keeping positions: every problem at its line."""
    from touchpoint.dsl.located import pydantic_problem
    from touchpoint.dsl.yamlpos import load_yaml

    data, positions, yaml_problems = load_yaml(text)
    problems = [Problem(str(file), p.line, "", p.message) for p in yaml_problems]
    if problems:
        return problems
    listed = isinstance(data, list)
    for index, item in enumerate(data if listed else [data]):
        if not isinstance(item, dict):
            line = positions.line_of((index,) if listed else ())
            problems.append(Problem(str(file), line, f"[{index}]" if listed else "", "expected an account document (a mapping with `id` and `name`)"))
            continue
        try:
            AccountDoc.model_validate(item)
        except ValidationError as exc:
            for error in exc.errors(include_url=False):
                if listed:
                    error = {**error, "loc": (index, *error["loc"])}
                problems.append(pydantic_problem(error, file, positions, data))
    return problems


def _from_store(database_url: str | None, warn: Callable[[str], None] | None) -> Iterator[AccountDoc]:
    """Every account of the store, a page at a time, with plain column reads (nothing is written)."""
    from sqlalchemy import inspect, select

    from touchpoint.config import settings
    from touchpoint.store import make_engine
    from touchpoint.store.common import CONTACT_FIELDS
    from touchpoint.store.models import Account, Contact

    url = database_url or settings().db_url
    if url.startswith("sqlite:///") and url != "sqlite:///:memory:":
        file = Path(url.removeprefix("sqlite:///"))
        if not file.exists():
            raise ContractError([Problem(str(file), 1, "", "no store here (TOUCHPOINT_DATABASE_URL); pass --accounts FILE or DIR, or deploy first")])
    engine = make_engine(url)
    columns = [getattr(Contact, name) for name in CONTACT_FIELDS]
    try:
        if not inspect(engine).has_table("accounts"):
            raise ContractError([Problem(url, 1, "", "the store has no accounts table yet; pass --accounts FILE or DIR")])
        after: str | None = None
        with engine.connect() as db:
            while True:
                query = select(Account.id, Account.doc).order_by(Account.id).limit(_PAGE)
                page = db.execute(query if after is None else query.where(Account.id > after)).all()
                if not page:
                    return
                contacts: dict[str, list[dict[str, Any]]] = {row.id: [] for row in page}
                found = db.execute(select(Contact.account_id, *columns).where(Contact.account_id.in_(list(contacts))).order_by(Contact.id))
                for account_id, *values in found:
                    contacts[account_id].append(dict(zip(CONTACT_FIELDS, values, strict=True)))
                for account_id, doc in page:
                    try:
                        yield AccountDoc.model_validate({**doc, "id": account_id, "contacts": contacts[account_id]})
                    except ValidationError as exc:
                        if warn is not None:
                            warn(f"store: account {account_id!r} skipped: {exc.errors(include_url=False)[0]['msg']}")
                after = str(page[-1][0])
    finally:
        engine.dispose()


_PAGE = 5000
