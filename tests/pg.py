"""The PostgreSQL server of the tests and drills: one URL, one place.

``TOUCHPOINT_TEST_POSTGRES_URL`` (a SQLAlchemy URL; default
``postgresql+psycopg://postgres@127.0.0.1:5432/test``) names the database. Every test gets a
schema of its own in it (``schema(...)``), dropped afterwards, so tests of several people can
share the database. ``python -m tests.pg create`` creates the database when it is missing
(`scripts/test` runs it).
"""

from __future__ import annotations

import contextlib
import os
import sys
import uuid
from collections.abc import Iterator
from urllib.parse import quote, urlsplit, urlunsplit

import psycopg

ENV = "TOUCHPOINT_TEST_POSTGRES_URL"
DEFAULT_URL = "postgresql+psycopg://postgres@127.0.0.1:5432/test"


def url() -> str:
    """The SQLAlchemy URL of the test database (``TOUCHPOINT_TEST_POSTGRES_URL``)."""
    return os.environ.get(ENV) or DEFAULT_URL


def dsn(database: str | None = None) -> str:
    """The libpq form of `url()` for psycopg, optionally naming another database."""
    parts = urlsplit(url())
    scheme = parts.scheme.split("+", 1)[0]
    path = f"/{database}" if database is not None else parts.path
    return urlunsplit((scheme if scheme != "postgres" else "postgresql", parts.netloc, path, parts.query, ""))


def database_name() -> str:
    """The database `url()` names."""
    return urlsplit(url()).path.lstrip("/") or "postgres"


def schema_url(schema: str) -> str:
    """A SQLAlchemy URL whose connections use ``schema`` (``search_path``)."""
    # The application name tags the schema's connections, so `schema` can end stragglers.
    options = "options=" + quote(f"-csearch_path={schema}", safe="") + f"&application_name={schema}"
    base = url()
    return f"{base}{'&' if '?' in base else '?'}{options}"


class PostgresUnreachable(RuntimeError):
    """The test database does not answer; the message says how to start or point at one."""


def check() -> None:
    """Raise `PostgresUnreachable` (with how to fix it) unless the test database answers."""
    try:
        psycopg.connect(dsn(), connect_timeout=3).close()
    except psycopg.OperationalError as exc:
        raise PostgresUnreachable(
            f"PostgreSQL is not reachable at {dsn()} ({str(exc).strip()}). Start it "
            "(`pg_ctlcluster --skip-systemctl-redirect $(ls /etc/postgresql) main start`; scripts/test does), "
            f"create the database (`python -m tests.pg create`), or point {ENV} at another one."
        ) from None


@contextlib.contextmanager
def schema(prefix: str = "tp_test") -> Iterator[str]:
    """A new, empty schema in the test database for the ``with`` block; dropped afterwards.

    Raises:
        PostgresUnreachable: with how to fix it.
    """
    check()
    name = f"{prefix}_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(dsn(), autocommit=True) as conn:
        conn.execute(f'CREATE SCHEMA "{name}"')
    try:
        yield name
    finally:
        with psycopg.connect(dsn(), autocommit=True) as conn:
            # A killed worker's backend can linger for a moment; end it rather than wait on its locks.
            conn.execute(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE application_name = %s", (name,)
            )
            conn.execute(f'DROP SCHEMA "{name}" CASCADE')


def create_database() -> bool:
    """Create the test database when missing; True when it was created."""
    name = database_name()
    with psycopg.connect(dsn("postgres"), autocommit=True, connect_timeout=5) as conn:
        if conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", (name,)).fetchone():
            return False
        conn.execute(f'CREATE DATABASE "{name}"')
    return True


if __name__ == "__main__":
    if sys.argv[1:] != ["create"]:
        sys.exit("usage: python -m tests.pg create   (creates the database of $TOUCHPOINT_TEST_POSTGRES_URL when missing)")
    try:
        created = create_database()
    except psycopg.OperationalError as exc:
        sys.exit(f"cannot reach PostgreSQL at {dsn('postgres')}: {str(exc).strip()}")
    print(f"{'created' if created else 'found'} database {database_name()!r}")
