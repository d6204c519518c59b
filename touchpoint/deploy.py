"""Publishing a validated folder to the store as content-hashed versions.

A version is the hash of the validated playbook and every template file it may use, so an
unchanged file deploys as a no-op, and a run keeps rendering the templates it started with.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from sqlalchemy.orm import Session

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

    def lines(self) -> list[str]:
        """Human-readable lines for the CLI."""
        out = [f"added     {name} ({self.versions[name]})" for name in self.added]
        for name in self.changed:
            older = self.in_flight_on_older.get(name, 0)
            note = f"; {older} run{'s' if older != 1 else ''} in flight stay on older versions" if older else ""
            out.append(f"changed   {name} -> {self.versions[name]}{note}")
        out += [f"unchanged {name} ({self.versions[name]})" for name in self.unchanged]
        out += [f"removed   {name}" for name in self.removed]
        return out + self.schedules


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
