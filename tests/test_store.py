"""Tests of the store on a real SQLite file and a real PostgreSQL schema."""

from __future__ import annotations

import datetime as dt
import threading
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import Engine, inspect, select, text
from sqlalchemy.orm import Session, sessionmaker

from tests import pg
from touchpoint.store import (
    Base,
    Event,
    SendSlot,
    add_health_score,
    add_message,
    add_note,
    add_run_step,
    add_task,
    complete_task,
    count_runs_on_older_versions,
    current_deployments,
    deploy,
    earliest_free_slot,
    get_account,
    get_deployment,
    get_run,
    health_history,
    is_suppressed,
    latest_health,
    ledger_finish,
    ledger_get,
    ledger_reserve,
    list_accounts,
    list_events,
    list_messages,
    list_notes,
    list_runs,
    list_suppressions,
    list_tasks,
    make_engine,
    mark_date_trigger_fired,
    migrate,
    record_event,
    record_provider_event,
    release_send_slot,
    reserve_send_slot,
    run_steps,
    session_factory,
    suppress,
    undeploy,
    unsuppress,
    upsert_account,
    upsert_run,
    write_tx,
)

UTC = dt.UTC
T0 = dt.datetime(2025, 3, 3, 9, 0, tzinfo=UTC)
WEEK = dt.timedelta(days=7)


# --- fixtures ------------------------------------------------------------------------------


@pytest.fixture(scope="session")
def postgres_reachable() -> None:
    try:
        pg.check()
    except pg.PostgresUnreachable as exc:
        pytest.fail(str(exc), pytrace=False)


@pytest.fixture(params=["sqlite", "postgresql"])
def url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """An empty database: a SQLite file, or a PostgreSQL schema of its own (dropped after)."""
    if request.param == "sqlite":
        # A directory that does not exist yet: make_engine creates it.
        yield f"sqlite:///{tmp_path}/store/touchpoint.db"
        return
    request.getfixturevalue("postgres_reachable")
    with pg.schema("tp_test") as schema:
        yield pg.schema_url(schema)


@pytest.fixture
def engine(url: str) -> Iterator[Engine]:
    engine = make_engine(url)
    migrate(engine)
    yield engine
    engine.dispose()


@pytest.fixture
def factory(engine: Engine) -> sessionmaker[Session]:
    return session_factory(engine)


def _account(account_id: str, **extra: object) -> dict[str, object]:
    return {"id": account_id, "name": f"Account {account_id}", "segment": "enterprise", **extra}


# --- schema --------------------------------------------------------------------------------


def test_store_migrate_twice_is_a_noop(url: str) -> None:
    engine = make_engine(url)
    try:
        migrate(engine)
        factory = session_factory(engine)
        with factory.begin() as s:
            upsert_account(s, _account("acme"), [])
        migrate(engine)
        migrate(url)
        with engine.connect() as conn:
            assert conn.execute(text("SELECT version_num FROM alembic_version")).scalars().all() == ["0009"]
        assert set(inspect(engine).get_table_names()) == set(Base.metadata.tables) | {"alembic_version"}
        with factory.begin() as s:
            assert get_account(s, "acme") is not None
    finally:
        engine.dispose()


def test_store_migrate_from_two_processes_at_once(url: str) -> None:
    barrier = threading.Barrier(2)

    def start() -> None:
        barrier.wait()
        migrate(url)

    with ThreadPoolExecutor(2) as pool:
        for future in [pool.submit(start) for _ in range(2)]:
            future.result()
    engine = make_engine(url)
    try:
        with engine.connect() as conn:
            versions = conn.execute(text("SELECT version_num FROM alembic_version")).scalars()
            assert versions.all() == ["0009"]
    finally:
        engine.dispose()


def test_store_migrations_match_models(engine: Engine) -> None:
    with engine.connect() as conn:
        diff = compare_metadata(MigrationContext.configure(conn), Base.metadata)
    assert diff == []


def test_store_sqlite_synchronous_is_normal_unless_the_url_asks(tmp_path: Path) -> None:
    def pragma(url: str) -> int:
        engine = make_engine(url)
        try:
            with engine.connect() as conn:
                return int(conn.exec_driver_sql("PRAGMA synchronous").scalar_one())
        finally:
            engine.dispose()

    assert pragma(f"sqlite:///{tmp_path / 'a.db'}") == 1  # NORMAL
    assert pragma(f"sqlite:///{tmp_path / 'b.db'}?synchronous=full") == 2  # FULL
    with pytest.raises(ValueError, match=r"synchronous='fast' in the database URL: use one of normal, full, extra"):
        make_engine(f"sqlite:///{tmp_path / 'c.db'}?synchronous=fast")


def test_store_make_engine_rejects_other_databases() -> None:
    with pytest.raises(ValueError, match=r"sqlite:///path/to/touchpoint\.db"):
        make_engine("mysql://root@localhost/touchpoint")


# --- accounts and events -------------------------------------------------------------------


def test_store_upsert_account_creates_updates_and_replaces_contacts(
    factory: sessionmaker[Session],
) -> None:
    doc = _account("acme", renewal_date=dt.date(2025, 9, 30), csm={"name": "Cy", "email": "Cy@Example.com"})
    with factory.begin() as s:
        created, previous = upsert_account(
            s,
            doc,
            [
                {"email": "Ana@Acme.test", "role": "champion"},
                {"email": "bo@acme.test", "role": "admin", "locale": "de"},
            ],
        )
    assert (created, previous) == (True, None)

    with factory.begin() as s:
        created, previous = upsert_account(
            s, {**doc, "segment": "mid-market"}, [{"email": "cid@acme.test", "role": "executive"}]
        )
        assert created is False
        assert previous == {**doc, "renewal_date": "2025-09-30"}

    with factory.begin() as s:
        stored = get_account(s, "acme")
    assert stored is not None
    stored_doc, contacts = stored
    assert stored_doc["segment"] == "mid-market"
    assert contacts == [
        {
            "email": "cid@acme.test",
            "name": None,
            "role": "executive",
            "locale": None,
            "timezone": None,
            "country": None,
        }
    ]


def test_store_upsert_account_is_idempotent(factory: sessionmaker[Session]) -> None:
    doc = _account("acme", renewal_date="2025-09-30")
    contacts = [{"email": "ana@acme.test", "role": "champion"}]
    with factory.begin() as s:
        upsert_account(s, doc, contacts)
    with factory.begin() as s:
        first = s.execute(text("SELECT updated_at FROM accounts")).scalar_one()
        assert upsert_account(s, doc, contacts) == (False, doc)
    with factory.begin() as s:
        assert s.execute(text("SELECT updated_at FROM accounts")).scalar_one() == first
        assert s.execute(text("SELECT count(*) FROM contacts")).scalar_one() == 1


def test_store_upsert_account_rejects_unknown_contact_fields(
    factory: sessionmaker[Session],
) -> None:
    with factory.begin() as s, pytest.raises(ValueError, match=r"contacts\[0\]: unknown field"):
        upsert_account(s, _account("acme"), [{"email": "a@acme.test", "phone": "1"}])


def test_store_list_accounts_pages_by_id(factory: sessionmaker[Session]) -> None:
    with factory.begin() as s:
        for n in range(1200):
            upsert_account(s, _account(f"acct-{n:04d}"), [{"email": f"c{n}@x.test"}])
    seen: list[str] = []
    sizes: list[int] = []
    with factory.begin() as s:
        page = list_accounts(s, limit=500)
        while page:
            sizes.append(len(page))
            for doc, contacts in page:
                assert contacts[0]["email"] == f"c{int(doc['id'][5:])}@x.test"
                seen.append(doc["id"])
            page = list_accounts(s, after=page[-1][0]["id"], limit=500)
    assert sizes == [500, 500, 200]
    assert seen == [f"acct-{n:04d}" for n in range(1200)]


def test_store_record_event_ignores_duplicate_ids(factory: sessionmaker[Session]) -> None:
    with factory.begin() as s:
        assert record_event(s, "evt-1", "acme", "usage.reported", T0, {"seats": 3}) is True
        assert record_event(s, "evt-1", "acme", "usage.reported", T0, {"seats": 4}) is False
    with factory.begin() as s:
        events = list_events(s, account_id="acme")
    assert [(e.id, e.data) for e in events] == [("evt-1", {"seats": 3})]


def test_store_datetimes_come_back_aware_utc(factory: sessionmaker[Session]) -> None:
    paris = dt.timezone(dt.timedelta(hours=2))
    with factory.begin() as s:
        record_event(s, "evt-1", "acme", "login", dt.datetime(2025, 6, 1, 11, 0, tzinfo=paris), {})
    with factory.begin() as s:
        event = s.get(Event, "evt-1")
        assert event is not None
        assert event.at == dt.datetime(2025, 6, 1, 9, 0, tzinfo=UTC)
        assert event.at.tzinfo == UTC
        assert list_events(s, since=dt.datetime(2025, 6, 1, 8, 59, tzinfo=UTC)) == [event]
        assert list_events(s, since=dt.datetime(2025, 6, 1, 9, 0, tzinfo=UTC)) == []
    with factory.begin() as s, pytest.raises(ValueError, match="timezone-aware"):
        record_event(s, "evt-2", "acme", "login", dt.datetime(2025, 6, 1, 11, 0), {})


# --- deployments and runs ------------------------------------------------------------------


def test_store_deploy_tracks_versions_and_current(factory: sessionmaker[Session]) -> None:
    with write_tx(factory) as s:
        assert deploy(s, "playbook", "onboarding", "v1", {"steps": []}, "playbook: onboarding")
        assert not deploy(s, "playbook", "onboarding", "v1", {"steps": []}, "playbook: onboarding")
        assert deploy(s, "playbook", "onboarding", "v2", {"steps": [1]}, "playbook: onboarding #2")
        assert deploy(s, "workspace", "workspace", "w1", {}, "")
    with factory.begin() as s:
        current = current_deployments(s)
        assert [(d.kind, d.name, d.version) for d in current] == [
            ("playbook", "onboarding", "v2"),
            ("workspace", "workspace", "w1"),
        ]
        assert [d.version for d in current_deployments(s, "playbook")] == ["v2"]
        old = get_deployment(s, "playbook", "onboarding", "v1")
        assert old is not None
        assert old.current is False
    with write_tx(factory) as s:
        assert deploy(s, "playbook", "onboarding", "v1", {"steps": []}, "playbook: onboarding")
    with factory.begin() as s:
        now_current = get_deployment(s, "playbook", "onboarding")
        assert now_current is not None
        assert now_current.version == "v1"
        assert undeploy(s, "playbook", "onboarding") is True
        assert undeploy(s, "playbook", "onboarding") is False
        assert get_deployment(s, "playbook", "onboarding") is None


def test_store_runs_projection_and_timeline(factory: sessionmaker[Session]) -> None:
    with factory.begin() as s:
        for run_id, version in (("r1", "v1"), ("r2", "v2"), ("r3", "v1")):
            upsert_run(
                s,
                id=run_id,
                workflow_id=f"run/onboarding/{run_id}",
                playbook_id="onboarding",
                version=version,
                account_id="acme",
                started_at=T0,
            )
        upsert_run(s, id="r3", status="ended", outcome="completed", ended_at=T0 + WEEK)
        upsert_run(s, id="r1", step="welcome", vars={"variant": "a"})
        add_run_step(s, "r1", T0, 0, "welcome", "email.sent", {"to": "ana@acme.test"})
        add_run_step(s, "r1", T0 + WEEK, 7, "check-in", "task.created", {})
    with factory.begin() as s:
        run = get_run(s, "r1")
        assert run is not None
        assert (run.status, run.step, run.vars) == ("running", "welcome", {"variant": "a"})
        assert [r.id for r in list_runs(s, account_id="acme", status="running")] == ["r1", "r2"]
        assert count_runs_on_older_versions(s, "onboarding", "v2") == 1
        assert [(st.day, st.action) for st in run_steps(s, "r1")] == [
            (0, "email.sent"),
            (7, "task.created"),
        ]
    with factory.begin() as s, pytest.raises(ValueError, match="needs workflow_id"):
        upsert_run(s, id="r9", status="running")


# --- side effects --------------------------------------------------------------------------


def test_store_ledger_reserve_is_idempotent(factory: sessionmaker[Session]) -> None:
    key = "run-1/steps[0]/ana@acme.test/1"
    with write_tx(factory) as s:
        assert ledger_get(s, key) is None
        assert ledger_reserve(s, key, "email").status == "reserved"
        ledger_finish(s, key, "done", {"message_id": "msg_1"})
    with write_tx(factory) as s:
        again = ledger_reserve(s, key, "email")
        assert (again.status, again.result) == ("done", {"message_id": "msg_1"})
    with factory.begin() as s, pytest.raises(LookupError, match="ledger_reserve"):
        ledger_finish(s, "unknown", "done")


def test_store_records_are_retry_safe_by_ledger_key(factory: sessionmaker[Session]) -> None:
    with factory.begin() as s:
        assert add_message(s, ledger_key="k1", run_id="r1", to_email="Ana@Acme.test", status="sent", sent_at=T0, subject="first")
        assert not add_message(s, ledger_key="k1", run_id="r1", to_email="ana@acme.test", status="failed", sent_at=T0, subject="again")
        assert add_task(s, ledger_key="k2", account_id="acme", title="Call Ana", owner="cy@x.test")
        assert not add_task(s, ledger_key="k2", account_id="acme", title="x", owner="y")
        assert add_note(s, ledger_key="k3", account_id="acme", text="Kick-off done")
        assert not add_note(s, ledger_key="k3", account_id="acme", text="again")
    with factory.begin() as s:
        assert [(m.to_email, m.status, m.subject) for m in list_messages(s, to_email="ANA@acme.test")] == [("ana@acme.test", "sent", "first")]
        tasks = list_tasks(s, status="open")
        assert [(t.title, t.owner) for t in tasks] == [("Call Ana", "cy@x.test")]
        assert [n.text for n in list_notes(s, account_id="acme")] == ["Kick-off done"]
        task = tasks[0]
        done = complete_task(s, task.id, T0)
        assert done is not None
        assert done.completed_at == T0
        assert complete_task(s, task.id, T0 + WEEK) is done
        assert done.completed_at == T0
        assert complete_task(s, "missing", T0) is None
        assert list_tasks(s, status="open") == []


def test_store_suppression(factory: sessionmaker[Session]) -> None:
    with factory.begin() as s:
        assert suppress(s, "Ana@Acme.test", "unsubscribed", source="link") is True
        assert suppress(s, "ana@acme.test", "bounced") is False
        assert is_suppressed(s, "ANA@acme.test") == "unsubscribed"
        assert is_suppressed(s, "bo@acme.test") is None
        assert [x.email for x in list_suppressions(s)] == ["ana@acme.test"]
        assert unsuppress(s, "ana@acme.test") is True
        assert is_suppressed(s, "ana@acme.test") is None


def test_store_dedupe_tables_and_health(factory: sessionmaker[Session]) -> None:
    with factory.begin() as s:
        assert record_provider_event(s, "sg-1") is True
        assert record_provider_event(s, "sg-1") is False
        assert mark_date_trigger_fired(s, "acme", "renewal", dt.date(2025, 9, 30)) is True
        assert mark_date_trigger_fired(s, "acme", "renewal", dt.date(2025, 9, 30)) is False
        assert mark_date_trigger_fired(s, "acme", "renewal", dt.date(2026, 9, 30)) is True
        add_health_score(s, "acme", T0, 70, "yellow", {"usage": 30})
        add_health_score(s, "acme", T0 + WEEK, 82, "green", {"usage": 42})
    with factory.begin() as s:
        assert [h.score for h in health_history(s, "acme")] == [70, 82]
        latest = latest_health(s, "acme")
        assert latest is not None
        assert latest.tier == "green"


# --- frequency caps ------------------------------------------------------------------------


def test_store_earliest_free_slot_keeps_future_windows_within_cap() -> None:
    day = dt.timedelta(days=1)
    future = [T0 + 10 * day, T0 + 12 * day]
    # Day 5 shares no 7-day window with both later slots; day 6 would (days 6, 10 and 12).
    assert earliest_free_slot(future, T0 + 5 * day, 2, WEEK) == T0 + 5 * day
    assert earliest_free_slot(future, T0 + 6 * day, 2, WEEK) == T0 + 17 * day
    assert earliest_free_slot([T0, T0 + day], T0 + day, 2, WEEK) == T0 + WEEK
    assert earliest_free_slot([], T0, 1, WEEK) == T0
    with pytest.raises(ValueError, match="at least 1"):
        earliest_free_slot([], T0, 0, WEEK)


def test_store_reserve_send_slot_is_idempotent_and_releasable(
    factory: sessionmaker[Session],
) -> None:
    with write_tx(factory) as s:
        first = reserve_send_slot(s, "ana@acme.test", "k1", T0, 1, WEEK)
    with write_tx(factory) as s:
        assert reserve_send_slot(s, "ANA@acme.test", "k1", T0 + WEEK, 1, WEEK) == first == T0
        assert reserve_send_slot(s, "ana@acme.test", "k2", T0, 1, WEEK) == T0 + WEEK
    with write_tx(factory) as s:
        assert release_send_slot(s, "k1") is True
        assert reserve_send_slot(s, "ana@acme.test", "k3", T0, 1, WEEK) == T0


def test_store_frequency_cap_holds_under_concurrency(factory: sessionmaker[Session]) -> None:
    cap, workers, per_worker = 2, 8, 3
    barrier = threading.Barrier(workers)

    def reserve_all(worker: int) -> dict[str, dt.datetime]:
        barrier.wait()
        reserved = {}
        for i in range(per_worker):
            key = f"run-{worker}/steps[{i}]/ana@acme.test/1"
            with write_tx(factory) as s:
                reserved[key] = reserve_send_slot(s, "Ana@Acme.test", key, T0, cap, WEEK)
        return reserved

    results: dict[str, dt.datetime] = {}
    with ThreadPoolExecutor(workers) as pool:
        for future in [pool.submit(reserve_all, w) for w in range(workers)]:
            results.update(future.result())

    with factory.begin() as s:
        rows = s.execute(select(SendSlot.ledger_key, SendSlot.slot_at)).all()
    slots = sorted(at for _, at in rows)
    assert len(results) == workers * per_worker
    assert dict(rows) == results
    for start in slots:
        assert sum(start <= at < start + WEEK for at in slots) <= cap
    # Everyone wanted T0, so the slots pack tightly: two per week.
    assert slots == [T0 + WEEK * (i // cap) for i in range(workers * per_worker)]


def test_store_group_writer_commits_units_together_and_fails_one_alone(tmp_path: Path) -> None:
    """Units share a transaction; a unit that raises is rolled back alone and its caller gets the
    exception; results (and `on_commit` hooks) come only after the commit; each unit runs in its
    caller's context."""
    import contextvars

    from touchpoint.store import GroupWriter, on_commit

    engine = make_engine(f"sqlite:///{tmp_path / 'group.db'}")
    migrate(engine)
    factory = session_factory(engine)
    with engine.begin() as conn:
        conn.execute(text("CREATE TABLE tally (n INTEGER)"))
        conn.execute(text("INSERT INTO tally VALUES (0)"))
    writer = GroupWriter(factory)
    who: contextvars.ContextVar[str] = contextvars.ContextVar("who", default="nobody")
    committed: list[str] = []
    hold = threading.Event()

    def blocker(s: Session) -> None:
        hold.wait(10)  # the next units queue behind it and go in one batch

    def good(account_id: str) -> object:
        def work(s: Session) -> str:
            upsert_account(s, _account(account_id), [])
            s.execute(text("UPDATE tally SET n = n + 1"))  # not idempotent: must be applied once
            on_commit(s, lambda: committed.append(account_id))
            return who.get()

        return work

    def bad(s: Session) -> None:
        upsert_account(s, _account("bad"), [])
        on_commit(s, lambda: committed.append("bad"))
        raise ValueError("this unit fails")

    first = writer.submit(blocker)
    futures = []
    for name in ("a", "b"):
        token = who.set(f"caller-{name}")
        futures.append(writer.submit(good(name)))  # type: ignore[arg-type]
        who.reset(token)
    failing = writer.submit(bad)
    last = writer.submit(good("c"))  # type: ignore[arg-type]
    assert not futures[0].done() and committed == []
    hold.set()
    first.result(10)
    assert [f.result(10) for f in futures] == ["caller-a", "caller-b"]
    with pytest.raises(ValueError, match="this unit fails"):
        failing.result(10)
    assert last.result(10) == "nobody"
    assert committed == ["a", "b", "c"]
    with factory() as s:
        assert get_account(s, "bad") is None
        assert all(get_account(s, name) is not None for name in ("a", "b", "c"))
        assert s.execute(text("SELECT n FROM tally")).scalar_one() == 3
    writer.close()
    engine.dispose()


def test_store_group_writer_needs_no_savepoint_when_no_unit_fails(tmp_path: Path) -> None:
    """A batch whose units all succeed runs them in its one transaction without a SAVEPOINT each
    (each statement costs the writer thread the GIL twice), and still commits them all."""
    from sqlalchemy import event

    from touchpoint.store import GroupWriter

    engine = make_engine(f"sqlite:///{tmp_path / 'plain.db'}")
    migrate(engine)
    statements: list[str] = []
    event.listen(engine, "before_cursor_execute", lambda conn, cursor, statement, *rest: statements.append(statement))
    writer = GroupWriter(session_factory(engine))
    hold = threading.Event()
    first = writer.submit(lambda s: hold.wait(10) and upsert_account(s, _account("first"), []))
    futures = [writer.submit(lambda s, name=name: upsert_account(s, _account(name), [])) for name in "abcd"]
    hold.set()
    first.result(10)
    for future in futures:
        future.result(10)
    assert not [x for x in statements if "SAVEPOINT" in x.upper()]
    assert 1 <= statements.count("BEGIN IMMEDIATE") <= 2  # the four behind the blocker go together
    with session_factory(engine)() as s:
        assert all(get_account(s, name) is not None for name in "abcd")
    writer.close()
    engine.dispose()


def test_store_group_writer_writes_deferred_rows_merged_at_the_end_of_the_batch(tmp_path: Path) -> None:
    """`defer`red rows of a batch's units are merged (a counter summed, else the first row kept)
    and written in one statement before COMMIT; a unit that fails leaves none of its rows, and
    outside a batch `defer` writes at once."""
    from sqlalchemy import Column, Integer, MetaData, String, Table, event
    from sqlalchemy.dialects import sqlite

    from touchpoint.store import GroupWriter
    from touchpoint.store.db import defer

    engine = make_engine(f"sqlite:///{tmp_path / 'deferred.db'}")
    migrate(engine)
    meta = MetaData()
    tally = Table("tally", meta, Column("k", String, primary_key=True), Column("n", Integer, nullable=False), Column("note", String))
    meta.create_all(engine)
    add = sqlite.insert(tally)
    add = add.on_conflict_do_update(index_elements=["k"], set_={"n": tally.c.n + add.excluded.n})
    keep = sqlite.insert(tally).on_conflict_do_nothing()
    statements: list[str] = []
    event.listen(engine, "before_cursor_execute", lambda conn, cursor, statement, *rest: statements.append(statement))
    writer = GroupWriter(session_factory(engine))

    def unit(rows: list[dict[str, object]], kept: list[dict[str, object]], fail: bool = False) -> object:
        def work(s: Session) -> None:
            defer(s, add, rows, key=["k"], add="n")
            defer(s, keep, kept, key=["k"])
            if fail:
                raise ValueError("this unit fails")

        return work

    hold = threading.Event()
    first = writer.submit(lambda s: hold.wait(10))
    ok = [
        writer.submit(unit([{"k": "a", "n": 1, "note": None}, {"k": "b", "n": 2, "note": None}], [{"k": "x", "n": 0, "note": "first"}])),  # type: ignore[arg-type]
        writer.submit(unit([{"k": "a", "n": 10, "note": None}], [{"k": "x", "n": 0, "note": "second"}, {"k": "y", "n": 0, "note": "y"}])),  # type: ignore[arg-type]
    ]
    hold.set()
    first.result(10)
    for future in ok:
        future.result(10)
    with engine.connect() as conn:
        assert dict(conn.execute(select(tally.c.k, tally.c.n)).all()) == {"a": 11, "b": 2, "x": 0, "y": 0}
        assert conn.execute(select(tally.c.note).where(tally.c.k == "x")).scalar() == "first"
    inserts = [x for x in statements if x.startswith("INSERT INTO tally")]
    assert len(inserts) <= 4 and statements.count("BEGIN IMMEDIATE") <= 2  # merged: not one per row

    hold.clear()
    first = writer.submit(lambda s: hold.wait(10))
    good = writer.submit(unit([{"k": "a", "n": 100, "note": None}], []))  # type: ignore[arg-type]
    bad = writer.submit(unit([{"k": "a", "n": 1000, "note": None}], [{"k": "z", "n": 0, "note": "z"}], fail=True))  # type: ignore[arg-type]
    hold.set()
    first.result(10)
    good.result(10)
    with pytest.raises(ValueError, match="this unit fails"):
        bad.result(10)
    with engine.connect() as conn:
        assert dict(conn.execute(select(tally.c.k, tally.c.n)).all()) == {"a": 111, "b": 2, "x": 0, "y": 0}

    with session_factory(engine).begin() as s:  # no batch: written at once, seen by the next read
        defer(s, add, [{"k": "b", "n": 1, "note": None}], key=["k"], add="n")
        assert s.execute(select(tally.c.n).where(tally.c.k == "b")).scalar() == 3
    writer.close()
    engine.dispose()


def test_store_group_writer_fails_every_unit_when_the_commit_fails(tmp_path: Path) -> None:
    """Nothing is reported done unless its batch committed: a deferred constraint that fails at
    COMMIT fails each unit of the batch, and none of their rows is stored."""
    from touchpoint.store import GroupWriter

    engine = make_engine(f"sqlite:///{tmp_path / 'fail.db'}")
    migrate(engine)
    factory = session_factory(engine)
    writer = GroupWriter(factory)

    def unit(s: Session) -> None:
        upsert_account(s, _account("x"), [])
        # A deferred foreign key is checked at COMMIT: an orphan fails the whole transaction.
        s.execute(text("PRAGMA defer_foreign_keys=ON"))
        s.execute(text("INSERT INTO contacts (account_id, email) VALUES ('missing', 'x@example.com')"))

    future = writer.submit(unit)
    with pytest.raises(Exception, match="FOREIGN KEY"):
        future.result(10)
    with factory() as s:
        assert get_account(s, "x") is None
    writer.close()
    engine.dispose()
