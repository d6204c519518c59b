"""`touchpoint event` (one event, or a JSON-lines file in batches) and `touchpoint events` (the log).

Both talk to Temporal and the store directly, as the API does: `touchpoint.ingest` decides each
event's path (quiet events are recorded in the store only, contract section 9).
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import typer
from pydantic import ValidationError
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from touchpoint.cli.main import app, console, err, run_async
from touchpoint.cli.tables import Cell, Column, plural, print_table
from touchpoint.config import settings
from touchpoint.dsl.runtime import EventIn

BATCH = 500
"""Events per batch sent from a file."""
SHOWN_REJECTIONS = 20


def _sessions() -> Any:
    from touchpoint.store import make_engine, migrate, session_factory

    engine = make_engine(settings().db_url)
    migrate(engine)
    return session_factory(engine)


@app.command()
def event(
    type: str | None = typer.Argument(None, help="Event type, e.g. setup.sso_configured (not with --file)."),
    account: str | None = typer.Option(None, "--account", help="The account's id (not with --file)."),
    data: str = typer.Option("{}", "--data", help="JSON object."),
    id: str | None = typer.Option(None, "--id", help="Event id (a repeated id is a no-op)."),
    file: Path | None = typer.Option(
        None, "--file", exists=True, dir_okay=False, help="A JSON-lines file of events ({type, account_id, at?, data?, id?} per line), sent in batches."
    ),
    batch: int = typer.Option(BATCH, "--batch", min=1, max=1000, help="Events per batch with --file."),
) -> None:
    """Send one event about an account, or every event of a JSON-lines file (--file) in batches."""
    if file is not None:
        if type is not None or account is not None or id is not None:
            err.print("[red]error:[/] --file takes the events from the file: leave out TYPE, --account and --id", soft_wrap=True)
            raise typer.Exit(2)
        _send_file(file, batch)
        return
    if type is None or account is None:
        err.print("[red]error:[/] give TYPE and --account, or --file FILE", soft_wrap=True)
        raise typer.Exit(2)
    try:
        payload = json.loads(data)
    except ValueError as exc:
        err.print(f"[red]error:[/] --data is not JSON: {exc}", soft_wrap=True)
        raise typer.Exit(2) from None
    if not isinstance(payload, dict):
        err.print("[red]error:[/] --data must be a JSON object", soft_wrap=True)
        raise typer.Exit(2)
    from touchpoint.ingest import send_event
    from worker import connect

    async def go() -> str:
        client = await connect(settings())
        return await send_event(client, settings().task_queue, _sessions(), account, EventIn(id=id, type=type, data=payload))

    console.print(f"accepted {run_async(go())}")


def read_events(file: Path) -> Iterator[tuple[int, EventIn | str]]:
    """Each non-blank line of a JSON-lines file with its number: the event, or why it is not one."""
    from touchpoint.api.models import EventBody

    with file.open(encoding="utf-8") as lines:
        for number, line in enumerate(lines, start=1):
            if not line.strip():
                continue
            try:
                body = EventBody.model_validate_json(line)
            except ValidationError as exc:
                reason = "; ".join(f"{'.'.join(str(p) for p in e['loc']) or 'line'}: {e['msg']}" for e in exc.errors(include_url=False))
                yield number, reason
                continue
            yield number, EventIn(id=body.id, type=body.type, account_id=body.account_id, at=body.at, data=body.data)


def _chunks(file: Path, size: int) -> Iterator[list[tuple[int, EventIn | str]]]:
    chunk: list[tuple[int, EventIn | str]] = []
    for item in read_events(file):
        chunk.append(item)
        if len(chunk) >= size:
            yield chunk
            chunk = []
    if chunk:
        yield chunk


def _send_file(file: Path, size: int) -> None:
    """Send a file's events batch by batch with a progress bar; print a summary; exit 1 if any was rejected."""
    from touchpoint.ingest import send_events
    from worker import connect

    total = sum(1 for line in file.open(encoding="utf-8") if line.strip())
    counts = {"quiet": 0, "workflow": 0, "repeat": 0}
    rejected: list[str] = []
    sessions = _sessions()

    async def go() -> None:
        client = await connect(settings())
        columns = (TextColumn("sending"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn())
        with Progress(*columns, console=err, transient=True, disable=not err.is_terminal) as progress:
            bar = progress.add_task("events", total=total)
            for chunk in _chunks(file, size):
                events = [(number, item) for number, item in chunk if isinstance(item, EventIn)]
                rejected.extend(f"{file}:{number}: {item}" for number, item in chunk if isinstance(item, str))
                sent = await send_events(client, settings().task_queue, sessions, [e for _, e in events])
                for (number, _), outcome in zip(events, sent, strict=True):
                    if outcome.error is None:
                        counts[outcome.route] += 1
                    else:
                        rejected.append(f"{file}:{number}: {outcome.id}: {outcome.error}")
                progress.advance(bar, len(chunk))

    run_async(go())
    accepted = sum(counts.values())
    repeats = counts["repeat"]
    console.print(
        f"{accepted:,} {'event' if accepted == 1 else 'events'} accepted: {counts['quiet']:,} quiet (recorded only), "
        f"{counts['workflow']:,} to account workflows, {plural(repeats, 'repeated id')}; {len(rejected):,} rejected",
        markup=False,
        soft_wrap=True,
    )
    for line in rejected[:SHOWN_REJECTIONS]:
        err.print(line, markup=False, soft_wrap=True)
    if len(rejected) > SHOWN_REJECTIONS:
        err.print(f"... and {len(rejected) - SHOWN_REJECTIONS} more rejected", markup=False)
    if rejected:
        raise typer.Exit(1)


@app.command()
def events(
    account_arg: str | None = typer.Argument(None, metavar="[ACCOUNT]", help="The account's id (or --account)."),
    account: str | None = typer.Option(None, "--account", help="The account's id."),
    type: str | None = typer.Option(None, "--type", help="Only events of this type."),
    limit: int = typer.Option(100, "--limit", min=1, max=1000, help="At most this many events (newest first)."),
    before: str | None = typer.Option(None, "--before", help="An event id from a previous page: the events after it."),
    as_json: bool = typer.Option(False, "--json", help="Plain JSON lines, one per event, newest first."),
) -> None:
    """An account's recorded events, newest first, quiet ones included (the store's event log)."""
    from touchpoint.store import repo

    account_id = account or account_arg
    if account_id is None or (account and account_arg and account != account_arg):
        err.print("[red]error:[/] name one account: `touchpoint events ACCOUNT` or `--account ACCOUNT`", soft_wrap=True)
        raise typer.Exit(2)
    with _sessions()() as s:
        after = repo.get_event(s, before) if before else None
        if before and (after is None or after.account_id != account_id):
            err.print(f"[red]error:[/] no event {before!r} of account {account_id!r} to continue from", soft_wrap=True)
            raise typer.Exit(1)
        items = [
            {"id": e.id, "account_id": e.account_id, "type": e.type, "at": e.at.isoformat(), "data": dict(e.data or {}), "received_at": e.received_at.isoformat()}
            for e in repo.event_log(s, account_id, type=type, limit=limit, before=after)
        ]
    if as_json:
        for item in items:
            print(json.dumps(item), flush=True)
        return
    if not items:
        console.print(f"no events for {account_id}" + (f" of type {type}" if type else ""), markup=False)
        return
    columns = [Column("at", key=True), Column("type", key=True), Column("id", key=True, drop=2), Column("data", drop=1)]
    rows: list[list[Cell]] = [[str(item["at"]), str(item["type"]), str(item["id"]), json.dumps(item["data"], separators=(",", ":"))] for item in items]
    print_table(console, columns, rows)
    if len(items) == limit:
        console.print(f"more: touchpoint events {account_id} --before {items[-1]['id']}", markup=False, soft_wrap=True)
