"""Deployed playbook, workspace and health versions.

Every function takes a ``Session`` and leaves the transaction to the caller; see `repo`.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, cast

from sqlalchemy import and_, bindparam, or_, select, text, update
from sqlalchemy.engine import CursorResult
from sqlalchemy.orm import Session

from .columns import jsonable
from .models import (
    Deployment,
    utcnow,
)

# --- deployments ---------------------------------------------------------------------------


def deploy(s: Session, kind: str, name: str, version: str, content: Mapping[str, Any], source: str) -> bool:
    """Make ``version`` the current deployment of (kind, name).

    Deploying an older version again makes it current again (a rollback).

    Args:
        s: The session; use ``write_tx`` so that two deploys do not interleave (on
            PostgreSQL an advisory lock on (kind, name) serialises them anyway).
        kind: ``playbook``, ``workspace`` or ``health``.
        name: The playbook id (or ``workspace`` / ``health``).
        version: The content hash.
        content: The validated model, dumped to JSON.
        source: The YAML text.

    Returns:
        False if that version already was the current one, else True.
    """
    if s.get_bind().dialect.name == "postgresql":
        # Two deploys of the same name must not both leave a current version; there may be
        # no row to lock yet, hence an advisory lock (released at the end of the transaction).
        s.execute(
            text("SELECT pg_advisory_xact_lock(hashtext(:key))"),
            {"key": f"touchpoint.deploy:{kind}/{name}"},
        )
    existing = s.get(Deployment, (kind, name, version))
    if existing is not None and existing.current:
        return False
    s.execute(
        update(Deployment)
        .where(Deployment.kind == kind, Deployment.name == name, Deployment.current.is_(True))
        .values(current=False)
        .execution_options(synchronize_session="fetch")
    )
    if existing is None:
        s.add(
            Deployment(
                kind=kind,
                name=name,
                version=version,
                content=jsonable(dict(content)),
                source=source,
                current=True,
            )
        )
    else:
        existing.current = True
        existing.deployed_at = utcnow()
    s.flush()
    return True


def current_deployments(s: Session, kind: str | None = None) -> list[Deployment]:
    """The current deployments, of one kind or all, ordered by kind and name."""
    query = select(Deployment).where(Deployment.current.is_(True)).order_by(Deployment.kind, Deployment.name)
    if kind is not None:
        query = query.where(Deployment.kind == kind)
    return list(s.scalars(query))


def deploy_generation(s: Session) -> str:
    """A short hash of every current deployment: it changes whenever anything is deployed."""
    import hashlib

    rows = s.execute(select(Deployment.kind, Deployment.name, Deployment.version).where(Deployment.current.is_(True))).all()
    lines = sorted(f"{kind}/{name}/{version}" for kind, name, version in rows)
    return hashlib.sha256("\n".join(lines).encode()).hexdigest()[:12]


def deployed_versions(s: Session, kind: str) -> list[tuple[str, str]]:
    """Every stored version of ``kind``, current or not, as (name, version), in order."""
    query = select(Deployment.name, Deployment.version).where(Deployment.kind == kind).order_by(Deployment.name, Deployment.version)
    return [(name, version) for name, version in s.execute(query).all()]


def get_deployment(s: Session, kind: str, name: str, version: str | None = None) -> Deployment | None:
    """A given version of (kind, name), or its current one when ``version`` is None."""
    if version is not None:
        return s.get(Deployment, (kind, name, version))
    return s.scalars(
        select(Deployment).where(Deployment.kind == kind, Deployment.name == name, Deployment.current.is_(True))
    ).first()


def current_version(s: Session, kind: str, name: str) -> str | None:
    """The current version of (kind, name), without reading its content."""
    return s.scalar(_CURRENT, {"kind": kind, "name": name})


def current_with_workspace(s: Session, playbook: str) -> tuple[str | None, str | None]:
    """The current versions of a playbook and of the workspace, in one read (every start needs both)."""
    found = {kind: version for kind, version in s.execute(_CURRENT_WITH_WORKSPACE, {"name": playbook})}
    return found.get("playbook"), found.get("workspace")


# Built once: a start reads these on every enrollment's path.
_CURRENT = select(Deployment.version).where(
    Deployment.kind == bindparam("kind"), Deployment.name == bindparam("name"), Deployment.current.is_(True)
)
_CURRENT_WITH_WORKSPACE = select(Deployment.kind, Deployment.version).where(
    Deployment.current.is_(True),
    or_(
        and_(Deployment.kind == "playbook", Deployment.name == bindparam("name")),
        and_(Deployment.kind == "workspace", Deployment.name == "workspace"),
    ),
)


def playbook_versions(s: Session, name: str) -> list[str]:
    """Every version of a playbook ever deployed, newest first."""
    query = select(Deployment.version).where(Deployment.kind == "playbook", Deployment.name == name)
    return list(s.scalars(query.order_by(Deployment.deployed_at.desc(), Deployment.version)))


def undeploy(s: Session, kind: str, name: str) -> bool:
    """Leave (kind, name) without a current version; False if it had none."""
    result = cast(
        CursorResult[Any],
        s.execute(
            update(Deployment)
            .where(Deployment.kind == kind, Deployment.name == name, Deployment.current.is_(True))
            .values(current=False)
            .execution_options(synchronize_session="fetch")
        ),
    )
    return result.rowcount > 0
