"""Publishing a validated folder to the store as content-hashed versions.

A version is the hash of the validated playbook and every template file it may use, so an
unchanged file deploys as a no-op, and a run keeps rendering the templates it started with.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sqlalchemy.orm import Session

from touchpoint.deployed import REFRESH_SECONDS, stored_listening
from touchpoint.dsl.listening import engine_type
from touchpoint.dsl.schedule import schedule_cursor_name
from touchpoint.dsl.sweep_models import sweep_cursor_name
from touchpoint.dsl.validate import Project, template_closure
from touchpoint.store import repo, utcnow


@dataclass
class DeployReport:
    """What a deploy changed."""

    added: list[str] = field(default_factory=list)
    changed: list[str] = field(default_factory=list)
    unchanged: list[str] = field(default_factory=list)
    removed: list[str] = field(default_factory=list)
    in_flight_on_older: dict[str, int] = field(default_factory=dict)
    versions: dict[str, str] = field(default_factory=dict)
    schedules: list[str] = field(default_factory=list)
    """Temporal Schedules created, updated or removed (`touchpoint.schedules`)."""
    newly_listened: list[str] = field(default_factory=list)
    """Event types that were quiet and are listened to from this deploy on (contract section 9)."""
    every_type_listened: list[str] = field(default_factory=list)
    """When this deploy ends quiet events: the versions whose conditions read `event`."""

    def listening_lines(self) -> list[str]:
        """What the deploy changed about quiet events, and from when it holds."""
        when = f"in every API process within {REFRESH_SECONDS:g} s"
        if self.every_type_listened:
            return [f"listening every event type now ({', '.join(self.every_type_listened)} read `event`): no event is quiet {when}"]
        if self.newly_listened:
            return [f"listening {', '.join(self.newly_listened)}: no longer quiet, sent to account workflows {when}"]
        return []

    def lines(self) -> list[str]:
        """Human-readable lines for the CLI."""
        out = [f"added     {name} ({self.versions[name]})" for name in self.added]
        for name in self.changed:
            older = self.in_flight_on_older.get(name, 0)
            note = f"; {older} run{'s' if older != 1 else ''} in flight stay on older versions" if older else ""
            out.append(f"changed   {name} -> {self.versions[name]}{note}")
        out += [f"unchanged {name} ({self.versions[name]})" for name in self.unchanged]
        out += [f"removed   {name}" for name in self.removed]
        return out + self.listening_lines() + self.schedules

    def migrate_commands(self) -> list[str]:
        """The `touchpoint migrate` command for each changed playbook with runs on older versions."""
        return [f"touchpoint migrate {name}" for name in self.changed if self.in_flight_on_older.get(name, 0)]

    def as_dict(self) -> dict[str, Any]:
        """The report as JSON-ready data: one entry per playbook, in the order `lines` prints them."""
        playbooks: list[dict[str, Any]] = [{"playbook": n, "change": "added", "version": self.versions[n]} for n in self.added]
        playbooks += [
            {"playbook": n, "change": "changed", "version": self.versions[n], "runs_on_older_versions": self.in_flight_on_older.get(n, 0)}
            for n in self.changed
        ]
        playbooks += [{"playbook": n, "change": "unchanged", "version": self.versions[n]} for n in self.unchanged]
        playbooks += [{"playbook": n, "change": "removed", "version": None} for n in self.removed]
        listening = {"newly_listened": list(self.newly_listened), "every_type_listened": list(self.every_type_listened)}
        return {"playbooks": playbooks, "listening": listening, "schedules": list(self.schedules), "migrate": self.migrate_commands()}


def playbook_content(project: Project, playbook_id: str) -> dict[str, Any]:
    """What the store keeps for one playbook version: the model and its template files."""
    loaded = project.playbooks[playbook_id]
    return {
        "playbook": loaded.playbook.model_dump(mode="json"),
        "templates": template_closure(loaded.playbook, project.templates_dir),
        "file": loaded.file.name,
    }


def deploy_project(s: Session, project: Project, *, prune: bool = True) -> DeployReport:
    """Deploy every playbook of a validated project, plus its workspace and health model.

    Raises:
        ContractError: when the project has problems (nothing is deployed then).
    """
    project.raise_for_problems()
    report = DeployReport()
    heard = stored_listening(s)
    before = {d.name: d.version for d in repo.current_deployments(s, "playbook")}
    for playbook_id, loaded in sorted(project.playbooks.items()):
        version = loaded.version
        report.versions[playbook_id] = version
        changed = repo.deploy(s, "playbook", playbook_id, version, playbook_content(project, playbook_id), loaded.source)
        if playbook_id not in before:
            report.added.append(playbook_id)
            _restart_cursors(s, playbook_id)
        elif changed:
            report.changed.append(playbook_id)
            report.in_flight_on_older[playbook_id] = repo.count_runs_on_older_versions(s, playbook_id, version)
        else:
            report.unchanged.append(playbook_id)
    if prune:
        for playbook_id in sorted(set(before) - set(project.playbooks)):
            repo.undeploy(s, "playbook", playbook_id)
            report.removed.append(playbook_id)
    workspace = project.workspace.model_dump(mode="json")
    repo.deploy(s, "workspace", "workspace", _hash(workspace), workspace, project.workspace_source)
    if project.health is not None:
        health = project.health.model_dump(mode="json")
        repo.deploy(s, "health", "health", _hash(health), health, project.health_source)
    elif prune:
        repo.undeploy(s, "health", "health")
    now = stored_listening(s)
    if now.every and not heard.every:
        report.every_type_listened = list(now.because)
    elif not now.every:
        report.newly_listened = sorted(t for t in now.types - heard.types if not engine_type(t))
    return report


def _hash(content: Any) -> str:
    import hashlib
    import json

    return hashlib.sha256(json.dumps(content, sort_keys=True).encode()).hexdigest()[:12]


def _restart_cursors(s: Session, playbook_id: str) -> None:
    """A playbook deployed again after a removal starts its clocks at this deploy.

    Otherwise its date sweep would resume from before the removal (firing, retroactively, every
    moment that passed meanwhile) and its first tick would review the whole gap.
    """
    if repo.get_cursor(s, sweep_cursor_name(playbook_id)) is not None:
        repo.set_cursor(s, sweep_cursor_name(playbook_id), at=utcnow())
    repo.delete_cursor(s, schedule_cursor_name(playbook_id))


class StoreNotFound(Exception):
    """`touchpoint deploy` found no store where the settings point, and was not told to create one."""


def sqlite_file(url: str) -> Path | None:
    """The file of a SQLite database URL; None for other databases and in-memory SQLite."""
    from sqlalchemy.engine import make_url

    parsed = make_url(url)
    if parsed.get_backend_name() != "sqlite":
        return None
    database = parsed.database or ""
    if not database or database == ":memory:" or database.startswith("file:") or parsed.query.get("mode") == "memory":
        return None
    return Path(database)


def store_label(url: str) -> str:
    """The store's URL as it may be printed: the password hidden, a SQLite file as an absolute path."""
    from sqlalchemy.engine import make_url

    path = sqlite_file(url)
    if path is not None:
        return f"{path.resolve()} (SQLite)"
    return make_url(url).render_as_string(hide_password=True)


def check_store(url: str, *, create: bool) -> None:
    """Refuse to deploy into a SQLite file that does not exist unless ``create`` is set.

    A deploy from the wrong folder would otherwise create a fresh, empty store there, report
    every playbook as added, and still update the running server's Schedules. A database URL
    (PostgreSQL) is migrated as usual: its database exists, or the connection fails.

    Raises:
        StoreNotFound: saying where the store was looked for and how to point at the right one.
    """
    path = sqlite_file(url)
    if path is None or create or path.exists():
        return
    raise StoreNotFound(
        f"no Touchpoint store at {path.resolve()}. `touchpoint deploy` publishes to the store your "
        "worker and API read: run it from the folder where you run `touchpoint dev` (the store is "
        ".touchpoint/touchpoint.db there), or set TOUCHPOINT_DATABASE_URL (or TOUCHPOINT_HOME) to that "
        "store. To start a new, empty store here, run `touchpoint deploy --create`."
    )
