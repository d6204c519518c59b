"""Engines, migrations, sessions and write-locking transactions.

SQLite (the default, one file) and PostgreSQL (production) are both supported through the same
synchronous SQLAlchemy engine: activities run in a thread pool, so blocking calls are fine.

SQLite notes: the pysqlite driver's own transaction handling is switched off and we emit
``BEGIN`` ourselves, so that a write transaction can start with ``BEGIN IMMEDIATE``. That takes
the database's write lock up front; a deferred transaction that reads and then writes can fail
with "database is locked" under WAL when another writer got in between, and no busy timeout
helps with that.

The SQLite store runs in WAL mode with ``synchronous=normal`` by default, like the embedded
Temporal dev server: a commit does not wait for an fsync of the WAL, so a power loss or an OS
crash (not a process crash or restart: those lose nothing) can roll back the last transactions.
On this store that could mean an email sent again after a power cut. ``?synchronous=full`` in
the database URL trades throughput for that guarantee; production runs on PostgreSQL.
"""

from __future__ import annotations

import contextlib
import contextvars
import queue
import threading
import time
import weakref
from collections.abc import Callable, Iterator, Mapping, Sequence
from concurrent.futures import Future
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Literal, TypeVar

from sqlalchemy import create_engine, event, text
from sqlalchemy.engine import URL, Connection, Engine, make_url
from sqlalchemy.orm import Session, sessionmaker
from sqlalchemy.pool import StaticPool
from sqlalchemy.sql.dml import Insert

from .columns import json_dumps

MIGRATIONS_DIR = Path(__file__).resolve().parent / "migrations"

# Connection execution option read by the SQLite "begin" hook: the BEGIN mode to use.
_SQLITE_BEGIN = "touchpoint_sqlite_begin"
_BUSY_TIMEOUT_MS = 30_000
_SYNCHRONOUS = ("normal", "full", "extra")
# One lock per SQLite engine that write transactions of this process take before BEGIN IMMEDIATE.
_WRITE_GATES: weakref.WeakKeyDictionary[Engine, threading.RLock] = weakref.WeakKeyDictionary()
# Session.info key of the callbacks `on_commit` registered, run once the transaction commits.
_ON_COMMIT = "touchpoint_on_commit"
_DEFERRED = "touchpoint_deferred"
T = TypeVar("T")


def make_engine(url: str | URL, *, echo: bool = False) -> Engine:
    """Create an engine for a SQLite or PostgreSQL URL.

    Args:
        url: ``sqlite:///path/to/touchpoint.db`` (the parent directory is created; WAL mode,
            ``PRAGMA synchronous=normal`` unless the URL ends in ``?synchronous=full``: see below),
            ``sqlite://`` for a private in-memory database (tests only: one shared connection),
            or ``postgresql+psycopg://user@host:5432/db`` (``postgresql://`` means psycopg 3).
        echo: Log every SQL statement (debugging).

    Returns:
        The engine. Call ``migrate(engine)`` before first use and ``engine.dispose()`` at exit.

    Raises:
        ValueError: The URL names another database.
    """
    u = make_url(url)
    backend = u.get_backend_name()
    kwargs: dict[str, Any] = {"echo": echo, "json_serializer": json_dumps}
    if backend == "sqlite":
        synchronous = str(u.query.get("synchronous", "normal")).lower()
        if synchronous not in _SYNCHRONOUS:
            raise ValueError(f"synchronous={synchronous!r} in the database URL: use one of {', '.join(_SYNCHRONOUS)}")
        u = u.difference_update_query(["synchronous"])
        database = u.database or ""
        if database in ("", ":memory:"):
            # Every pooled connection to ":memory:" would be a different empty database.
            kwargs["poolclass"] = StaticPool
            kwargs["connect_args"] = {"check_same_thread": False}
        elif not database.startswith("file:"):
            Path(database).expanduser().parent.mkdir(parents=True, exist_ok=True)
        engine = create_engine(u, **kwargs)
        _install_sqlite_hooks(engine, synchronous)
        return engine
    if backend == "postgresql":
        if u.drivername == "postgresql":
            u = u.set(drivername="postgresql+psycopg")
        return create_engine(u, pool_pre_ping=True, **kwargs)
    raise ValueError(
        f"unsupported database URL {u.render_as_string(hide_password=True)!r}: use "
        "sqlite:///path/to/touchpoint.db or postgresql+psycopg://user@host:5432/dbname"
    )


def _install_sqlite_hooks(engine: Engine, synchronous: str) -> None:
    # Re-entrant: a nested write transaction fails at SQLite's busy timeout as before, never hangs.
    _WRITE_GATES[engine] = threading.RLock()

    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_connection: Any, _record: Any) -> None:
        # isolation_level=None stops pysqlite from issuing its own (deferred) BEGINs.
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        try:
            # busy_timeout first, so that switching to WAL waits for a concurrent starter.
            cursor.execute(f"PRAGMA busy_timeout={_BUSY_TIMEOUT_MS}")
            # Switching a new file to WAL needs an exclusive lock that the busy handler does not
            # always wait for (two processes creating the file at once): retry briefly.
            for attempt in range(50):
                try:
                    cursor.execute("PRAGMA journal_mode=WAL")
                    break
                except Exception:
                    if attempt == 49:
                        raise
                    time.sleep(0.1)
            cursor.execute(f"PRAGMA synchronous={synchronous}")
            cursor.execute("PRAGMA foreign_keys=ON")
        finally:
            cursor.close()

    @event.listens_for(engine, "begin")
    def _on_begin(conn: Connection) -> None:
        mode = conn.get_execution_options().get(_SQLITE_BEGIN, "DEFERRED")
        conn.exec_driver_sql(f"BEGIN {mode}")


def migrate(engine_or_url: Engine | str | URL) -> None:
    """Bring the schema up to date (``alembic upgrade head``).

    Idempotent, and safe when several processes start at once: the upgrade runs in one
    transaction holding the write lock (``BEGIN IMMEDIATE`` on SQLite, an advisory lock on
    PostgreSQL), so the later process finds the schema current and does nothing.

    Args:
        engine_or_url: An engine from ``make_engine`` or a database URL (a temporary engine is
            created and disposed of).
    """
    if isinstance(engine_or_url, Engine):
        _upgrade(engine_or_url)
        return
    engine = make_engine(engine_or_url)
    try:
        _upgrade(engine)
    finally:
        engine.dispose()


def _alembic_config() -> Any:
    # Imported here: alembic costs 0.2 s at start-up and only migrations need it.
    from alembic.config import Config

    cfg = Config()
    # ConfigParser interpolates '%', which may appear in an install path.
    cfg.set_main_option("script_location", str(MIGRATIONS_DIR).replace("%", "%%"))
    cfg.set_main_option("path_separator", "os")
    return cfg


def _upgrade(engine: Engine) -> None:
    cfg = _alembic_config()
    with engine.connect() as conn:
        conn = conn.execution_options(**{_SQLITE_BEGIN: "IMMEDIATE"})
        with conn.begin():
            if conn.dialect.name == "postgresql":
                # Per schema, so that databases holding several Touchpoint schemas (tests)
                # do not wait for each other.
                conn.execute(
                    text("SELECT pg_advisory_xact_lock(hashtext(:prefix || current_schema()))"),
                    {"prefix": "touchpoint.migrate:"},
                )
            cfg.attributes["connection"] = conn
            from alembic import command

            command.upgrade(cfg, "head")


def session_factory(engine: Engine) -> sessionmaker[Session]:
    """A session factory for ``engine``; objects stay readable after commit.

    Use ``with factory.begin() as s:`` for reads and ordinary writes, and ``write_tx(factory)``
    for read-then-write transactions that must not interleave (ledger, frequency caps).
    """
    return sessionmaker(engine, expire_on_commit=False)


@contextmanager
def write_tx(factory: sessionmaker[Session]) -> Iterator[Session]:
    """Open a transaction that holds the write lock; commit on success, roll back on error.

    On SQLite this is ``BEGIN IMMEDIATE``: writers queue for the database's single write lock
    (up to the 30 s busy timeout), so reads inside the transaction stay valid until commit.
    Writers of the same process first queue on a lock of the engine: SQLite's busy handler
    polls with sleeps of up to 100 ms, which left the lock idle between writers when a worker
    ran 100 enrollments at once (bench/); threads blocked on a lock wake as soon as it is free.
    Other processes (the API, a second worker) still meet at the busy timeout. On
    PostgreSQL it is an ordinary READ COMMITTED transaction: callers lock the rows they depend
    on with ``SELECT ... FOR UPDATE`` (``with_for_update()``).

    Args:
        factory: A factory from ``session_factory``.

    Yields:
        The session, inside its transaction.
    """
    bind = factory.kw.get("bind")
    gate = _WRITE_GATES.get(bind) if isinstance(bind, Engine) else None
    hooks: list[Callable[[], None]] = []
    with gate or contextlib.nullcontext(), factory() as session:
        session.info[_ON_COMMIT] = hooks
        with session.begin():
            # Procuring the connection with the option makes the "begin" hook emit BEGIN IMMEDIATE.
            session.connection(execution_options={_SQLITE_BEGIN: "IMMEDIATE"})
            yield session
    for hook in hooks:
        with contextlib.suppress(Exception):
            hook()


def on_commit(session: Session, hook: Callable[[], None]) -> None:
    """Call ``hook`` once what ``session`` wrote is committed (never for a rolled-back write).

    Inside `write_tx` or a `GroupWriter` unit, after the real commit; in any other session, on
    its ``after_commit`` event.
    """
    hooks = session.info.get(_ON_COMMIT)
    if hooks is None:
        event.listen(session, "after_commit", lambda _: hook(), once=True)
    else:
        hooks.append(hook)


class _Merged:
    """One statement's deferred rows in a batch, merged by key."""

    def __init__(self, key: tuple[str, ...], add: str | None) -> None:
        self.key, self.add = key, add
        self.rows: dict[tuple[Any, ...], dict[str, Any]] = {}

    def extend(self, rows: Sequence[Mapping[str, Any]]) -> None:
        for row in rows:
            key = tuple(row[name] for name in self.key)
            kept = self.rows.get(key)
            if kept is None:
                self.rows[key] = dict(row)
            elif self.add is not None:
                kept[self.add] += row[self.add]


def defer(s: Session, statement: Insert, rows: Sequence[Mapping[str, Any]], *, key: Sequence[str], add: str | None = None) -> None:
    """Write ``rows`` with ``statement``, an ``INSERT ... ON CONFLICT`` whose outcome nobody reads
    in the transaction: now, or, in a `GroupWriter` batch, with the batch's other rows of the
    same statement just before its COMMIT.

    A batch's rows are merged by their ``key`` columns: ``add`` names a counter that an upsert
    adds (summed across rows), else the first row wins (an insert-or-nothing), which is what
    running them one by one would do. They are then written with one `executemany` per
    statement, built once: a multi-row ``VALUES`` is compiled anew for every batch, which took a
    fifth of the writer thread's CPU on the enrollment bench (bench/RESULTS.md, 2026-12-06).
    """
    if not rows:
        return
    deferred: dict[Insert, _Merged] | None = s.info.get(_DEFERRED)
    if deferred is None:
        s.execute(statement, list(rows))
        return
    merged = deferred.get(statement)
    if merged is None:
        merged = deferred[statement] = _Merged(tuple(key), add)
    merged.extend(rows)


def _write_deferred(conn: Connection, deferred: dict[Insert, _Merged]) -> None:
    for statement, merged in deferred.items():
        conn.execute(statement, list(merged.rows.values()))


def is_sqlite(factory: sessionmaker[Session]) -> bool:
    """Whether the factory's engine is a SQLite one (one writer at a time)."""
    bind = factory.kw.get("bind")
    return isinstance(bind, Engine) and bind in _WRITE_GATES


_Unit = tuple[Callable[[Session], Any], Future[Any], contextvars.Context]


class _Failed:
    """A unit's own exception, kept until its batch has committed or not."""

    def __init__(self, exc: BaseException) -> None:
        self.exc = exc


_Outcome = tuple[Future[Any], Any, list[Callable[[], None]]]


class GroupWriter:
    """One thread that runs a SQLite store's write units, several to a transaction (group commit).

    SQLite takes one writer at a time, so a worker's write transactions queue anyway; in their
    own transactions each pays BEGIN and COMMIT, a session, and a round of lock hand-offs between
    the threads waiting for the write lock. Here the units of a batch (functions of a `Session`,
    as `write_tx` runs) run one after another in one transaction, each on its own session, and
    commit together; each caller's future resolves only after that commit (nothing is reported
    done before it is durable). A failed COMMIT fails every unit of the batch. The batch holds the
    engine's write gate, so `write_tx` callers of the process (the API, other activities)
    interleave between batches. PostgreSQL takes concurrent writers and row locks: use
    `write_tx` there.

    A unit that raises is rolled back alone and its caller gets the exception: the batch's
    transaction is rolled back and its units run again, each in a SAVEPOINT (`_isolated`). Units
    are functions of the store alone, so running one again after a rollback is running it once
    (its `on_commit` hooks run once; a log line it writes may appear twice).
    Savepoints are not the first try because the driver lets go of the GIL around every
    statement and this thread waits to get it back each time: on the enrollment bench, the two
    SAVEPOINT statements of each unit were a fifth of this thread's statements.
    """

    MAX_BATCH = 64

    def __init__(self, factory: sessionmaker[Session]) -> None:
        bind = factory.kw.get("bind")
        if not isinstance(bind, Engine) or bind not in _WRITE_GATES:
            raise ValueError("GroupWriter is for a SQLite store's session factory")
        self.engine: Engine = bind
        self.options = {k: v for k, v in factory.kw.items() if k != "bind"}
        self.gate = _WRITE_GATES[bind]
        self.queue: queue.SimpleQueue[_Unit | None] = queue.SimpleQueue()
        self.thread: threading.Thread | None = None
        self.lock = threading.Lock()

    def submit(self, work: Callable[[Session], T]) -> Future[T]:
        """Queue ``work``; the future has its result once its batch has committed. ``work`` runs
        in the caller's context (`contextvars`: an activity's log fields and trace span)."""
        future: Future[T] = Future()
        with self.lock:
            if self.thread is None:
                self.thread = threading.Thread(target=self._run, name="touchpoint-store-writer", daemon=True)
                self.thread.start()
            self.queue.put((work, future, contextvars.copy_context()))
        return future

    def close(self) -> None:
        """Finish what is queued, then stop the thread."""
        with self.lock:
            thread, self.thread = self.thread, None
            if thread is not None:
                self.queue.put(None)
        if thread is not None:
            thread.join()

    def _run(self) -> None:
        while True:
            item = self.queue.get()
            if item is None:
                return
            batch = [item]
            stop = False
            while len(batch) < self.MAX_BATCH:
                try:
                    more = self.queue.get_nowait()
                except queue.Empty:
                    break
                if more is None:
                    stop = True
                    break
                batch.append(more)
            self._write(batch)
            if stop:
                return

    def _write(self, batch: list[_Unit]) -> None:
        units = [unit for unit in batch if unit[1].set_running_or_notify_cancel()]
        if not units:
            return
        try:
            with self.gate, self.engine.connect() as conn:
                conn.execution_options(**{_SQLITE_BEGIN: "IMMEDIATE"})
                outcome = self._together(conn, units)
                if outcome is None:
                    outcome = self._isolated(conn, units)
        except BaseException as exc:  # BEGIN or COMMIT failed: nothing of the batch is stored
            for _, future, _ in units:
                future.set_exception(exc)
            return
        for future, result, hooks in outcome:
            if isinstance(result, _Failed):
                future.set_exception(result.exc)
                continue
            for hook in hooks:
                with contextlib.suppress(Exception):  # a metric's hook never holds up a caller
                    hook()
            future.set_result(result)

    def _session(
        self, conn: Connection, mode: Literal["rollback_only", "create_savepoint"], hooks: list[Callable[[], None]], deferred: dict[Insert, _Merged] | None = None
    ) -> Session:
        session = Session(bind=conn, join_transaction_mode=mode, **self.options)
        session.info[_ON_COMMIT] = hooks
        if deferred is not None:
            session.info[_DEFERRED] = deferred
        return session

    def _together(self, conn: Connection, units: list[_Unit]) -> list[_Outcome] | None:
        """Every unit in the batch's transaction, no savepoint, their `defer`red rows written last.
        When one raises, all is rolled back: None, or that unit's failure when it is the batch's
        only unit (None too when the deferred rows fail: `_isolated` writes them unit by unit)."""
        outcome: list[_Outcome] = []
        deferred: dict[Insert, _Merged] = {}
        with conn.begin() as transaction:
            for work, future, context in units:
                hooks: list[Callable[[], None]] = []
                session = self._session(conn, "rollback_only", hooks, deferred)
                try:
                    with session.begin():
                        result = context.run(work, session)
                except Exception as exc:
                    if transaction.is_active:
                        transaction.rollback()
                    return [(future, _Failed(exc), [])] if len(units) == 1 else None
                finally:
                    session.close()
                outcome.append((future, result, hooks))
            try:
                _write_deferred(conn, deferred)
            except Exception:
                transaction.rollback()
                return None
        return outcome

    def _isolated(self, conn: Connection, units: list[_Unit]) -> list[_Outcome]:
        """Each unit in a SAVEPOINT of the batch's transaction: one that raises is rolled back alone."""
        outcome: list[_Outcome] = []
        with conn.begin():
            for work, future, context in units:
                hooks: list[Callable[[], None]] = []
                session = self._session(conn, "create_savepoint", hooks)
                try:
                    with session.begin():
                        outcome.append((future, context.run(work, session), hooks))
                except BaseException as exc:  # the unit's own failure: its caller's
                    outcome.append((future, _Failed(exc), []))
                finally:
                    session.close()
        return outcome

